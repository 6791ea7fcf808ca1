package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/telemetry/telemetrytest"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// process is the jetsaga binary running as a child process.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	lines  chan string
	exited chan struct{}
	err    error
}

// buildBinary builds cmd/jetsaga into dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "jetsaga")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs bin with args; it is killed if still running when the
// test ends.
func startProcess(t *testing.T, bin, name string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, cmd: exec.Command(bin, args...), lines: make(chan string, 1024), exited: make(chan struct{})}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // nothing from the test's environment
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLog waits for a line of its log that contains s.
func (p *process) waitLog(s string) {
	p.t.Helper()
	timeout := time.After(waitTotal)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, s) {
				return
			}
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, s, p.log())
		case <-timeout:
			p.t.Fatalf("%s did not log %q within %s:\n%s", p.name, s, waitTotal, p.log())
		}
	}
}

// terminate sends SIGTERM and checks that the process exits 0.
func (p *process) terminate() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(waitTotal):
		p.t.Fatalf("%s did not exit within %s of SIGTERM:\n%s", p.name, waitTotal, p.log())
	}
	if p.err != nil {
		p.t.Fatalf("%s exited with %v after SIGTERM:\n%s", p.name, p.err, p.log())
	}
}

// TestServicesAsProcesses: the coordinator and both banks run as real
// processes against NATS and PostgreSQL, carry transfers (one committed,
// one compensated), serve metrics, and exit 0 on SIGTERM.
func TestServicesAsProcesses(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	srv := testenv.NATS(t)
	dbA, dbB := testenv.PostgresURL(t), testenv.PostgresURL(t)
	metrics, metricsA := closedPort(t), closedPort(t)
	common := []string{"--nats-url", srv.URL(), "--log-format", "json"}

	coord := startProcess(t, bin, "coordinator", append([]string{"coordinator", "--workers", "8", "--metrics-addr", metrics}, common...)...)
	// The banks wait for the streams if they start first; here the
	// coordinator creates them.
	coord.waitLog(`"msg":"coordinator running"`)
	bankA := startProcess(t, bin, "bank-a", append([]string{"bank", "--participant", "bank-a", "--database-url", dbA, "--seed", "--metrics-addr", metricsA}, common...)...)
	bankB := startProcess(t, bin, "bank-b", append([]string{"bank", "--participant", "bank-b", "--database-url", dbB, "--seed"}, common...)...)
	bankA.waitLog(`"msg":"bank running"`)
	bankB.waitLog(`"msg":"bank running"`)

	r := cli(t, nil, transferJSON(alice, bob, 2500), "start", "--nats-url", srv.URL(), "--wait", "--json", "-f", "-")
	wantExit(t, r, exitOK)
	// An amount larger than Carol's balance: compensated, exit 3.
	r = cli(t, nil, transferJSON(carol, dave, 9_999_00), "start", "--nats-url", srv.URL(), "--wait", "-f", "-")
	wantExit(t, r, exitCompensated)
	if !strings.Contains(squeeze(r.stdout), "status compensated") {
		t.Fatalf("compensated transfer:\n%s", r)
	}

	poolA, poolB := pool(t, dbA), pool(t, dbB)
	for acc, want := range map[*pgxpool.Pool]struct {
		user  int64
		cents bank.Cents
	}{poolA: {alice.user, 1000_00 - 25_00}, poolB: {bob.user, 1000_00 + 25_00}} {
		got, err := bank.Balance(t.Context(), acc, want.user)
		if err != nil {
			t.Fatal(err)
		}
		if got != want.cents {
			t.Fatalf("balance of user %d: %s, want %s", want.user, got, want.cents)
		}
	}

	// Metrics, scraped over HTTP and read with Prometheus' parser. The
	// committed transfer: debit and credit; the compensated one: the
	// debit, which failed, so there is nothing to compensate. Counters
	// follow the writes, so a client can see a transfer done a moment
	// before they count it: scrape until they do.
	var f telemetrytest.Families
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var err error
		if f, err = telemetrytest.Scrape("http://" + metrics + "/metrics"); err != nil {
			return err
		}
		return f.Check([]telemetrytest.Want{
			{Name: "jetsaga_coordinator_commands_published_total", Labels: []string{"participant=bank-a", "op=do"}, Value: 2},
			{Name: "jetsaga_coordinator_commands_published_total", Labels: []string{"participant=bank-b", "op=do"}, Value: 1},
			{Name: "jetsaga_sagas_started_total", Labels: []string{"name=transfer"}, Value: 2},
			{Name: "jetsaga_sagas_finished_total", Labels: []string{"name=transfer", "status=committed"}, Value: 1},
			{Name: "jetsaga_sagas_finished_total", Labels: []string{"name=transfer", "status=compensated"}, Value: 1},
			{Name: "jetsaga_coordinator_messages_processed_total", Value: 5}, // 2 starts, 3 outcomes
		}...)
	})
	// bank-a's: its debit committed in the first transfer and failed in
	// the second (an amount larger than Carol's balance).
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		fa, err := telemetrytest.Scrape("http://" + metricsA + "/metrics")
		if err != nil {
			return err
		}
		return fa.Check([]telemetrytest.Want{
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{"participant=bank-a", "status=succeeded"}, Value: 1},
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{"participant=bank-a", "status=failed"}, Value: 1},
			{Name: "jetsaga_participant_step_duration_seconds", Labels: []string{"participant=bank-a", "action=TransOut", "op=do", "outcome=succeeded"}, Value: 1},
			{Name: "jetsaga_participant_step_duration_seconds", Labels: []string{"participant=bank-a", "action=TransOut", "op=do", "outcome=failed"}, Value: 1},
			{Name: "jetsaga_consumer_ack_pending_messages", Labels: []string{"consumer=saga_participant_bank-a"}, Value: 0},
		}...)
	})
	if _, ok := f.Value("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}
	if _, ok := f.Value("process_resident_memory_bytes"); !ok {
		t.Error("no process metrics")
	}

	for _, p := range []*process{bankA, bankB, coord} {
		p.terminate()
	}
	for _, p := range []*process{bankA, bankB} {
		if !strings.Contains(p.log(), `"msg":"bank stopped"`) {
			t.Fatalf("%s did not stop gracefully:\n%s", p.name, p.log())
		}
	}
	if !strings.Contains(coord.log(), `"msg":"coordinator stopped"`) {
		t.Fatalf("coordinator did not stop gracefully:\n%s", coord.log())
	}
}

