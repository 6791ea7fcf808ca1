package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// pgStartTimeout bounds initdb plus the postmaster's start-up.
	pgStartTimeout = 2 * time.Minute
	// pgStopTimeout bounds a fast shutdown before the postmaster is killed.
	pgStopTimeout = time.Minute
	// pgDirPrefix names the temporary directories of StartPostgres, so that
	// a later start can find and remove those of dead processes.
	pgDirPrefix = "jetsaga-pg-"
	// ownerFile holds the pid of the process that created a directory.
	ownerFile = "owner.pid"
	// maxSocketPath is the longest unix socket path Linux accepts (108
	// bytes with the terminating NUL).
	maxSocketPath = 107
)

// FixPostgres tells a user how to get a PostgreSQL server for the tests,
// the demo and the benchmarks.
const FixPostgres = "install the PostgreSQL server binaries (e.g. `apt-get install postgresql`; " +
	"initdb and postgres are looked up on PATH and under /usr/lib/postgresql/*/bin) " +
	"or set DATABASE_URL to a postgres:// URL of a server where the user may create databases"

// ErrNoPostgres is returned (wrapped) by StartPostgres when no PostgreSQL
// server binaries can be found.
var ErrNoPostgres = errors.New("PostgreSQL server binaries not found")

// PGOptions configures StartPostgres. The zero value is valid.
type PGOptions struct {
	// Settings are extra server settings, passed as `-c name=value` after
	// (and so overriding) the defaults: listen_addresses=127.0.0.1, a free
	// port, unix_socket_directories=<the temporary directory>, fsync=on,
	// synchronous_commit=on, full_page_writes=on, max_connections=300 and
	// shared_buffers=128MB. Default nil.
	Settings map[string]string

	// BaseDir is where the temporary directory is created. Default "":
	// os.TempDir(), or /tmp if the postgres user cannot reach os.TempDir().
	BaseDir string

	// Logf, if set, receives progress lines. Default nil: silent. The
	// server's own log is in LogFile().
	Logf func(format string, args ...any)
}

var settingName = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

func (o PGOptions) validate() error {
	for k := range o.Settings {
		if !settingName.MatchString(k) {
			return fmt.Errorf("devenv: PGOptions.Settings: %q is not a PostgreSQL setting name", k)
		}
	}
	return nil
}

// Postgres is a PostgreSQL server used for throwaway databases: either a
// cluster started by StartPostgres, which Stop removes, or an existing
// server wrapped by ExternalPostgres.
type Postgres struct {
	// external server (ExternalPostgres)
	base *url.URL

	// local cluster (StartPostgres)
	dir     string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the postmaster has exited
	waitErr error         // the postmaster's exit; read after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// ExternalPostgres wraps the existing server at rawURL, a postgres:// URL
// such as DATABASE_URL. Its database (default "postgres") is used to create
// and drop databases; URL replaces it with the database asked for. Stop does
// nothing to the server.
func ExternalPostgres(rawURL string) (*Postgres, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("devenv: DATABASE_URL: not a URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("devenv: DATABASE_URL: scheme %q, want postgres:// (the key=value form is not supported)", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("devenv: DATABASE_URL: no host")
	}
	if _, err := pgx.ParseConfig(rawURL); err != nil {
		return nil, fmt.Errorf("devenv: DATABASE_URL: %w", err)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/postgres"
	}
	return &Postgres{base: u}, nil
}

// StartPostgres creates and starts a throwaway PostgreSQL cluster in a new
// temporary directory and waits until it accepts connections. The
// superuser is postgres with trust authentication on 127.0.0.1. Call Stop to
// shut it down and remove the directory; if this process dies first, the
// kernel kills the postmaster (see the package documentation).
func StartPostgres(opts PGOptions) (*Postgres, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	bins, err := findPostgres()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("devenv: running as root, and PostgreSQL refuses to run as root, but there is no postgres user to run it as (%v): create one (`useradd --system postgres`), or %s", err, FixPostgres)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("devenv: postgres user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base := opts.BaseDir
	if base == "" {
		base = os.TempDir()
		if cred != nil && !reachable(base) {
			base = "/tmp"
		}
	}
	removeStale(base, opts.Logf)

	dir, err := os.MkdirTemp(base, pgDirPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("devenv: create PostgreSQL directory: %w", err)
	}
	p := &Postgres{dir: dir}
	fail := func(err error) (*Postgres, error) {
		p.kill()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("devenv: %w", err))
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("devenv: give %s to the postgres user: %w", dir, err))
		}
		if !reachable(dir) {
			return fail(fmt.Errorf("devenv: the postgres user cannot reach %s: a parent directory lacks the x permission for others; set PGOptions.BaseDir", dir))
		}
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
	defer cancel()
	data := filepath.Join(dir, "data")
	logf("devenv: initdb %s (%s)", data, bins.initdb)
	// --no-sync only skips flushing the freshly created files; the running
	// server fsyncs everything it writes.
	initdb := p.command(bins.initdb, cred, "-D", data, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	var out bytes.Buffer
	initdb.Stdout, initdb.Stderr = &out, &out
	done, err := startLocked(initdb)
	if err != nil {
		return fail(fmt.Errorf("devenv: start initdb: %w", err))
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = initdb.Process.Kill()
		err = <-done
		err = fmt.Errorf("timed out after %s (%v)", pgStartTimeout, err)
	}
	if err != nil {
		return fail(fmt.Errorf("devenv: initdb failed: %v\n%s", err, out.String()))
	}

	// A free port may be taken between the probe and the postmaster's bind:
	// try a few.
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return fail(err)
		}
		p.port = ports[0]
		err = p.startServer(ctx, bins.postgres, cred, data, opts.Settings)
		if err == nil {
			break
		}
		p.kill()
		if attempt == 3 || !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "could not create any TCP/IP sockets") {
			return fail(err)
		}
		logf("devenv: port %d taken, retrying: %v", p.port, err)
	}
	logf("devenv: PostgreSQL %s running on 127.0.0.1:%d, pid %d", dir, p.port, p.Pid())
	return p, nil
}

