package faulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/participants"
)

// Bounds of the pg-crash scenario.
const (
	// pgRestartTimeout bounds a crashed cluster's restart: crash recovery
	// (replaying the WAL since the last checkpoint) and the wait until it
	// accepts connections.
	pgRestartTimeout = time.Minute
	// recoverTimeout bounds the wait, after a restart, until the bank has
	// committed a step again.
	recoverTimeout = time.Minute
	// shortCrashes bounds the crashes of the short form: each stalls the
	// bank's steps (and its sagas' timeouts) for seconds.
	shortCrashes = 4
	// bankDB is the bank's database on its own cluster.
	bankDB = "bank"
)

// bankCluster is a PostgreSQL cluster of one bank's own (scenario
// pg-crash), which the scenario crashes (`pg_ctl stop -m immediate`: every
// backend killed at once, no checkpoint) and starts again on the same data
// directory and port, so that the bank's URL stays valid and the restart
// runs crash recovery. devenv.StartPostgres creates it and runs the first
// postmaster; later ones are started here, the same way (directly, as the
// postgres user when we are root, killed by the kernel if this process
// dies), from the command line the first one recorded in postmaster.opts.
type bankCluster struct {
	name string
	pg   *devenv.Postgres
	url  string
	data string              // data directory
	argv []string            // the postmaster's command line (postmaster.opts)
	cred *syscall.Credential // the postgres user when we are root
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd     // the postmaster started after the last crash; nil before one
	exited  chan struct{} // closed when cmd has exited
	crashes int
}

// newBankCluster starts a cluster for bank name with one database, and
// stops it (removing it) when t ends.
func newBankCluster(t *testing.T, ctx context.Context, name string) *bankCluster {
	t.Helper()
	pg, err := devenv.StartPostgres(devenv.PGOptions{})
	if err != nil {
		t.Fatalf("%s's own PostgreSQL cluster: %v", name, err)
	}
	c := &bankCluster{name: name, pg: pg, url: pg.URL(bankDB), log: pg.LogFile()}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Error(err)
		}
	})
	if err := pg.CreateDatabase(ctx, bankDB); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		t.Fatalf("%s's cluster: %v", name, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SHOW data_directory`).Scan(&c.data); err != nil {
		t.Fatalf("%s's cluster: data_directory: %v", name, err)
	}
	opts, err := os.ReadFile(filepath.Join(c.data, "postmaster.opts"))
	if err != nil {
		t.Fatalf("%s's cluster: %v", name, err)
	}
	if c.argv, err = parsePostmasterOpts(string(opts)); err != nil {
		t.Fatalf("%s's cluster: %v", name, err)
	}
	if os.Geteuid() == 0 {
		// As devenv does: PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("%s's cluster: running as root, and no postgres user: %v", name, err)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s's cluster: postgres user has uid %q, gid %q", name, u.Uid, u.Gid)
		}
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return c
}

// parsePostmasterOpts parses postmaster.opts: the postgres binary's path,
// then each argument in double quotes (PostgreSQL does not escape them;
// ours hold no quotes).
func parsePostmasterOpts(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	bin, rest, ok := strings.Cut(s, ` "`)
	if !ok || !strings.HasSuffix(rest, `"`) {
		return nil, fmt.Errorf("postmaster.opts: unexpected format: %q", s)
	}
	return append([]string{bin}, strings.Split(strings.TrimSuffix(rest, `"`), `" "`)...), nil
}

// command builds a command of the PostgreSQL installation run as the
// postgres user (when we are root) in the cluster's directory.
func (c *bankCluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(filepath.Dir(c.argv[0]), name), args...)
	cmd.Dir = c.pg.Dir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// crash stops the cluster as a crash would: `pg_ctl stop -m immediate`
// (SIGQUIT to the postmaster, which kills every backend at once and exits
// without a checkpoint), waiting until the postmaster is gone.
func (c *bankCluster) crash() error {
	out, err := c.command("pg_ctl", "stop", "-D", c.data, "-m", "immediate", "-w", "-t", "60").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s's cluster: pg_ctl stop -m immediate: %v: %s", c.name, err, out)
	}
	c.mu.Lock()
	exited := c.exited
	c.crashes++
	c.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-time.After(exitTimeout):
			return fmt.Errorf("%s's cluster: postmaster not reaped %s after pg_ctl stop", c.name, exitTimeout)
		}
	}
	return nil
}

