// Package bench runs the bank-transfer saga end to end under load and
// reports throughput, latency, resource use per saga and the machine's own
// ceilings measured in the same run, then checks the invariants. It is the
// engine of `jetsaga bench`.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/bankstack"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// Options of a run. The zero value runs 2,000 sagas at concurrency 64 on an
// embedded NATS server (sync always) and a throwaway PostgreSQL cluster.
type Options struct {
	// Mode is ModeNative (default: Go participants) or ModeHTTP (HTTP
	// services with DTM's barrier behind the DTM-compatible gateway).
	Mode string
	// Sagas to complete. Default 2000; ignored when Duration is set.
	Sagas int
	// Duration runs the load for this long instead of a number of sagas.
	Duration time.Duration
	// Concurrency is the number of sagas in flight. Default 64.
	Concurrency int
	// Accounts per bank. Default 1000.
	Accounts int
	// FailShare is the share of transfers whose TransIn fails (abnormal
	// account); InsufficientShare the share whose TransOut fails
	// (insufficient balance). Defaults 0.1 and 0.1; negative means 0.
	FailShare, InsufficientShare float64
	// JSSync is the JetStream sync policy of the embedded server: "always"
	// (default, every write fsynced) or "default" (fsync every 2 minutes).
	// With NATSURL it only labels the report: the server's own setting
	// applies.
	JSSync string
	// Replicas of the streams and bucket. Default 1.
	Replicas int
	// MaxAge of the streams' messages (and, a little longer, of finished
	// sagas' states). Default events.DefaultMaxAge. A run longer than it
	// shows memory with expiry at work; its invariant check then checks
	// the expired sagas against the status Wait saw and their barrier rows.
	MaxAge time.Duration
	// NATSURL uses an existing NATS server instead of an embedded one.
	NATSURL string
	// NATSOptions are extra options for the connections to NATSURL.
	NATSOptions []nats.Option
	// DatabaseURL uses an existing PostgreSQL server (its databases
	// jetsaga_bench_a and jetsaga_bench_b are dropped and created) instead
	// of a throwaway cluster.
	DatabaseURL string
	// Coordinators is the number of coordinator instances (each with its
	// own connection). Default 1.
	Coordinators int
	// Workers per coordinator. Default 64.
	Workers int
	// StepTimeout is the coordinators' default step timeout
	// (orchestrator.Config.StepTimeout). Default one minute; negative:
	// none. A timer costs a write only when it falls due, so this matters
	// for runs with slow or silent participants.
	StepTimeout time.Duration
	// AtomicBatchMin turns on group commit in the coordinators and the
	// banks (orchestrator.Config.AtomicBatchMin). Default 0: off.
	AtomicBatchMin int
	// ParticipantConcurrency is each bank's handler concurrency. Default 32.
	ParticipantConcurrency int
	// CeilingDuration is how long each ceiling is measured. Default 3s;
	// negative skips the ceilings.
	CeilingDuration time.Duration
	// FsyncLog, if set, is an strace log of this process's fsync calls
	// with file names (`strace -f -y -e trace=fsync -o FsyncLog`, which
	// `jetsaga bench --count-fsyncs` runs it under): the run counts the
	// fsyncs of the embedded server's JetStream store during the load
	// (Report.JSFsyncsPerSaga). Ignored with NATSURL.
	FsyncLog string
	// LoadDone, if set, is called when the load ends, before the run reads
	// back the hop breakdown and checks the invariants (to end profiles
	// there).
	LoadDone func()
	// Stop, when closed, ends the run early: no new saga is started, those
	// in flight finish, and the run reports on the sagas it completed
	// (Report.Interrupted), invariants checked. Cancelling the context
	// instead abandons the run. Default nil: never.
	Stop <-chan struct{}
	// Progress receives a progress line per second; nil for none.
	Progress io.Writer
	// Logger receives the components' logs. Default: discarded.
	Logger *slog.Logger
	// Registerer, if set, receives the Prometheus metrics of the first
	// coordinator and of both banks (to measure what metrics cost).
	// Default nil: no metrics.
	Registerer prometheus.Registerer
}

