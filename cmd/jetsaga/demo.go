package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/orchestrator"
)

// demoStepTimeout bounds each scenario's wait for its saga; the demo takes
// seconds, so reaching it means something is broken.
const demoStepTimeout = 60 * time.Second

func (a *app) demoCmd() *cobra.Command {
	var (
		db      dbFlags
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the bank-transfer example end to end, in this process, and check every outcome",
		Long: `Run the bank-transfer example end to end with nothing installed but PostgreSQL's server
binaries: an embedded NATS server (JetStream in a temporary directory), a throwaway PostgreSQL
cluster (or, with DATABASE_URL, new databases on that server), the coordinator and both banks.

It runs five scenarios and shows, after each, the saga's timeline and both balances:
  1. a transfer that commits;
  2. a transfer whose credit fails (the account is marked abnormal) and is compensated;
  3. a transfer with an insufficient balance: nothing moves;
  4. a command delivered twice: the participant's barrier skips the duplicate;
  5. the coordinator stopped mid-saga and a new one started: the saga still finishes.
Then it checks that money is conserved. It exits 0 only if every outcome was the expected one, and
removes everything it created.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			logs := newLogRecorder()
			var h slog.Handler = logs
			if verbose {
				h = teeHandler{logs, slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelInfo})}
			}
			fmt.Fprintln(a.stdout, "jetsaga demo: a bank transfer saga over NATS JetStream and PostgreSQL")
			started := time.Now()
			s, err := startStack(ctx, stackConfig{databaseURL: db.url, throwawayDBs: true, syncAlways: true,
				log: slog.New(h), connectTimeout: defaultConnectTimeout})
			if err != nil {
				return err
			}
			d := &demo{ctx: ctx, out: a.stdout, s: s, logs: logs}
			runErr := d.run()
			closeErr := s.close()
			if runErr == nil && closeErr != nil {
				runErr = fmt.Errorf("clean up: %w", closeErr)
			}
			if runErr != nil {
				return runErr
			}
			if len(d.failures) > 0 {
				return fmt.Errorf("demo: %d unexpected outcome(s): %s", len(d.failures), strings.Join(d.failures, "; "))
			}
			fmt.Fprintf(a.stdout, "\nall outcomes as expected (%.1fs); everything the demo started is stopped and removed\n",
				time.Since(started).Seconds())
			return nil
		},
	}
	db.register(cmd.Flags(), "an existing PostgreSQL server to create the demo's databases on (default: a throwaway cluster from the local binaries)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "also print the components' logs on stderr")
	return cmd
}

// demo runs the scenarios against a stack.
type demo struct {
	ctx      context.Context
	out      io.Writer
	s        *stack
	logs     *logRecorder
	failures []string
	coord    *orchestrator.Coordinator
}

// check records an expectation; it prints ✓ or ✗ and the failure is
// reported at the end.
func (d *demo) check(ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	mark := "ok"
	if !ok {
		mark = "UNEXPECTED"
		d.failures = append(d.failures, msg)
	}
	fmt.Fprintf(d.out, "  [%s] %s\n", mark, msg)
}

func (d *demo) section(n int, title string) {
	fmt.Fprintf(d.out, "\n== %d. %s\n", n, title)
}

func (d *demo) run() error {
	s := d.s
	where := "existing server " + redactURL(s.PG.URL("postgres"))
	if !s.PG.External() {
		where = fmt.Sprintf("throwaway cluster on %s (in %s)", pgHost(s.PG.URL("postgres")), s.PG.Dir())
	}
	fmt.Fprintf(d.out, "  NATS        %s (embedded, JetStream in %s)\n", s.NATS.URL(), s.NATS.StoreDir())
	fmt.Fprintf(d.out, "  PostgreSQL  %s\n", where)
	fmt.Fprintf(d.out, "  databases   bank-a: %s, bank-b: %s (barrier, outbox and accounts tables migrated)\n", s.DBNames["bank-a"], s.DBNames["bank-b"])
	if err := s.startParticipants(); err != nil {
		return err
	}
	c, err := s.startCoordinator()
	if err != nil {
		return err
	}
	d.coord = c
	before, err := d.totals()
	if err != nil {
		return err
	}
	if err := d.printBalances("  balances    "); err != nil {
		return err
	}
	for i, sc := range []struct {
		title string
		run   func() error
	}{
		{"A transfer that commits", d.commit},
		{"The credit fails (abnormal account): the debit is compensated", d.compensate},
		{"Insufficient balance: the debit fails, nothing moves", d.insufficient},
		{"A command delivered twice: the barrier skips the duplicate", d.duplicate},
		{"The coordinator stops mid-saga; a new one finishes it", d.restart},
	} {
		d.section(i+1, sc.title)
		if err := sc.run(); err != nil {
			return fmt.Errorf("scenario %d (%s): %w", i+1, sc.title, err)
		}
	}
	d.section(6, "Money is conserved")
	after, err := d.totals()
	if err != nil {
		return err
	}
	d.check(after == before, "total of both banks: %s before, %s after", cents(before), cents(after))
	neg, err := d.negativeBalances()
	if err != nil {
		return err
	}
	d.check(neg == 0, "no negative balance (%d found)", neg)
	return nil
}

// transfer starts a transfer saga and waits for its end.
func (d *demo) transfer(from, to account, amount int64) (*orchestrator.State, error) {
	fmt.Fprintf(d.out, "%s sends %s to %s\n", from, cents(amount), to)
	id, err := d.s.client.Start(d.ctx, transferPlan(from, to, amount))
	if err != nil {
		return nil, err
	}
	return d.wait(id)
}

func (d *demo) wait(id string) (*orchestrator.State, error) {
	ctx, cancel := context.WithTimeout(d.ctx, demoStepTimeout)
	defer cancel()
	st, err := d.s.client.Wait(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("wait for saga %s: %w", id, err)
	}
	return st, nil
}

// report prints a saga's outcome, its timeline and the balances, and checks
// the status and the balance changes.
func (d *demo) report(st *orchestrator.State, want orchestrator.Status, before map[account]int64, wantDelta map[account]int64) error {
	fmt.Fprintf(d.out, "saga %s: %s", st.SagaID, st.Status)
	if st.Reason != "" {
		fmt.Fprintf(d.out, " (%s)", st.Reason)
	}
	fmt.Fprintln(d.out)
	tl, err := d.s.client.Timeline(d.ctx, st.SagaID)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, "  timeline")
	printTimeline(d.out, tl, "    ")
	if err := d.printBalances("  balances  "); err != nil {
		return err
	}
	d.check(st.Status == want, "saga %s, expected %s", st.Status, want)
	after, err := d.balances()
	if err != nil {
		return err
	}
	for _, acc := range demoAccounts {
		got := after[acc] - before[acc]
		d.check(got == wantDelta[acc], "%s changed by %s, expected %s", acc, signed(got), signed(wantDelta[acc]))
	}
	return nil
}

func (d *demo) commit() error {
	before, err := d.balances()
	if err != nil {
		return err
	}
	st, err := d.transfer(alice, bob, 3000)
	if err != nil {
		return err
	}
	return d.report(st, orchestrator.Committed, before, map[account]int64{alice: -3000, bob: 3000})
}

func (d *demo) compensate() error {
	if err := setAbnormal(d.ctx, d.s.Pools[bob.bank], bob, true); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "%s is marked abnormal: bank-b refuses credits to it\n", bob)
	before, err := d.balances()
	if err != nil {
		return err
	}
	st, err := d.transfer(alice, bob, 2000)
	if err != nil {
		return err
	}
	if err := setAbnormal(d.ctx, d.s.Pools[bob.bank], bob, false); err != nil {
		return err
	}
	if err := d.report(st, orchestrator.Compensated, before, map[account]int64{}); err != nil {
		return err
	}
	debit, credit := stepStatus(st, "debit"), stepStatus(st, "credit")
	d.check(debit == orchestrator.StepCompensated && credit == orchestrator.StepFailed,
		"debit %s, credit %s: expected the debit compensated after the credit failed", debit, credit)
	return nil
}

func (d *demo) insufficient() error {
	before, err := d.balances()
	if err != nil {
		return err
	}
	st, err := d.transfer(carol, dave, 1_000_000_00)
	if err != nil {
		return err
	}
	if err := d.report(st, orchestrator.Compensated, before, map[account]int64{}); err != nil {
		return err
	}
	debit, credit := stepStatus(st, "debit"), stepStatus(st, "credit")
	d.check(debit == orchestrator.StepFailed && credit == orchestrator.StepPending,
		"debit %s, credit %s: expected the debit failed and the credit never sent", debit, credit)
	return nil
}

func (d *demo) duplicate() error {
	st, err := d.transfer(carol, dave, 500)
	if err != nil {
		return err
	}
	d.check(st.Status == orchestrator.Committed, "saga %s, expected committed", st.Status)
	before, err := d.balances()
	if err != nil {
		return err
	}
	// Deliver the debit command again, as a redelivery after a lost ack
	// would: same command, but a new Nats-Msg-Id so that JetStream's
	// duplicate window does not drop it. Only the barrier stands between
	// it and a second debit.
	stream, err := d.s.JS.Stream(d.ctx, d.s.NS.CommandsStream())
	if err != nil {
		return err
	}
	orig, err := stream.GetLastMsgForSubject(d.ctx, d.s.NS.Command(carol.bank, st.SagaID))
	if err != nil {
		return fmt.Errorf("read the debit command: %w", err)
	}
	m := nats.NewMsg(orig.Subject)
	m.Data = orig.Data
	for k, v := range orig.Header {
		if !strings.HasPrefix(k, "Nats-") || k == "Nats-Msg-Id" {
			m.Header[k] = v // not the headers the direct get added (stream, subject, sequence, time)
		}
	}
	m.Header.Set("Nats-Msg-Id", orig.Header.Get("Nats-Msg-Id")+"/again")
	skippedBefore := d.logs.count(carol.bank, "duplicate")
	ack, err := d.s.JS.PublishMsg(d.ctx, m)
	if err != nil {
		return fmt.Errorf("publish the duplicate: %w", err)
	}
	fmt.Fprintf(d.out, "the debit command is published again (SAGA_CMDS seq %d, Nats-Msg-Id %s)\n", ack.Sequence, m.Header.Get("Nats-Msg-Id"))
	if err := d.waitAcked(carol.bank, ack.Sequence); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "%s handled it (its consumer acknowledged seq %d)\n", carol.bank, ack.Sequence)
	rows, err := barrierRows(d.ctx, d.s.Pools[carol.bank], st.SagaID)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  barrier rows of this saga in %s:\n", d.s.DBNames[carol.bank])
	for _, r := range rows {
		fmt.Fprintf(d.out, "    %s\n", r)
	}
	if err := d.report(st, orchestrator.Committed, before, map[account]int64{}); err != nil {
		return err
	}
	d.check(len(rows) == 1, "%d barrier row for the debit, expected 1: the duplicate wrote none", len(rows))
	skipped := d.logs.count(carol.bank, "duplicate") - skippedBefore
	d.check(skipped == 1, "%s logged %d skipped duplicate, expected 1", carol.bank, skipped)
	return nil
}

// waitAcked waits until participant's consumer has acknowledged seq.
func (d *demo) waitAcked(participant string, seq uint64) error {
	cons, err := d.s.JS.Consumer(d.ctx, d.s.NS.CommandsStream(), d.s.NS.ParticipantConsumer(participant))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(demoStepTimeout)
	for {
		info, err := cons.Info(d.ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream >= seq {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not acknowledge seq %d within %s", participant, seq, demoStepTimeout)
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (d *demo) restart() error {
	before, err := d.balances()
	if err != nil {
		return err
	}
	// Hold a lock on Alice's row in bank-a: the debit will wait for it.
	release, err := lockAccount(d.ctx, d.s.Pools[alice.bank], alice)
	if err != nil {
		return err
	}
	defer release()
	fmt.Fprintf(d.out, "%s's row in %s is locked, so the debit will block inside its transaction\n", alice, d.s.DBNames[alice.bank])
	fmt.Fprintf(d.out, "%s sends %s to %s\n", alice, cents(1000), bob)
	id, err := d.s.client.Start(d.ctx, transferPlan(alice, bob, 1000))
	if err != nil {
		return err
	}
	if err := waitLockWaiter(d.ctx, d.s.Pools[alice.bank], demoStepTimeout); err != nil {
		return err
	}
	fmt.Fprintln(d.out, "the debit command went out and bank-a is running it (blocked on the lock)")
	processed := d.coord.Stats().Processed
	if err := d.s.stopCoordinator(); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "coordinator 1 stopped (it had processed %d messages)\n", processed)
	release()
	fmt.Fprintln(d.out, "lock released: bank-a commits the debit and publishes its outcome, with no coordinator running")
	if err := d.waitOutcomeStored(id); err != nil {
		return err
	}
	st, err := d.s.client.Get(d.ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "saga %s is %s, step debit %s: the outcome waits in the stream\n", id, st.Status, stepStatus(st, "debit"))
	d.check(st.Status == orchestrator.Running, "saga %s while no coordinator runs, expected running", st.Status)
	c, err := d.s.startCoordinator()
	if err != nil {
		return err
	}
	d.coord = c
	fmt.Fprintln(d.out, "coordinator 2 started: it resumes from the durable consumer")
	st, err = d.wait(id)
	if err != nil {
		return err
	}
	return d.report(st, orchestrator.Committed, before, map[account]int64{alice: -1000, bob: 1000})
}

// waitOutcomeStored waits until the debit's outcome is in the sagas stream.
func (d *demo) waitOutcomeStored(id string) error {
	stream, err := d.s.JS.Stream(d.ctx, d.s.NS.SagasStream())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(demoStepTimeout)
	for {
		_, err := stream.GetLastMsgForSubject(d.ctx, d.s.NS.Event(alice.bank, id))
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bank-a's outcome for saga %s did not arrive within %s", id, demoStepTimeout)
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func stepStatus(st *orchestrator.State, name string) orchestrator.StepStatus {
	for _, s := range st.Steps {
		if s.Name == name {
			return s.Status
		}
	}
	return ""
}

// balances reads every demo account's balance.
func (d *demo) balances() (map[account]int64, error) {
	out := map[account]int64{}
	for _, acc := range demoAccounts {
		b, err := balance(d.ctx, d.s.Pools[acc.bank], acc)
		if err != nil {
			return nil, err
		}
		out[acc] = b
	}
	return out, nil
}

func (d *demo) printBalances(prefix string) error {
	b, err := d.balances()
	if err != nil {
		return err
	}
	parts := make([]string, 0, len(demoAccounts))
	for _, acc := range demoAccounts {
		parts = append(parts, fmt.Sprintf("%s %s", acc, cents(b[acc])))
	}
	fmt.Fprintf(d.out, "%s%s\n", prefix, strings.Join(parts, "   "))
	return nil
}

// totals is the sum of every balance of both banks.
func (d *demo) totals() (int64, error) {
	var sum int64
	for _, b := range banks {
		t, err := bankTotal(d.ctx, d.s.Pools[b.name])
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

func (d *demo) negativeBalances() (int, error) {
	n := 0
	for _, b := range banks {
		k, err := countNegative(d.ctx, d.s.Pools[b.name])
		if err != nil {
			return 0, err
		}
		n += k
	}
	return n, nil
}

// cents formats an amount of cents as units.
func cents(c int64) string {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100)
}

// signed formats a change of balance with its sign.
func signed(c int64) string {
	if c > 0 {
		return "+" + cents(c)
	}
	if c == 0 {
		return "0.00"
	}
	return cents(c)
}

// logRecorder is a slog handler that remembers every record's message per
// component, so that the demo can show what a participant did. The handlers
// made by WithAttrs share their parent's records, and the lock that guards
// them: components log from many goroutines at once.
type logRecorder struct {
	store     *logStore
	component string // the latest "component" attribute, or ""
}

// logStore holds the records of a logRecorder and of all its children.
type logStore struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct{ component, msg string }

func newLogRecorder() *logRecorder { return &logRecorder{store: &logStore{}} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.store.mu.Lock()
	defer l.store.mu.Unlock()
	l.store.recs = append(l.store.recs, logRecord{l.component, r.Message})
	return nil
}

func (l *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	child := &logRecorder{store: l.store, component: l.component}
	for _, a := range attrs {
		if a.Key == "component" {
			child.component = a.Value.String()
		}
	}
	return child
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// count counts the records of component whose message contains s.
func (l *logRecorder) count(component, s string) int {
	l.store.mu.Lock()
	defer l.store.mu.Unlock()
	n := 0
	for _, r := range l.store.recs {
		if r.component == component && strings.Contains(r.msg, s) {
			n++
		}
	}
	return n
}

// teeHandler sends records to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if t.a.Enabled(ctx, r.Level) {
		_ = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		return t.b.Handle(ctx, r)
	}
	return nil
}

func (t teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(attrs), t.b.WithAttrs(attrs)}
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{t.a.WithGroup(name), t.b.WithGroup(name)}
}