// restart starts a postmaster on the crashed cluster (it runs crash
// recovery) and waits until it accepts connections.
func (c *bankCluster) restart() error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the postmaster has its own copy
	cmd := c.command(filepath.Base(c.argv[0]), c.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed by the kernel if the thread that forks it exits: that thread
	// waits for it (see devenv's package documentation).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("%s's cluster: start postgres: %w", c.name, err)
	}
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), pgRestartTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, c.url)
		ccancel()
		if err == nil {
			return conn.Close(context.Background())
		}
		select {
		case <-exited:
			return fmt.Errorf("%s's cluster: postgres exited during its restart (%v); see %s", c.name, cmd.ProcessState, c.log)
		case <-ctx.Done():
			return fmt.Errorf("%s's cluster: not accepting connections %s after its restart: %v", c.name, pgRestartTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop shuts down a postmaster started by restart (a fast shutdown), then
// lets devenv stop the cluster and remove its directory.
func (c *bankCluster) stop() error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	var err error
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
			err = fmt.Errorf("%s's cluster: postgres did not stop within a minute and was killed", c.name)
		}
	}
	return errors.Join(err, c.pg.Stop())
}

// barrierRows counts the rows of a bank's barrier table: a bank that
// commits steps adds rows.
func (s *system) barrierRows(ctx context.Context, name string) (int64, error) {
	pool := s.poolA
	if name == bank.BankB {
		pool = s.poolB
	}
	c, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var n int64
	err := pool.QueryRow(c, `SELECT count(*) FROM `+participants.DefaultBarrierTable).Scan(&n)
	return n, err
}

// crashPostgres crashes a bank's PostgreSQL cluster, bank-a's and bank-b's
// in turn, every 2-5s (at most shortCrashes times) in the short form, every
// 8-15s in the long one, and starts it again after 1-4s. While it is down
// the bank's steps fail and are retried (their commits may or may not have
// happened), its sagas' steps time out and are compensated, and the bank's
// pool reconnects. After each restart, while the load runs, it waits until
// the bank has committed a step again (the participant recovered).
func crashPostgres(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	lo, hi, limit := 2*time.Second, 5*time.Second, shortCrashes
	if soak() {
		lo, hi, limit = 8*time.Second, 15*time.Second, 0
	}
	for (limit == 0 || n < limit) && pause(ctx, rng, lo, hi) {
		c, name := s.pgA, bank.BankA
		if n%2 == 1 {
			c, name = s.pgB, bank.BankB
		}
		if err := c.crash(); err != nil {
			return n, err
		}
		n++
		time.Sleep(between(rng, time.Second, 4*time.Second))
		if err := c.restart(); err != nil {
			return n, err
		}
		if err := s.waitCommitted(ctx, name, n); err != nil {
			return n, err
		}
	}
	return n, nil
}

// waitCommitted waits, after the restart of bank name's cluster, until the
// bank has committed a step since (its barrier table grew), unless the load
// is over (ctx ended): then there may be nothing left to commit.
func (s *system) waitCommitted(ctx context.Context, name string, restart int) error {
	wait, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	before := int64(-1)
	for {
		// The test's pool may still hold connections of the crashed
		// server: an error here is retried.
		now, err := s.barrierRows(wait, name)
		switch {
		case err != nil:
		case before < 0:
			before = now
		case now > before:
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if wait.Err() != nil {
			return fmt.Errorf("%s committed no step within %s of its cluster's restart #%d (last error: %v)", name, recoverTimeout, restart, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verifyCrashesSeen checks that each crashed cluster's bank noticed (it
// logged warnings or errors: steps retried, connections lost), so that the
// crashes hit the banks' work rather than idle moments.
func verifyCrashesSeen(t *testing.T, s *system, _ []*started, _ *invariants.Report) {
	for _, c := range []*bankCluster{s.pgA, s.pgB} {
		c.mu.Lock()
		crashes := c.crashes
		c.mu.Unlock()
		p := s.bank(c.name)
		warnings := p.count("level=WARN") + p.count("level=ERROR")
		t.Logf("%s: crashes of its cluster: %d; warnings and errors it logged: %d", c.name, crashes, warnings)
		if crashes > 0 && warnings == 0 {
			t.Errorf("%s logged no warning or error: its cluster's %d crashes went unnoticed", c.name, crashes)
		}
	}
}