// startServer starts the postmaster and waits until it accepts connections.
func (p *Postgres) startServer(ctx context.Context, bin string, cred *syscall.Credential, data string, extra map[string]string) error {
	settings := [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(p.port)},
		{"unix_socket_directories", p.dir},
		{"fsync", "on"},
		{"synchronous_commit", "on"},
		{"full_page_writes", "on"},
		{"max_connections", "300"},
		{"shared_buffers", "128MB"},
	}
	if len(filepath.Join(p.dir, ".s.PGSQL."+strconv.Itoa(p.port))) > maxSocketPath {
		settings[2][1] = "" // too long for a socket path: TCP only
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		settings = append(settings, [2]string{k, extra[k]})
	}
	args := []string{"-D", data}
	for _, s := range settings {
		args = append(args, "-c", s[0]+"="+s[1])
	}
	logPath := p.LogFile()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := p.command(bin, cred, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// SIGKILL the postmaster if the thread that forks it exits: startLocked
	// keeps that thread alive until the postmaster has exited, so in effect
	// the postmaster dies with this process.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done, err := startLocked(cmd)
	if err != nil {
		return fmt.Errorf("devenv: start postgres: %w", err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func() {
		p.waitErr = <-done
		close(p.exited)
	}()

	connURL := p.URL("postgres")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, connURL)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("devenv: postgres exited during start-up (%v); log %s:\n%s", p.waitErr, logPath, tail(logPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("devenv: postgres not accepting connections after %s (last error: %v); log %s:\n%s", pgStartTimeout, err, logPath, tail(logPath, 20))
		case <-tick.C:
		}
	}
}

// command builds a command run as cred (nil: as ourselves) in the
// PostgreSQL directory, with a clean locale and no PG* environment.
func (p *Postgres) command(bin string, cred *syscall.Credential, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = p.dir
	env := []string{"LC_ALL=C", "LANG=C"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

// startLocked starts cmd from a goroutine locked to its OS thread and waits
// for it there, so that the forking thread outlives the child (Linux sends a
// parent-death signal when that thread exits). The returned channel yields
// cmd.Wait's result. The goroutine never unlocks: when it returns the
// runtime retires the thread, after the child is gone.
func startLocked(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// URL returns a postgres:// URL for database dbname on this server.
func (p *Postgres) URL(dbname string) string {
	if p.base != nil {
		u := *p.base
		u.Path = "/" + dbname
		u.RawPath = ""
		return u.String()
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// adminURL is the database used to create and drop others.
func (p *Postgres) adminURL() string {
	if p.base != nil {
		return p.base.String()
	}
	return p.URL("postgres")
}

// External reports whether the server was not started by us.
func (p *Postgres) External() bool { return p.base != nil }

// Pid returns the postmaster's process id, or 0 for an external server.
func (p *Postgres) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Dir returns the cluster's temporary directory ("" for an external
// server).
func (p *Postgres) Dir() string { return p.dir }

// LogFile returns the path of the server's log ("" for an external server).
func (p *Postgres) LogFile() string {
	if p.dir == "" {
		return ""
	}
	return filepath.Join(p.dir, "postgres.log")
}

var dbName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func checkDBName(name string) error {
	if !dbName.MatchString(name) {
		return fmt.Errorf("devenv: database name %q: want 1 to 63 lower-case letters, digits and underscores, not starting with a digit", name)
	}
	return nil
}

// CreateDatabase creates database name, which must be a plain lower-case
// identifier.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	if err := checkDBName(name); err != nil {
		return err
	}
	// Concurrent CREATE DATABASE statements can trip over each other's use
	// of template1 (SQLSTATE 55006): retry those.
	for attempt := 1; ; attempt++ {
		err := p.admin(ctx, "CREATE DATABASE "+name)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 20 || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			if err != nil {
				return fmt.Errorf("devenv: create database %s: %w", name, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devenv: create database %s: %w", name, ctx.Err())
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

// DropDatabase drops database name if it exists, disconnecting its
// sessions (PostgreSQL 13 or later).
func (p *Postgres) DropDatabase(ctx context.Context, name string) error {
	if err := checkDBName(name); err != nil {
		return err
	}
	if err := p.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("devenv: drop database %s: %w", name, err)
	}
	return nil
}

func (p *Postgres) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.adminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts a cluster started by StartPostgres down (a fast shutdown:
// SIGINT, what `pg_ctl stop -m fast` sends; SIGKILL if it takes longer than
// a minute) and removes its directory. For an external server it does
// nothing. It is safe to call more than once.
func (p *Postgres) Stop() error {
	p.stopOnce.Do(func() {
		if p.base != nil {
			return
		}
		if p.cmd != nil {
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.exited:
				if p.waitErr != nil {
					p.stopErr = fmt.Errorf("devenv: postgres exited with %v; log:\n%s", p.waitErr, tail(p.LogFile(), 20))
				}
			case <-time.After(pgStopTimeout):
				p.kill()
				p.stopErr = fmt.Errorf("devenv: postgres did not stop within %s and was killed", pgStopTimeout)
			}
		}
		if err := os.RemoveAll(p.dir); err != nil && p.stopErr == nil {
			p.stopErr = fmt.Errorf("devenv: %w", err)
		}
	})
	return p.stopErr
}

// kill SIGKILLs a started postmaster and waits for it.
func (p *Postgres) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd = nil
}

// pgLibGlob is where Debian and Ubuntu install PostgreSQL's server
// binaries, one directory per major version.
var pgLibGlob = "/usr/lib/postgresql/*/bin"

type pgBinaries struct{ initdb, postgres string }

// findPostgres looks for initdb and postgres on PATH, then under
// /usr/lib/postgresql/<version>/bin, highest version first.
func findPostgres() (pgBinaries, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if pg := filepath.Join(filepath.Dir(initdb), "postgres"); executable(pg) {
			return pgBinaries{initdb, pg}, nil
		}
		if pg, err := exec.LookPath("postgres"); err == nil {
			return pgBinaries{initdb, pg}, nil
		}
	}
	dirs, _ := filepath.Glob(pgLibGlob)
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		b := pgBinaries{filepath.Join(d, "initdb"), filepath.Join(d, "postgres")}
		if executable(b.initdb) && executable(b.postgres) {
			return b, nil
		}
	}
	return pgBinaries{}, fmt.Errorf("devenv: %w on PATH or under /usr/lib/postgresql/*/bin: %s", ErrNoPostgres, FixPostgres)
}

// versionOf turns /usr/lib/postgresql/15/bin (or 9.6) into a sortable
// number.
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// reachable reports whether every parent of dir can be traversed by other
// users, as the postgres user must when we are root.
func reachable(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// removeStale removes the directories of clusters whose creating process
// is gone (killed before it could Stop), killing a postmaster that survived
// it.
func removeStale(base string, logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(base, pgDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being created
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner <= 0 || alive(owner) {
			continue
		}
		if pm := postmasterPid(dir); pm > 0 && alive(pm) {
			// Only kill it if it really is this directory's postmaster.
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pm))
			if bytes.Contains(cmdline, []byte(dir)) {
				_ = syscall.Kill(pm, syscall.SIGKILL)
			} else {
				continue
			}
		}
		if logf != nil {
			logf("devenv: removing %s left by dead process %d", dir, owner)
		}
		_ = os.RemoveAll(dir)
	}
}

func postmasterPid(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// alive reports whether process pid exists and is not a zombie (an exited
// process that its parent, possibly an init that does not reap, has not
// waited for).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses, the
	// state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
