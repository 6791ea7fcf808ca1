package devenv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	wait = 30 * time.Second
	poll = 20 * time.Millisecond
)

// reachableTempDir returns a temporary directory the postgres user can
// reach (t.TempDir() is private to root), removed when the test ends.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "devenv-test-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// gone reports whether pid no longer runs (a zombie counts as gone).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may contain spaces, the state follows the
	// last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

func TestPostgresStartQueryStop(t *testing.T) {
	t.Parallel()
	pg, err := devenv.StartPostgres(devenv.PGOptions{
		BaseDir:  reachableTempDir(t),
		Settings: map[string]string{"application_name": "devenv_test", "work_mem": "8MB"},
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	pid, dir := pg.Pid(), pg.Dir()
	if pid <= 0 || gone(pid) {
		t.Fatalf("Pid() = %d, not a running process", pid)
	}
	if !strings.Contains(pg.URL("x"), "127.0.0.1") {
		t.Fatalf("URL %q does not point at 127.0.0.1", pg.URL("x"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := pg.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	conn, err := pgx.Connect(ctx, pg.URL("shop"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	want := map[string]string{
		"current_database()":                         "shop",
		"current_user":                               "postgres",
		"current_setting('fsync')":                   "on",
		"current_setting('synchronous_commit')":      "on",
		"current_setting('max_connections')":         "300",
		"current_setting('shared_buffers')":          "128MB",
		"current_setting('work_mem')":                "8MB",
		"current_setting('listen_addresses')":        "127.0.0.1",
		"current_setting('unix_socket_directories')": dir,
	}
	for expr, w := range want {
		var got string
		if err := conn.QueryRow(ctx, "SELECT "+expr+"::text").Scan(&got); err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if got != w {
			t.Errorf("%s = %q, want %q", expr, got, w)
		}
	}
	_ = conn.Close(ctx)
	if err := pg.DropDatabase(ctx, "shop"); err != nil {
		t.Fatalf("drop database: %v", err)
	}
	if err := pg.DropDatabase(ctx, "shop"); err != nil {
		t.Fatalf("drop a dropped database: %v", err)
	}

	if err := pg.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !gone(pid) {
		t.Fatalf("postmaster %d still runs after Stop", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory %s not removed by Stop: %v", dir, err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

func TestPostgresBadInput(t *testing.T) {
	t.Parallel()
	if _, err := devenv.StartPostgres(devenv.PGOptions{Settings: map[string]string{"fsync=off -c x": "1"}}); err == nil ||
		!strings.Contains(err.Error(), "PGOptions.Settings") {
		t.Errorf("bad setting name: err = %v, want one naming PGOptions.Settings", err)
	}
	for _, tc := range []struct{ url, want string }{
		{"mysql://localhost/db", "scheme"},
		{"host=localhost dbname=x", "scheme"},
		{"postgres:///db", "no host"},
		{"postgres://h:notaport/db", "DATABASE_URL"},
	} {
		if _, err := devenv.ExternalPostgres(tc.url); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ExternalPostgres(%q): err = %v, want one naming DATABASE_URL and %q", tc.url, err, tc.want)
		}
	}
	pg, err := devenv.ExternalPostgres("postgres://u:p@db.example:5433/admin?sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pg.URL("t_one"), "postgres://u:p@db.example:5433/t_one?sslmode=require"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	ctx := context.Background()
	for _, name := range []string{"", "Upper", "1abc", "a-b", "a;drop", strings.Repeat("a", 64)} {
		if err := pg.CreateDatabase(ctx, name); err == nil || !strings.Contains(err.Error(), "database name") {
			t.Errorf("CreateDatabase(%q): err = %v, want a database name error", name, err)
		}
	}
	if err := pg.Stop(); err != nil {
		t.Errorf("Stop of an external server: %v", err)
	}
}

// TestExternalPostgres drives a server through ExternalPostgres, as
// DATABASE_URL does: databases are created and dropped on it.
func TestExternalPostgres(t *testing.T) {
	t.Parallel()
	owner := testenv.PostgresURL(t) // a server we may create databases on
	ext, err := devenv.ExternalPostgres(owner)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	name := fmt.Sprintf("ext_%d", time.Now().UnixNano())
	if err := ext.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("create: %v", err)
	}
	conn, err := pgx.Connect(ctx, ext.URL(name))
	if err != nil {
		t.Fatalf("connect to the new database: %v", err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != name {
		t.Fatalf("current_database() = %q, %v; want %q", db, err, name)
	}
	// DropDatabase disconnects sessions still on it.
	if err := ext.DropDatabase(ctx, name); err != nil {
		t.Fatalf("drop: %v", err)
	}
	_ = conn.Close(ctx)
	admin, err := pgx.Connect(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 0 {
		t.Fatalf("database %s still listed (%d, %v) after DropDatabase", name, n, err)
	}
	if err := ext.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := admin.Ping(ctx); err != nil {
		t.Fatalf("Stop of an external server touched the server: %v", err)
	}
}

const helperEnv = "JETSAGA_DEVENV_HELPER_BASE"

// TestHelperPostgresChild is not a test: TestPostgresDiesWithParent runs
// the test binary with it to own a cluster and be killed.
func TestHelperPostgresChild(t *testing.T) {
	base := os.Getenv(helperEnv)
	if base == "" {
		return
	}
	pg, err := devenv.StartPostgres(devenv.PGOptions{BaseDir: base})
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("PID %d %s\n", pg.Pid(), pg.Dir())
	select {} // until killed
}

// TestPostgresDiesWithParent kills a process that started a cluster and
// checks that the postmaster and its children die with it, and that the next
// StartPostgres removes the directory left behind.
func TestPostgresDiesWithParent(t *testing.T) {
	t.Parallel()
	base := reachableTempDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPostgresChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+base)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read helper output: %v", err)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(line, "PID %d %s", &pid, &dir); err != nil {
		t.Fatalf("helper said %q", line)
	}
	// The postmaster's own children (checkpointer, walwriter, ...) must go
	// too: wait until they are all up.
	var kids []int
	testenv.CheckFor(t, wait, poll, func() error {
		if kids = childrenOf(pid); len(kids) < 3 {
			return fmt.Errorf("postmaster %d has %d children so far", pid, len(kids))
		}
		return nil
	})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	testenv.CheckFor(t, wait, poll, func() error {
		for _, p := range append([]int{pid}, kids...) {
			if !gone(p) {
				return fmt.Errorf("process %d (postmaster %d or its child) outlived its killed parent", p, pid)
			}
		}
		return nil
	})
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed helper's directory should still exist until the next start: %v", err)
	}

	pg, err := devenv.StartPostgres(devenv.PGOptions{BaseDir: base})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer pg.Stop()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale directory %s not removed by the next StartPostgres: %v", dir, err)
	}
	if _, err := os.Stat(pg.Dir()); err != nil {
		t.Fatalf("new cluster's directory: %v", err)
	}
}

func TestNATSRestartKeepsPortAndStore(t *testing.T) {
	t.Parallel()
	srv, err := devenv.StartNATS(devenv.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url, port, dir := srv.URL(), srv.Port(), srv.StoreDir()
	if port <= 0 || url != "nats://127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("URL %q, port %d", url, port)
	}
	first := srv.Server()
	srv.Shutdown()
	if srv.Running() || srv.Server() != nil {
		t.Fatal("still running after Shutdown")
	}
	if _, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		t.Fatal("connected to a shut-down server")
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	if srv.Server() == first || srv.URL() != url || srv.StoreDir() != dir {
		t.Fatalf("after Start: url %s store %s, was %s %s", srv.URL(), srv.StoreDir(), url, dir)
	}
	if cfg := srv.Server().JetStreamConfig(); cfg == nil || cfg.StoreDir != filepath.Join(dir, "jetstream") {
		t.Fatalf("JetStream store after restart: %+v, want %s", cfg, dir)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	nc.Close()

	srv.Close()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close did not remove the store it created: %v", err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	srv.Close() // twice is fine
}

func TestNATSKeepsGivenStoreDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "js")
	srv, err := devenv.StartNATS(devenv.NATSOptions{StoreDir: dir, ServerName: "given"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Name() != "given" || srv.Server().Name() != "given" {
		t.Fatalf("server name %q / %q, want given", srv.Name(), srv.Server().Name())
	}
	srv.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Close removed a store directory it was given: %v", err)
	}
}

func TestNATSBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts devenv.NATSOptions
		want string
	}{
		{devenv.NATSOptions{Port: -1}, "NATSOptions.Port"},
		{devenv.NATSOptions{Port: 70000}, "NATSOptions.Port"},
		{devenv.NATSOptions{ServerName: "a b"}, "NATSOptions.ServerName"},
		{devenv.NATSOptions{ClusterName: "a\tb"}, "NATSOptions.ClusterName"},
	} {
		if _, err := devenv.StartNATS(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StartNATS(%+v): err = %v, want one naming %s", tc.opts, err, tc.want)
		}
	}
	if _, err := devenv.StartCluster(0, devenv.NATSOptions{}); err == nil || !strings.Contains(err.Error(), "n must be") {
		t.Errorf("StartCluster(0): err = %v", err)
	}
}

func TestNATSPortInUse(t *testing.T) {
	t.Parallel()
	a, err := devenv.StartNATS(devenv.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = devenv.StartNATS(devenv.NATSOptions{Port: a.Port()})
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(a.Port())) {
		t.Fatalf("second server on port %d: err = %v, want an error naming the port", a.Port(), err)
	}
}

func TestClusterNodeLossAndReturn(t *testing.T) {
	t.Parallel()
	var logMu sync.Mutex
	var log strings.Builder
	c, err := devenv.StartCluster(3, devenv.NATSOptions{ClusterName: "dt", Logf: func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(&log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer func() {
		if t.Failed() {
			logMu.Lock()
			defer logMu.Unlock()
			t.Logf("cluster log:\n%s", log.String())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(c.URLs(), ",") + 1; got != 3 {
		t.Fatalf("URLs() = %q, want 3 URLs", c.URLs())
	}
	for i, s := range c.Servers {
		if want := "n" + strconv.Itoa(i+1); s.Name() != want {
			t.Fatalf("server %d named %q, want %q", i, s.Name(), want)
		}
		if !s.Server().JetStreamIsClustered() {
			t.Fatalf("%s: JetStream not clustered", s.Name())
		}
	}
	// Lose the meta leader; the others elect a new one.
	var leader *devenv.NATSServer
	for _, s := range c.Servers {
		if s.Server().JetStreamIsLeader() {
			leader = s
		}
	}
	if leader == nil {
		t.Fatal("WaitJetStreamReady returned without a meta leader")
	}
	leader.Shutdown()
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatalf("after losing the meta leader: %v", err)
	}
	if err := leader.Start(); err != nil {
		t.Fatalf("node back: %v", err)
	}
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatalf("after the node came back: %v", err)
	}
	if !leader.Server().JetStreamIsCurrent() {
		t.Fatalf("%s not current with the meta group", leader.Name())
	}
}
