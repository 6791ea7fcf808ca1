package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/internal/bench"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func (a *app) benchCmd() *cobra.Command {
	var (
		o            bench.Options
		natsURL      string
		dbURL        string
		asJSON       bool
		cpuProfile   string
		mutexProfile string
		memProfile   string
		withMetrics  bool
		countFsyncs  bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure whole-saga throughput and latency, with the machine's own ceilings",
		Long: `Run the bank-transfer saga end to end under load — real PostgreSQL (fsync and
synchronous_commit as the server has them: on for the throwaway cluster), JetStream file storage,
the coordinator and both bank participants with their barriers — and report sagas/s,
latency percentiles from Start to the terminal state, PostgreSQL commits, JetStream writes and CPU
per saga, peak RSS, and the ceilings measured first on the same database and NATS: single-row UPDATE
transactions/s and synchronous JetStream publishes/s at the same concurrency.

By default everything runs in this process on an embedded NATS server (--js-sync always: every
JetStream write is fsynced; "default" fsyncs every 2 minutes) and a throwaway PostgreSQL cluster;
--nats-url and --database-url use existing servers instead (the bench works in its own streams
and databases and removes them). The CPU figure is this process's: with the embedded server it
includes NATS, never PostgreSQL.

At the end it checks the invariants (money conserved, every saga terminal, every balance exactly
as the committed transfers say, barrier rows matching) and exits 1 if any fails.`,
		Example: `  jetsaga bench --sagas 5000 --concurrency 64
  jetsaga bench --duration 10m --concurrency 64 --json > soak.json
  jetsaga bench --js-sync default --concurrency 256`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case o.Concurrency < 1:
				return usagef("--concurrency must be at least 1, got %d", o.Concurrency)
			case o.Sagas < 1 && o.Duration <= 0:
				return usagef("--sagas must be at least 1, got %d", o.Sagas)
			case o.Accounts < 10:
				return usagef("--accounts must be at least 10, got %d", o.Accounts)
			case o.FailShare < 0 || o.InsufficientShare < 0 || o.FailShare+o.InsufficientShare > 1:
				return usagef("--fail-share %.2f and --insufficient-share %.2f must be >= 0 and add up to at most 1", o.FailShare, o.InsufficientShare)
			case o.Mode != bench.ModeNative && o.Mode != bench.ModeHTTP:
				return usagef("--mode must be %s or %s, got %q", bench.ModeNative, bench.ModeHTTP, o.Mode)
			case o.JSSync != "always" && o.JSSync != "default":
				return usagef("--js-sync must be always or default, got %q", o.JSSync)
			case o.Replicas < 1 || o.Coordinators < 1 || o.Workers < 1:
				return usagef("--replicas, --coordinators and --workers must be at least 1")
			}
			o.NATSURL, o.DatabaseURL = natsURL, dbURL
			if countFsyncs {
				if natsURL != "" {
					return usagef("--count-fsyncs counts the embedded server's fsyncs; it cannot count those of --nats-url")
				}
				if o.FsyncLog = os.Getenv(fsyncLogEnv); o.FsyncLog == "" {
					return benchUnderStrace(cmd.Context(), a)
				}
			}
			if natsURL != "" {
				o.NATSOptions = []nats.Option{nats.Name("jetsaga bench")}
			} else {
				procsForEmbeddedNATS()
			}
			// Zero means "none" on the command line, "default" in Options.
			o.FailShare, o.InsufficientShare = orNegative(o.FailShare), orNegative(o.InsufficientShare)
			if o.CeilingDuration == 0 {
				o.CeilingDuration = -1
			}
			if !asJSON {
				o.Progress = a.stderr
			}
			loadDone, finishProfiles, err := startProfiles(cpuProfile, mutexProfile, memProfile)
			if err != nil {
				return err
			}
			o.LoadDone = loadDone // the profiles cover the load, not the checks after it
			if withMetrics {
				reg := newRegistry()
				o.Registerer = reg
				stopScrapes := scrapeEvery(reg, benchScrapeInterval)
				defer stopScrapes()
			}
			ctx, stopSignals, stopCh := benchSignals(cmd.Context(), a.stderr)
			defer stopSignals()
			o.Stop = stopCh
			r, err := bench.Run(ctx, o)
			if perr := finishProfiles(); err == nil {
				err = perr
			}
			if err != nil {
				return interrupted(ctx, err)
			}
			if asJSON {
				err = writeJSON(a.stdout, r)
			} else {
				printBench(a.stdout, r) // its write errors are those of a closed pipe
			}
			if err != nil && !errors.Is(err, syscall.EPIPE) { // a closed pipe (| head) has read what it wanted
				return err
			}
			if r.Interrupted {
				return &exitCodeError{code: exitInterrupted, err: fmt.Errorf("bench interrupted: the report covers the %d sagas completed before", r.Sagas)}
			}
			if !r.InvariantsOK {
				return fmt.Errorf("invariants failed: %d violation(s), first: %s", len(r.InvariantErrors), r.InvariantErrors[0])
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.Sagas, "sagas", 2000, "number of sagas to complete (ignored with --duration)")
	fs.DurationVar(&o.Duration, "duration", 0, "run the load for this long instead of a number of sagas")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "sagas in flight")
	fs.StringVar(&o.Mode, "mode", bench.ModeNative, `native (Go participants) or http (HTTP banks with DTM's barrier, called by the HTTP participant, sagas submitted to the DTM-compatible gateway)`)
	fs.IntVar(&o.Accounts, "accounts", 1000, "accounts per bank")
	fs.Float64Var(&o.FailShare, "fail-share", 0.1, "share of transfers whose TransIn fails (abnormal account)")
	fs.Float64Var(&o.InsufficientShare, "insufficient-share", 0.1, "share of transfers whose TransOut fails (insufficient balance)")
	fs.StringVar(&o.JSSync, "js-sync", "always", "JetStream sync policy of the embedded server: always or default (every 2 minutes)")
	fs.IntVar(&o.Replicas, "replicas", 1, "replicas of the streams and bucket")
	fs.DurationVar(&o.MaxAge, "max-age", 0, "max age of the streams' messages (finished sagas' states expire a little later); default 7 days; shorter than the run to see memory with expiry at work")
	fs.IntVar(&o.Coordinators, "coordinators", 1, "coordinator instances (each with its own connection)")
	fs.IntVar(&o.Workers, "workers", 64, "workers per coordinator")
	fs.DurationVar(&o.StepTimeout, "step-timeout", orchestrator.DefaultStepTimeout, "the coordinators' default step timeout, as jetsaga coordinator --step-timeout (-1s: none)")
	fs.IntVar(&o.AtomicBatchMin, "atomic-batch-min", 0, "group commit: store at least this many gathered writes per stream as one atomic batch, in the coordinators and the banks (0: off)")
	fs.IntVar(&o.ParticipantConcurrency, "participant-concurrency", 32, "commands each bank handles at once")
	fs.DurationVar(&o.CeilingDuration, "ceiling-duration", 3*time.Second, "how long each ceiling is measured (0 skips them)")
	fs.StringVar(&natsURL, "nats-url", "", "use this NATS server instead of an embedded one")
	fs.StringVar(&dbURL, "database-url", "", "use this PostgreSQL server instead of a throwaway cluster (databases jetsaga_bench_a/_b are recreated)")
	bindEnv(fs, "database-url", "DATABASE_URL")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of text")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load to this file")
	fs.StringVar(&mutexProfile, "mutexprofile", "", "write a mutex contention profile of the load to this file")
	fs.StringVar(&memProfile, "memprofile", "", "write a heap profile, taken when the load ends, to this file")
	fs.BoolVar(&countFsyncs, "count-fsyncs", false, "count the embedded JetStream store's fsyncs during the load (runs the bench under strace, which must be installed; each fsync then stops for strace, so take sagas/s from a run without it)")
	fs.BoolVar(&withMetrics, "metrics", false, "keep the coordinator's and the banks' Prometheus metrics and scrape them every 5 s, to measure what they cost")
	return cmd
}