func (o *Options) defaults() error {
	switch o.Mode {
	case "":
		o.Mode = ModeNative
	case ModeNative, ModeHTTP:
	default:
		return fmt.Errorf("mode: %q, want %s or %s", o.Mode, ModeNative, ModeHTTP)
	}
	if o.Sagas <= 0 {
		o.Sagas = 2000
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Accounts <= 0 {
		o.Accounts = 1000
	}
	if o.Accounts < 10 {
		return fmt.Errorf("accounts: is %d, need at least 10", o.Accounts)
	}
	if o.FailShare == 0 {
		o.FailShare = 0.1
	}
	if o.InsufficientShare == 0 {
		o.InsufficientShare = 0.1
	}
	o.FailShare, o.InsufficientShare = max(o.FailShare, 0), max(o.InsufficientShare, 0)
	if o.FailShare+o.InsufficientShare > 1 {
		return fmt.Errorf("failure mix: fail share %.2f + insufficient share %.2f exceeds 1", o.FailShare, o.InsufficientShare)
	}
	switch o.JSSync {
	case "":
		o.JSSync = "always"
	case "always", "default":
	default:
		return fmt.Errorf("js-sync: %q, want always or default", o.JSSync)
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge < 0 {
		return fmt.Errorf("max-age: is %s, want a positive duration (or 0 for the default)", o.MaxAge)
	}
	if o.Coordinators <= 0 {
		o.Coordinators = 1
	}
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.ParticipantConcurrency <= 0 {
		o.ParticipantConcurrency = 32
	}
	if o.CeilingDuration == 0 {
		o.CeilingDuration = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Report is the result of a run. Its JSON form is `jetsaga bench --json`.
type Report struct {
	Settings Settings `json:"settings"`
	Machine  Machine  `json:"machine"`

	Sagas          int     `json:"sagas"` // completed: committed + compensated
	Committed      int     `json:"committed"`
	Compensated    int     `json:"compensated"`
	Parked         int     `json:"parked"`
	Errors         int     `json:"errors"`
	Seconds        float64 `json:"seconds"`
	SagasPerSecond float64 `json:"sagas_per_second"`
	P50ms          float64 `json:"p50_ms"`
	P90ms          float64 `json:"p90_ms"`
	P99ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`

	// PGCommitsPerSaga counts the step transactions the banks committed:
	// the barrier rows they inserted (each committed step transaction
	// inserts exactly one; a duplicate delivery inserts none and writes
	// nothing).
	PGCommitsPerSaga float64 `json:"pg_commits_per_saga"`
	// PGXidsPerSaga counts transaction ids used, server-wide: write
	// transactions and savepoints that wrote (a step's handler runs in one).
	PGXidsPerSaga      float64 `json:"pg_xids_per_saga"`
	JSPublishesPerSaga float64 `json:"js_publishes_per_saga"`
	// JSFsyncsPerSaga is the embedded JetStream store's fsyncs during the
	// load per saga, counted from Options.FsyncLog; 0 when not counted.
	JSFsyncsPerSaga float64 `json:"js_fsyncs_per_saga,omitempty"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUmsPerSaga    float64 `json:"cpu_ms_per_saga"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	RSSStartBytes   int64   `json:"rss_start_bytes"`
	RSSEndBytes     int64   `json:"rss_end_bytes"`

	PGCeilingTPS        float64 `json:"pg_ceiling_tps"`
	JSCeilingPPS        float64 `json:"js_ceiling_pps"`
	FractionOfPGCeiling float64 `json:"fraction_of_pg_ceiling"`
	FractionOfJSCeiling float64 `json:"fraction_of_js_ceiling"`
	// JSBoundSagasPerSecond is the JetStream ceiling divided by the
	// JetStream writes per saga: the sagas/s that the writes alone would
	// allow if JetStream did nothing else and nothing else ran.
	JSBoundSagasPerSecond float64 `json:"js_bound_sagas_per_second"`

	// Hops is where a committed saga's time goes: medians over a sample.
	Hops []Hop `json:"hops,omitempty"`

	InvariantsOK    bool     `json:"invariants_ok"`
	InvariantErrors []string `json:"invariant_errors,omitempty"`

	// Interrupted: Options.Stop ended the run early; the figures cover the
	// sagas completed until then.
	Interrupted bool `json:"interrupted,omitempty"`
}

// stopped reports whether stop is closed.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// Settings are the options a run used.
type Settings struct {
	Mode              string  `json:"mode"`
	Sagas             int     `json:"sagas,omitempty"`
	DurationSeconds   float64 `json:"duration_seconds,omitempty"`
	Concurrency       int     `json:"concurrency"`
	Accounts          int     `json:"accounts"`
	FailShare         float64 `json:"fail_share"`
	InsufficientShare float64 `json:"insufficient_share"`
	JSSync            string  `json:"js_sync"`
	Replicas          int     `json:"replicas"`
	MaxAgeSeconds     float64 `json:"max_age_seconds"`
	Coordinators      int     `json:"coordinators"`
	Workers           int     `json:"workers"`
	AtomicBatchMin    int     `json:"atomic_batch_min,omitempty"`
	NATS              string  `json:"nats"`
	PostgreSQL        string  `json:"postgresql"`
	SynchronousCommit string  `json:"synchronous_commit"`
	Fsync             string  `json:"fsync"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	CPUModel  string `json:"cpu_model,omitempty"`
	// GOMAXPROCS of the process during the run.
	GOMAXPROCS int `json:"gomaxprocs"`
}

// transfer is one saga of the load and how it ended.
type transfer struct {
	id       string
	from, to int64
	amount   bank.Cents
	status   orchestrator.Status
	unacked  bool      // Start failed: the saga may not exist
	begin    time.Time // when Start was called
	latency  time.Duration
	err      error
}

// initialBalance of every account in both banks.
const initialBalance = bank.Cents(1_000_000_00)

// env is the infrastructure of a run: the bank example's deployment
// (bankstack), and what the run adds to it.
type env struct {
	*bankstack.Stack
	o            *Options
	poolA, poolB *pgxpool.Pool // Stack.Pools of the two banks
	closers      []func()      // run before the stack closes
	report       *Report
	http         *httpMode // ModeHTTP only
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	if e.Stack != nil {
		_ = e.Stack.Close()
	}
}

// jsStore is the embedded server's store directory ("" with NATSURL).
func (e *env) jsStore() string {
	if e.NATS == nil {
		return ""
	}
	return e.NATS.StoreDir()
}

// Run performs one benchmark run. It returns an error if the run could not
// be carried out; a run whose invariants fail returns a report with
// InvariantsOK false (and no error).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &Report{Machine: machine(), Settings: Settings{Mode: o.Mode, Concurrency: o.Concurrency, Accounts: o.Accounts,
		FailShare: o.FailShare, InsufficientShare: o.InsufficientShare, JSSync: o.JSSync, Replicas: o.Replicas,
		MaxAgeSeconds: o.MaxAge.Seconds(),
		Coordinators:  o.Coordinators, Workers: o.Workers, AtomicBatchMin: o.AtomicBatchMin}}
	if o.Duration > 0 {
		r.Settings.DurationSeconds = o.Duration.Seconds()
	} else {
		r.Settings.Sagas = o.Sagas
	}
	e := &env{o: &o, report: r}
	defer e.close()
	if err := e.setup(ctx); err != nil {
		return nil, err
	}
	if o.CeilingDuration > 0 && !stopped(o.Stop) {
		e.progress("measuring ceilings (%s each)…", o.CeilingDuration)
		var err error
		if r.PGCeilingTPS, err = e.pgCeiling(ctx); err != nil {
			return nil, fmt.Errorf("PostgreSQL ceiling: %w", err)
		}
		if r.JSCeilingPPS, err = e.jsCeiling(ctx); err != nil {
			return nil, fmt.Errorf("JetStream ceiling: %w", err)
		}
		e.progress("ceilings: PostgreSQL %.0f single-row UPDATE tx/s, JetStream %.0f sync publishes/s (concurrency %d)",
			r.PGCeilingTPS, r.JSCeilingPPS, o.Concurrency)
	}
	if err := e.load(ctx); err != nil {
		return nil, err
	}
	if r.PGCeilingTPS > 0 {
		r.FractionOfPGCeiling = r.SagasPerSecond / r.PGCeilingTPS
	}
	if r.JSCeilingPPS > 0 {
		r.FractionOfJSCeiling = r.SagasPerSecond / r.JSCeilingPPS
		if r.JSPublishesPerSaga > 0 {
			r.JSBoundSagasPerSecond = r.JSCeilingPPS / r.JSPublishesPerSaga
		}
	}
	return r, nil
}

func (e *env) progress(format string, args ...any) {
	if e.o.Progress != nil {
		fmt.Fprintf(e.o.Progress, format+"\n", args...)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *env) setup(ctx context.Context) error {
	o, r := e.o, e.report
	// A fresh namespace per run, so that a run against a shared server
	// starts from empty streams; removed at the end.
	ns, _ := events.NewNamespace("bench" + randomHex(4))
	sopts := events.StreamOptions{Replicas: o.Replicas, MaxAge: o.MaxAge}
	if o.MaxAge > 0 {
		sopts.Duplicates = min(events.DefaultDuplicates, o.MaxAge)
	}
	accounts := make(map[int64]bank.Cents, o.Accounts)
	for id := 1; id <= o.Accounts; id++ {
		accounts[int64(id)] = initialBalance
	}
	st, err := bankstack.Start(ctx, bankstack.Config{NATSURL: o.NATSURL, SyncAlways: o.JSSync == "always",
		NATSOptions: o.NATSOptions, DatabaseURL: o.DatabaseURL, Databases: bankstack.RecreateDatabases,
		DatabaseNames: map[string]string{bank.BankA: "jetsaga_bench_a", bank.BankB: "jetsaga_bench_b"},
		PoolSize:      int32(o.Concurrency + o.ParticipantConcurrency + 8),
		Seed: func(ctx context.Context, _ string, pool *pgxpool.Pool) error {
			return bank.Seed(ctx, pool, accounts)
		},
		Namespace: ns, Streams: sopts})
	if err != nil {
		return err
	}
	e.Stack, e.poolA, e.poolB = st, st.Pools[bank.BankA], st.Pools[bank.BankB]
	e.closers = append(e.closers, func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.JS.DeleteStream(c, e.NS.SagasStream())
		_ = e.JS.DeleteStream(c, e.NS.CommandsStream())
		_ = e.JS.DeleteKeyValue(c, e.NS.StateBucket())
	})
	if o.NATSURL == "" {
		r.Settings.NATS = "embedded, JetStream file storage, sync " + o.JSSync
	} else {
		r.Settings.NATS = o.NATSURL + " (sync policy as configured on the server)"
		r.Settings.JSSync = "server-configured"
	}
	r.Settings.PostgreSQL = "throwaway local cluster"
	if e.PG.External() {
		r.Settings.PostgreSQL = "external"
	}
	// The ceiling's database, apart from the banks'.
	_ = e.PG.DropDatabase(ctx, ceilingDB)
	if err := e.PG.CreateDatabase(ctx, ceilingDB); err != nil {
		return err
	}
	if e.PG.External() {
		e.closers = append(e.closers, func() { _ = e.PG.DropDatabase(context.Background(), ceilingDB) })
	}
	if err := e.poolA.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).
		Scan(&r.Settings.SynchronousCommit, &r.Settings.Fsync); err != nil {
		return err
	}
	for id := 1; id <= e.abnormalAccounts(); id++ {
		if err := bank.SetAbnormal(ctx, e.poolB, int64(id), true); err != nil {
			return err
		}
	}
	if o.Mode == ModeHTTP {
		return e.migrateHTTP(ctx)
	}
	return nil
}