func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestBankErrors: the bank service's bad configurations fail at once with
// one line.
func TestBankErrors(t *testing.T) {
	t.Parallel()
	dead := "nats://" + closedPort(t)
	wantOneLineError(t, cli(t, nil, "", "bank", "--nats-url", dead), exitUsage, "--participant must be bank-a or bank-b")
	wantOneLineError(t, cli(t, nil, "", "bank", "--participant", "bank-c", "--nats-url", dead), exitUsage, `got "bank-c"`)
	wantOneLineError(t, cli(t, nil, "", "bank", "--participant", "bank-a", "--nats-url", dead), exitUsage, "--database-url is required")
	pg := "postgres://bank:s3cret@" + closedPort(t) + "/bank_a"
	r := cli(t, nil, "", "bank", "--participant", "bank-a", "--nats-url", dead, "--database-url", pg)
	wantOneLineError(t, r, exitError, "cannot connect to PostgreSQL at postgres://bank:xxxxx@127.0.0.1:")
	if strings.Contains(r.stderr, "s3cret") {
		t.Fatalf("password shown: %s", r)
	}
	// PostgreSQL fine, NATS not.
	r = cli(t, nil, "", "bank", "--participant", "bank-a", "--nats-url", dead, "--database-url", testenv.PostgresURL(t))
	wantOneLineError(t, r, exitError, "cannot connect to NATS at "+dead)
}

// TestMigrate: migrate creates the participant's tables (and the bank's),
// is idempotent, and reports bad or unreachable databases.
func TestMigrate(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	first := cli(t, nil, "", "migrate", "--database-url", url, "--bank")
	wantExit(t, first, exitOK)
	second := cli(t, nil, "", "migrate", "--database-url", url, "--bank")
	wantExit(t, second, exitOK)
	if first.stdout != second.stdout {
		t.Fatalf("a second migrate printed something else:\n%s\n%s", first.stdout, second.stdout)
	}
	for _, want := range []string{"outbox table", "barrier table jetsaga_barrier at version", "bank tables migrated"} {
		if !strings.Contains(first.stdout, want) {
			t.Fatalf("migrate output lacks %q:\n%s", want, first)
		}
	}
	p := pool(t, url)
	for _, table := range []string{"jetsaga_barrier", "jetsaga_outbox", "accounts"} {
		var exists bool
		if err := p.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil || !exists {
			t.Fatalf("table %s: exists %v, err %v", table, exists, err)
		}
	}
	// The environment fallback.
	wantExit(t, cli(t, map[string]string{"DATABASE_URL": url}, "", "migrate"), exitOK)

	wantOneLineError(t, cli(t, nil, "", "migrate"), exitUsage, "--database-url is required", "DATABASE_URL")
	wantOneLineError(t, cli(t, nil, "", "migrate", "--database-url", "postgres://u:pw@host:notaport/db"), exitUsage, "--database-url", "xxxxx")
	dead := "postgres://u:pw@" + closedPort(t) + "/db"
	r := cli(t, nil, "", "migrate", "--database-url", dead, "--connect-timeout", "2s")
	wantOneLineError(t, r, exitError, "cannot connect to PostgreSQL at postgres://u:xxxxx@127.0.0.1:")
}