// orNegative maps an explicit 0 to -1 (bench.Options reads 0 as "default").
func orNegative(f float64) float64 {
	if f == 0 {
		return -1
	}
	return f
}

// startProfiles starts the profiles asked for. loadDone ends them where the
// load ends, while everything it ran is still alive: it stops the CPU profile
// and writes the heap and mutex profiles. finish calls loadDone if the run
// did not, and returns its error.
func startProfiles(cpu, mutex, mem string) (loadDone func(), finish func() error, err error) {
	var cpuFile *os.File
	if cpu != "" {
		if cpuFile, err = os.Create(cpu); err != nil {
			return nil, nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpuFile); err != nil {
			cpuFile.Close()
			return nil, nil, fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	if mutex != "" {
		runtime.SetMutexProfileFraction(5)
	}
	var once sync.Once
	var firstErr error
	loadDone = func() {
		once.Do(func() {
			if cpuFile != nil {
				pprof.StopCPUProfile()
				if err := cpuFile.Close(); err != nil {
					firstErr = fmt.Errorf("--cpuprofile: %w", err)
				}
			}
			if mem != "" {
				runtime.GC()
			}
			for _, p := range []struct{ flag, path, name string }{{"--memprofile", mem, "heap"}, {"--mutexprofile", mutex, "mutex"}} {
				if err := writeProfile(p.path, p.name); err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", p.flag, err)
				}
			}
		})
	}
	return loadDone, func() error { loadDone(); return firstErr }, nil
}

// writeProfile writes the named runtime profile to path; "" writes nothing.
func writeProfile(path, name string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup(name).WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func printBench(w io.Writer, r *bench.Report) {
	s, m := r.Settings, r.Machine
	t := newTable(w)
	fmt.Fprintf(t, "machine\t%d CPUs %s, %s, %s, GOMAXPROCS %d\n", m.CPUs, m.CPUModel, m.OS, m.GoVersion, m.GOMAXPROCS)
	fmt.Fprintf(t, "mode\t%s\n", s.Mode)
	fmt.Fprintf(t, "settings\tconcurrency %d, %d accounts, %.0f%% TransIn failures, %.0f%% insufficient balances, %d coordinator(s) × %d workers\n",
		s.Concurrency, s.Accounts, 100*max(s.FailShare, 0), 100*max(s.InsufficientShare, 0), s.Coordinators, s.Workers)
	commit := "each write on its own"
	if s.AtomicBatchMin > 0 {
		commit = fmt.Sprintf("group commit (atomic batches of %d or more)", s.AtomicBatchMin)
	}
	fmt.Fprintf(t, "NATS\t%s, replicas %d, %s\n", s.NATS, s.Replicas, commit)
	fmt.Fprintf(t, "PostgreSQL\t%s, fsync %s, synchronous_commit %s\n", s.PostgreSQL, s.Fsync, s.SynchronousCommit)
	fmt.Fprintf(t, "sagas\t%d completed (%d committed, %d compensated), %d parked, %d errors, in %.1fs\n",
		r.Sagas, r.Committed, r.Compensated, r.Parked, r.Errors, r.Seconds)
	fmt.Fprintf(t, "throughput\t%.0f sagas/s\n", r.SagasPerSecond)
	fmt.Fprintf(t, "latency\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	fmt.Fprintf(t, "per saga\t%.2f PostgreSQL step transactions (%.2f transaction ids, savepoints included), %.2f JetStream writes, %.2f ms CPU of this process\n",
		r.PGCommitsPerSaga, r.PGXidsPerSaga, r.JSPublishesPerSaga, r.CPUmsPerSaga)
	if r.JSFsyncsPerSaga > 0 {
		fmt.Fprintf(t, "fsyncs\t%.2f JetStream fsyncs per saga (counted by strace)\n", r.JSFsyncsPerSaga)
	}
	fmt.Fprintf(t, "memory\tpeak RSS %d MiB (RSS %d MiB at start of load, %d MiB at end)\n", r.PeakRSSBytes>>20, r.RSSStartBytes>>20, r.RSSEndBytes>>20)
	if r.PGCeilingTPS > 0 {
		fmt.Fprintf(t, "ceilings\tPostgreSQL %.0f UPDATE tx/s, JetStream %.0f sync publishes/s (sagas/s = %.1f%% and %.1f%% of them)\n",
			r.PGCeilingTPS, r.JSCeilingPPS, 100*r.FractionOfPGCeiling, 100*r.FractionOfJSCeiling)
		if r.JSBoundSagasPerSecond > 0 {
			fmt.Fprintf(t, "bound\t%.0f sagas/s if JetStream did nothing but this run's %.2f writes per saga at its ceiling (sagas/s = %.0f%% of it)\n",
				r.JSBoundSagasPerSecond, r.JSPublishesPerSaga, 100*r.SagasPerSecond/r.JSBoundSagasPerSecond)
		}
	}
	for i, h := range r.Hops {
		label := ""
		if i == 0 {
			label = "hops (median)"
		}
		fmt.Fprintf(t, "%s\t%6.1f ms  %s → %s\n", label, h.MedianMs, h.From, h.To)
	}
	ok := "ok"
	if !r.InvariantsOK {
		ok = fmt.Sprintf("FAILED (%d)", len(r.InvariantErrors))
	}
	fmt.Fprintf(t, "invariants\t%s\n", ok)
	t.Flush()
	for _, e := range r.InvariantErrors {
		fmt.Fprintf(w, "  %s\n", e)
	}
}

// benchSignals makes SIGINT and SIGTERM end a bench early: the first stops
// starting sagas (stop is closed; the run finishes those in flight, reports
// on what completed and removes what it created), the second abandons the
// run (ctx is cancelled; what it created is still removed). SIGPIPE is
// ignored while the bench runs, so that a standard output whose reader is
// gone ("| head") makes the report's write fail with EPIPE instead of
// killing the process before it removed what it created. (Asking to be
// notified of SIGPIPE instead would also deliver those raised by writes to
// any closed network connection of the process — an embedded NATS server's
// clients, PostgreSQL's — and stop the bench for nothing.)
func benchSignals(parent context.Context, stderr io.Writer) (ctx context.Context, release func(), stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	signal.Ignore(syscall.SIGPIPE)
	stopCh := make(chan struct{})
	done := make(chan struct{})
	go func() {
		first := true
		for {
			select {
			case <-done:
				return
			case <-parent.Done():
				cancel()
				return
			case sig := <-sigs:
				if first {
					first = false
					close(stopCh)
					fmt.Fprintf(stderr, "jetsaga bench: %v: finishing the sagas in flight, then reporting (again to abandon the run)\n", sig)
					continue
				}
				cancel()
			}
		}
	}()
	return ctx, func() { signal.Stop(sigs); signal.Reset(syscall.SIGPIPE); close(done); cancel() }, stopCh
}

// fsyncLogEnv names the strace log to a bench that runs under strace.
const fsyncLogEnv = "JETSAGA_BENCH_FSYNC_LOG"

// benchUnderStrace runs this same bench command again under strace, which
// logs the fsync calls of the process and names their files; the bench it
// runs reads the log (bench.Options.FsyncLog). Only fsync stops the traced
// process (seccomp-bpf), so the load runs nearly as fast as without.
func benchUnderStrace(ctx context.Context, a *app) error {
	strace, err := exec.LookPath("strace")
	if err != nil {
		return fmt.Errorf("--count-fsyncs needs strace (apt-get install strace): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.CreateTemp("", "jetsaga-bench-fsyncs-*.log")
	if err != nil {
		return err
	}
	log.Close()
	defer os.Remove(log.Name())
	args := append([]string{"-f", "--seccomp-bpf", "-qq", "-y", "-e", "trace=fsync", "-o", log.Name(), "--", self}, os.Args[1:]...)
	cmd := exec.CommandContext(ctx, strace, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, a.stdout, a.stderr
	cmd.Env = append(os.Environ(), fsyncLogEnv+"="+log.Name())
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return &exitCodeError{code: exit.ExitCode()} // the bench said why
		}
		return fmt.Errorf("bench under strace: %w", err)
	}
	return nil
}