// abnormalAccounts is the number of bank-b accounts (1..n) whose TransIn
// fails; the others are normal.
func (e *env) abnormalAccounts() int { return max(1, e.o.Accounts/10) }

// pgCeiling measures single-row UPDATE transactions per second with a pool
// at the run's concurrency, on the same server, in a database of its own so
// that its commits are not counted as the sagas'.
func (e *env) pgCeiling(ctx context.Context) (float64, error) {
	n := e.o.Concurrency
	pool, err := e.OpenPool(ctx, ceilingDB, int32(n))
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_ceiling (id int PRIMARY KEY, n bigint NOT NULL)`); err != nil {
		return 0, err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO bench_ceiling SELECT g, 0 FROM generate_series(1, $1) g`, n); err != nil {
		return 0, err
	}
	return measure(ctx, n, e.o.CeilingDuration, func(ctx context.Context, worker int) error {
		_, err := pool.Exec(ctx, `UPDATE bench_ceiling SET n = n + 1 WHERE id = $1`, worker+1)
		return err
	})
}

// ceilingDB is the database of the PostgreSQL ceiling.
const ceilingDB = "jetsaga_bench_ceiling"

// jsCeiling measures synchronous JetStream publishes per second at the
// run's concurrency, to a file stream with the run's replicas on the same
// server (and so the same sync policy).
func (e *env) jsCeiling(ctx context.Context) (float64, error) {
	name := strings.ToUpper(e.NS.Prefix()) + "_CEILING"
	subj := e.NS.Prefix() + ".ceiling"
	if _, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj},
		Storage: jetstream.FileStorage, Replicas: e.o.Replicas}); err != nil {
		return 0, err
	}
	defer e.JS.DeleteStream(context.WithoutCancel(ctx), name)
	data := make([]byte, 256)
	return measure(ctx, e.o.Concurrency, e.o.CeilingDuration, func(ctx context.Context, _ int) error {
		_, err := e.JS.Publish(ctx, subj, data)
		return err
	})
}

