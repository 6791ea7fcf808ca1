package faulttest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// exitTimeout bounds the wait for a killed process to be reaped.
const exitTimeout = 30 * time.Second

// buildBinary builds cmd/jetsaga, without the race detector, into dir.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "jetsaga")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/jetsaga/jetsaga/cmd/jetsaga")
	// The services run as they would in production: no -race, whatever
	// flags the test run has.
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/jetsaga: %v\n%s", err, out)
	}
	return bin
}

// proc is one service of the deployment (a coordinator or a bank), run as a
// child process of the jetsaga binary. Each start is a new process; its
// stderr is appended to one log file per service.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current process has been reaped
	waitErr  error
	expected bool // the current process is being stopped on purpose
	starts   int
	// unexpected records processes that exited without being told to.
	unexpected []string
}

func newProc(dir, bin, name string, args ...string) *proc {
	return &proc{name: name, bin: bin, args: args, logPath: filepath.Join(dir, name+".log")}
}

// start starts a new process of the service. The child is SIGKILLed if this
// test process dies (it is forked from a thread that lives as long as the
// child).
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("%s: already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(logf, "=== %s: start #%d at %s\n", p.name, p.starts, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // nothing from the test's environment
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		// Pdeathsig fires when the forking thread exits: keep it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== %s: exited at %s: %v\n", p.name, time.Now().Format("15:04:05.000"), err)
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		if !p.expected {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s (start #%d) exited on its own: %v", p.name, p.starts, err))
		}
		p.mu.Unlock()
		close(exited)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.exited, p.expected, p.waitErr = cmd, exited, false, nil
	return nil
}

// running reports whether the current process has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the current process.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s: not started", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	return nil
}

// kill SIGKILLs the current process and waits until it is reaped. Killing
// a process that has exited is a no-op.
func (p *proc) kill() error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.expected = true
	p.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(exitTimeout):
		return fmt.Errorf("%s (pid %d) not reaped %s after SIGKILL", p.name, cmd.Process.Pid, exitTimeout)
	}
}

// restart kills the current process (if any) and starts a new one.
func (p *proc) restart() error {
	if err := p.kill(); err != nil {
		return err
	}
	return p.start()
}

// surprises returns the exits that nobody asked for.
func (p *proc) surprises() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// log returns the whole log of the service.
func (p *proc) log() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(data)
}

// tail returns the last n lines of the service's log.
func (p *proc) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// count counts the lines of the service's log that contain every part.
func (p *proc) count(parts ...string) int {
	n := 0
	for _, line := range strings.Split(p.log(), "\n") {
		ok := true
		for _, s := range parts {
			ok = ok && strings.Contains(line, s)
		}
		if ok && line != "" {
			n++
		}
	}
	return n
}