// measure runs f from n goroutines for d and returns calls per second.
func measure(ctx context.Context, n int, d time.Duration, f func(context.Context, int) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := f(ctx, w); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				count.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// counters are the resource figures read before and after the load.
type counters struct {
	pgCommits  int64
	pgXids     int64
	jsMessages uint64
	jsFsyncs   int64 // -1: not counted
	cpu        time.Duration
}

func (e *env) counters(ctx context.Context) (counters, error) {
	var c counters
	// Transaction ids are taken cluster-wide and at once, by write
	// transactions and by savepoints that write (pg_stat_database's commit
	// counters lag by up to 10 s): the difference counts the run's (on a
	// shared server, everyone's). The barrier rows count the banks' step
	// transactions exactly.
	err := e.poolA.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&c.pgXids)
	if err != nil {
		return c, err
	}
	for _, pool := range []*pgxpool.Pool{e.poolA, e.poolB} {
		var n int64
		var err error
		if e.o.Mode == ModeHTTP {
			n, err = httpStepTx(ctx, pool)
		} else {
			err = pool.QueryRow(ctx, `SELECT count(*) FROM `+participants.DefaultBarrierTable).Scan(&n)
		}
		if err != nil {
			return c, err
		}
		c.pgCommits += n
	}
	for _, name := range []string{e.NS.SagasStream(), e.NS.CommandsStream(), events.BucketStream(e.NS.StateBucket())} {
		s, err := e.JS.Stream(ctx, name)
		if err != nil {
			return c, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return c, err
		}
		c.jsMessages += info.State.LastSeq
	}
	c.cpu = processCPU()
	if c.jsFsyncs, err = countFsyncs(e.o.FsyncLog, e.jsStore()); err != nil {
		return c, err
	}
	return c, nil
}

// countFsyncs counts the fsync calls on files under dir that the strace log
// at path holds so far (-1 if either is ""). strace -y names each call's
// file: `1234 fsync(7</tmp/…/jetstream/…/1.blk>) = 0`, or with
// `<unfinished ...>` when another thread's call came in between (its
// `<... fsync resumed>` line is not counted again).
func countFsyncs(path, dir string) (int64, error) {
	if path == "" || dir == "" {
		return -1, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("fsync log: %w", err)
	}
	defer f.Close()
	var n int64
	want := []byte("<" + dir)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if i := bytes.Index(line, []byte("fsync(")); i >= 0 && bytes.Contains(line[i:], want) {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("fsync log: %w", err)
	}
	return n, nil
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func peakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // kilobytes on Linux
}

func currentRSS() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, rss int64
	fmt.Sscan(string(data), &size, &rss)
	return rss * int64(os.Getpagesize())
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// percentile of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

var errStop = errors.New("stop")

// load runs the coordinators, the two banks and the saga load, then checks
// the invariants.
func (e *env) load(ctx context.Context) error {
	o, r := e.o, e.report
	runCtx, stopAll := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bgErr := make(chan error, 16)
	spawn := func(name string, f func(context.Context) error) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				bgErr <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	defer func() { stopAll(); bg.Wait() }()
	for i := 0; i < o.Coordinators; i++ {
		_, js, err := e.Connect()
		if err != nil {
			return err
		}
		cc := orchestrator.Config{JetStream: js, Namespace: e.NS, SkipEnsureStreams: true,
			Workers: o.Workers, StepTimeout: o.StepTimeout, AtomicBatchMin: o.AtomicBatchMin, Logger: o.Logger}
		if i == 0 {
			cc.Registerer = o.Registerer
		}
		c, err := orchestrator.NewCoordinator(cc)
		if err != nil {
			return err
		}
		spawn(fmt.Sprintf("coordinator %d", i+1), c.Run)
	}
	var metrics *participants.Metrics
	if o.Registerer != nil {
		m, err := participants.NewMetrics(o.Registerer)
		if err != nil {
			return err
		}
		metrics = m
	}
	banks := []struct {
		name string
		pool *pgxpool.Pool
	}{{bank.BankA, e.poolA}, {bank.BankB, e.poolB}}
	if o.Mode == ModeHTTP {
		h, err := e.startHTTP(spawn)
		if err != nil {
			return err
		}
		e.http, banks = h, nil
	}
	for _, b := range banks {
		// Each component has its own connection, as separate processes
		// would.
		_, js, err := e.Connect()
		if err != nil {
			return err
		}
		p, err := participants.New(participants.Config{Name: b.name, Pool: b.pool, JetStream: js, Namespace: e.NS,
			Concurrency: o.ParticipantConcurrency, AtomicBatchMin: o.AtomicBatchMin, Logger: o.Logger, Metrics: metrics})
		if err != nil {
			return err
		}
		bank.Register(p)
		spawn(b.name, p.Run)
	}
	client := orchestrator.NewClient(e.JS, e.NS)
	defer client.Close()

	before, err := e.counters(ctx)
	if err != nil {
		return err
	}
	r.RSSStartBytes = currentRSS()
	var (
		mu        sync.Mutex
		transfers []*transfer
		issued    atomic.Int64
		done      atomic.Int64
	)
	deadline := time.Time{}
	if o.Duration > 0 {
		deadline = time.Now().Add(o.Duration)
	}
	next := func() bool {
		if stopped(o.Stop) {
			return false
		}
		if !deadline.IsZero() {
			return time.Now().Before(deadline)
		}
		return issued.Add(1) <= int64(o.Sagas)
	}
	start := time.Now()
	stopProgress := e.progressLoop(&done, start)
	var wg sync.WaitGroup
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(seed, 0x6a657473616761))
			for next() && ctx.Err() == nil {
				t := e.transfer(ctx, client, rng)
				done.Add(1)
				mu.Lock()
				transfers = append(transfers, t)
				mu.Unlock()
			}
		}(uint64(w) + 1)
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.Interrupted = stopped(o.Stop)
	stopProgress()
	if o.LoadDone != nil {
		o.LoadDone()
	}
	select {
	case err := <-bgErr:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.Seconds = elapsed.Seconds()
	r.PeakRSSBytes, r.RSSEndBytes = peakRSS(), currentRSS()
	after, err := e.counters(ctx)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, 0, len(transfers))
	for _, t := range transfers {
		switch {
		case t.err != nil:
			r.Errors++
		case t.status == orchestrator.Committed:
			r.Committed++
		case t.status == orchestrator.Compensated:
			r.Compensated++
		case t.status == orchestrator.Parked:
			r.Parked++
		}
		if t.err == nil {
			lat = append(lat, t.latency)
		}
	}
	r.Sagas = r.Committed + r.Compensated
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.P50ms, r.P90ms, r.P99ms = percentile(lat, 0.50), percentile(lat, 0.90), percentile(lat, 0.99)
	if len(lat) > 0 {
		r.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	}
	if r.Seconds > 0 {
		r.SagasPerSecond = float64(r.Sagas) / r.Seconds
	}
	if r.Sagas > 0 {
		n := float64(r.Sagas)
		r.PGCommitsPerSaga = float64(after.pgCommits-before.pgCommits) / n
		r.PGXidsPerSaga = float64(after.pgXids-before.pgXids) / n
		r.JSPublishesPerSaga = float64(after.jsMessages-before.jsMessages) / n
		if before.jsFsyncs >= 0 {
			r.JSFsyncsPerSaga = float64(after.jsFsyncs-before.jsFsyncs) / n
		}
		r.CPUSeconds = (after.cpu - before.cpu).Seconds()
		r.CPUmsPerSaga = r.CPUSeconds * 1000 / n
	}
	if o.Mode == ModeHTTP {
		e.progress("load done: %d sagas in %.1fs; checking balances…", len(transfers), r.Seconds)
		r.InvariantErrors = e.checkHTTP(ctx, transfers)
		r.InvariantsOK = len(r.InvariantErrors) == 0
		return nil
	}
	e.progress("load done: %d sagas in %.1fs; reading back a sample of them…", len(transfers), r.Seconds)
	if r.Hops, err = e.hops(ctx, transfers); err != nil {
		return fmt.Errorf("hop breakdown: %w", err)
	}
	e.progress("checking invariants…")
	r.InvariantErrors = e.check(ctx, client, transfers)
	r.InvariantsOK = len(r.InvariantErrors) == 0
	return nil
}

func (e *env) progressLoop(done *atomic.Int64, start time.Time) (stop func()) {
	if e.o.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := int64(0)
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				n := done.Load()
				e.progress("%6.0fs %9d sagas %7d/s  rss %d MiB", time.Since(start).Seconds(), n, n-last, currentRSS()>>20)
				last = n
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// transfer runs one saga of the mix and waits for its end.
func (e *env) transfer(ctx context.Context, client *orchestrator.Client, rng *mrand.Rand) *transfer {
	o := e.o
	abnormal := e.abnormalAccounts()
	t := &transfer{from: int64(1 + rng.IntN(o.Accounts)), amount: bank.Cents(100 + rng.IntN(10_000))}
	x := rng.Float64()
	switch {
	case x < o.FailShare:
		t.to = int64(1 + rng.IntN(abnormal))
	case x < o.FailShare+o.InsufficientShare:
		t.to = int64(abnormal + 1 + rng.IntN(o.Accounts-abnormal))
		t.amount = initialBalance * 1000 // more than any account holds
	default:
		t.to = int64(abnormal + 1 + rng.IntN(o.Accounts-abnormal))
	}
	t.begin = time.Now()
	var id string
	var err error
	if e.http != nil {
		id, err = e.http.submit(ctx, t)
	} else {
		id, err = client.Start(ctx, bank.TransferPlan("", t.from, t.to, t.amount))
	}
	t.id = id
	if err != nil {
		t.err, t.unacked = err, true
		return t
	}
	st, err := client.Wait(ctx, id)
	t.latency = time.Since(t.begin)
	if err != nil {
		t.err = err
		return t
	}
	t.status = st.Status
	return t
}
