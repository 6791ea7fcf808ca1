package invariants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// The steps of bank.TransferPlan: the debit runs at bank-a, the credit at
// bank-b.
const (
	DebitStep  = "debit"
	CreditStep = "credit"
)

// Defaults of [Config].
const (
	DefaultMaxViolations = 20
	DefaultConcurrency   = 16
)

// Transfer is one transfer saga that a load started with bank.TransferPlan:
// Amount from account From at bank-a to account To at bank-b.
type Transfer struct {
	// ID is the saga id. Required, unique in Config.Transfers.
	ID string
	// From is the debited account at bank-a; it must be in Config.InitialA.
	From int64
	// To is the credited account at bank-b; it must be in Config.InitialB.
	To int64
	// Amount moved, > 0.
	Amount bank.Cents
	// Unacked marks a start whose publish was never acknowledged (an error
	// or a timeout): the saga may or may not exist. If it exists it is
	// checked like any other; if not, nothing of it may exist in the banks.
	// Default false: the start was acknowledged, so the saga must exist.
	Unacked bool
	// Final is the terminal status the load saw (Client.Wait), or "". With
	// Config.AllowExpired, a saga that no longer exists is checked against
	// it and the barrier rows instead of its state.
	Final orchestrator.Status
}

// Config is the input of [Check]. Client, BankA, BankB, InitialA and
// InitialB are required.
type Config struct {
	// Client reads each saga's state by id. Required.
	Client *orchestrator.Client
	// BankA and BankB are the two banks' databases (accounts and barrier
	// tables). Required.
	BankA, BankB *pgxpool.Pool
	// InitialA and InitialB are every account's balance before the load,
	// per bank. Required, non-empty; no balance may be negative.
	InitialA, InitialB map[int64]bank.Cents
	// Transfers are the sagas the load started. Default none (then the
	// balances must be unchanged).
	Transfers []Transfer
	// AllowExpired accepts that a finished saga (Transfer.Final committed
	// or compensated) no longer exists: the run outlasted the streams' max
	// age, so its messages and state expired. Its effect on the balances is
	// then checked against Final and the barrier rows. Default false: every
	// acknowledged start must lead to a saga that is found.
	AllowExpired bool
	// AllowParked accepts parked sagas, each with a reason; their effect on
	// the balances is read from the barrier rows, and the money they hold in
	// flight (debited, not credited) is allowed out of the total. Default
	// false: a parked saga is a violation.
	AllowParked bool
	// MaxViolations bounds Report.Violations. Default
	// [DefaultMaxViolations].
	MaxViolations int
	// Concurrency is the number of saga states read at once. Default
	// [DefaultConcurrency].
	Concurrency int
}

func (c *Config) validate() error {
	switch {
	case c.Client == nil:
		return errors.New("invariants: Config.Client is nil")
	case c.BankA == nil:
		return errors.New("invariants: Config.BankA is nil")
	case c.BankB == nil:
		return errors.New("invariants: Config.BankB is nil")
	case len(c.InitialA) == 0:
		return errors.New("invariants: Config.InitialA is empty: give every bank-a account's balance before the load")
	case len(c.InitialB) == 0:
		return errors.New("invariants: Config.InitialB is empty: give every bank-b account's balance before the load")
	case c.MaxViolations < 0:
		return fmt.Errorf("invariants: Config.MaxViolations is %d, must be >= 0 (0 means %d)", c.MaxViolations, DefaultMaxViolations)
	case c.Concurrency < 0:
		return fmt.Errorf("invariants: Config.Concurrency is %d, must be >= 0 (0 means %d)", c.Concurrency, DefaultConcurrency)
	}
	for name, m := range map[string]map[int64]bank.Cents{"InitialA": c.InitialA, "InitialB": c.InitialB} {
		for id, bal := range m {
			if bal < 0 {
				return fmt.Errorf("invariants: Config.%s[%d] is %s, a balance cannot be negative", name, id, bal)
			}
		}
	}
	seen := make(map[string]int, len(c.Transfers))
	for i, t := range c.Transfers {
		f := func(field, format string, args ...any) error {
			return fmt.Errorf("invariants: Config.Transfers[%d].%s: "+format, append([]any{i, field}, args...)...)
		}
		if err := events.ValidToken(t.ID); err != nil {
			return f("ID", "%q %v", t.ID, err)
		}
		if j, dup := seen[t.ID]; dup {
			return f("ID", "%q is also Transfers[%d].ID", t.ID, j)
		}
		seen[t.ID] = i
		if _, ok := c.InitialA[t.From]; !ok {
			return f("From", "account %d is not in InitialA", t.From)
		}
		if _, ok := c.InitialB[t.To]; !ok {
			return f("To", "account %d is not in InitialB", t.To)
		}
		if t.Amount <= 0 {
			return f("Amount", "is %s, must be > 0", t.Amount)
		}
	}
	if c.MaxViolations == 0 {
		c.MaxViolations = DefaultMaxViolations
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	return nil
}

// ParkedSaga is a parked saga that Config.AllowParked accepted.
type ParkedSaga struct {
	ID     string
	Reason string
}

// Report is the result of [Check].
type Report struct {
	// Transfers is the number of transfers given.
	Transfers int
	// Committed, Compensated and Parked count the sagas by final status.
	Committed, Compensated, Parked int
	// NotStarted counts unacknowledged starts that left no saga (and, as
	// checked, nothing in the banks).
	NotStarted int
	// Missing counts acknowledged starts without a saga (each a violation).
	Missing int
	// Expired counts finished sagas that no longer exist, checked against
	// their final status and barrier rows (Config.AllowExpired).
	Expired int
	// NotTerminal counts sagas in any other status (each a violation unless
	// parked and allowed).
	NotTerminal int
	// VoidedActions counts barrier rows do=voided of the started sagas: a
	// compensation ran before its action, so the action is refused if it
	// ever arrives (and, as checked, took no effect).
	VoidedActions int
	// ForeignRows counts barrier rows of sagas that are not among the
	// transfers (forged commands); as checked, none took effect.
	ForeignRows int
	// TotalBefore and TotalAfter are the sums of all balances of both banks;
	// InFlight is the money allowed parked sagas hold (debited at bank-a and
	// not credited at bank-b).
	TotalBefore, TotalAfter, InFlight bank.Cents
	// ParkedSagas are the allowed parked sagas with their reasons.
	ParkedSagas []ParkedSaga
	// Violations describe the broken invariants, at most
	// Config.MaxViolations of them; ViolationCount counts them all.
	Violations     []string
	ViolationCount int
}

// OK reports whether every invariant holds.
func (r *Report) OK() bool { return r.ViolationCount == 0 }

// Err returns nil if every invariant holds, otherwise an error listing the
// violations.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	more := ""
	if r.ViolationCount > len(r.Violations) {
		more = fmt.Sprintf("\n  … and %d more", r.ViolationCount-len(r.Violations))
	}
	return fmt.Errorf("invariants: %d violation(s):\n  %s%s", r.ViolationCount, strings.Join(r.Violations, "\n  "), more)
}

func (r *Report) violate(limit int, format string, args ...any) {
	r.ViolationCount++
	if len(r.Violations) < limit {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

// rowKey identifies the barrier rows of one step of one saga.
type rowKey struct{ saga, step string }

// stepRows are the barrier rows of one step: the do row's status ("" if
// absent) and whether the undo row exists.
type stepRows struct {
	do   participants.BarrierStatus
	undo bool
}

// applied reports whether the rows leave the action's effect in place.
func (s stepRows) applied() bool { return s.do == participants.BarrierSucceeded && !s.undo }

func (s stepRows) String() string {
	do, undo := string(s.do), "absent"
	if do == "" {
		do = "absent"
	}
	if s.undo {
		undo = string(participants.BarrierCompensated)
	}
	return "do=" + do + " undo=" + undo
}

// Check verifies the invariants; see the package documentation. It returns
// an error (and no report) only if the check cannot be carried out: invalid
// Config, or a database or NATS read that failed.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c, err := load(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Transfers {
		c.transfer(&cfg.Transfers[i], c.states[i])
	}
	c.unplannedRows()
	c.balances()
	return c.r, nil
}

// checker holds what Check read and what it found so far.
type checker struct {
	cfg          *Config
	r            *Report
	states       []*orchestrator.State // per transfer, nil where none exists
	rowsA, rowsB map[rowKey]stepRows
	balA, balB   map[int64]bank.Cents
	wantA, wantB map[int64]bank.Cents // balances the sagas account for
	started      map[string]bool
}

// load reads the sagas, the barrier rows and the balances.
func load(ctx context.Context, cfg *Config) (*checker, error) {
	c := &checker{cfg: cfg, r: &Report{Transfers: len(cfg.Transfers)}, started: make(map[string]bool, len(cfg.Transfers))}
	var err error
	if c.states, err = readStates(ctx, cfg.Client, cfg.Transfers, cfg.Concurrency); err != nil {
		return nil, err
	}
	for _, b := range []struct {
		name string
		pool *pgxpool.Pool
		rows *map[rowKey]stepRows
		bal  *map[int64]bank.Cents
	}{{bank.BankA, cfg.BankA, &c.rowsA, &c.balA}, {bank.BankB, cfg.BankB, &c.rowsB, &c.balB}} {
		if *b.rows, err = barrierRows(ctx, b.pool); err != nil {
			return nil, fmt.Errorf("invariants: %s: %w", b.name, err)
		}
		if *b.bal, err = balances(ctx, b.pool); err != nil {
			return nil, fmt.Errorf("invariants: %s: %w", b.name, err)
		}
	}
	c.wantA, c.wantB = maps.Clone(cfg.InitialA), maps.Clone(cfg.InitialB)
	if c.wantA == nil {
		c.wantA = map[int64]bank.Cents{}
	}
	if c.wantB == nil {
		c.wantB = map[int64]bank.Cents{}
	}
	for _, m := range []map[int64]bank.Cents{cfg.InitialA, cfg.InitialB} {
		for _, cents := range m {
			c.r.TotalBefore += cents
		}
	}
	for i := range cfg.Transfers {
		c.started[cfg.Transfers[i].ID] = true
	}
	return c, nil
}

func (c *checker) fail(format string, args ...any) { c.r.violate(c.cfg.MaxViolations, format, args...) }

// leg is one step of a transfer as the check sees it: the bank, the step's
// state in the saga and the bank's barrier rows for it.
type leg struct {
	bank  string
	state orchestrator.StepState
	rows  stepRows
}

// transfer checks one transfer against its saga's state st (nil: none) and
// the barrier rows, and accounts for the money it moved.
func (c *checker) transfer(t *Transfer, st *orchestrator.State) {
	r := c.r
	debit, credit := c.rowsA[rowKey{t.ID, DebitStep}], c.rowsB[rowKey{t.ID, CreditStep}]
	for _, rows := range []stepRows{debit, credit} {
		if rows.do == participants.BarrierVoided {
			r.VoidedActions++
		}
	}
	what := fmt.Sprintf("saga %s (%s from %s:%d to %s:%d)", t.ID, t.Amount, bank.BankA, t.From, bank.BankB, t.To)
	var debitApplied, creditApplied bool
	switch {
	case st == nil && c.cfg.AllowExpired && (t.Final == orchestrator.Committed || t.Final == orchestrator.Compensated):
		// Expired: the barrier rows must say what the load saw.
		r.Expired++
		applied := t.Final == orchestrator.Committed
		if debit.applied() != applied || credit.applied() != applied {
			c.fail("%s ended %s (its state has expired) but the barrier rows are %s debit %s, %s credit %s",
				what, t.Final, bank.BankA, debit, bank.BankB, credit)
		}
		debitApplied, creditApplied = applied, applied
	case st == nil && !t.Unacked:
		r.Missing++
		c.fail("%s: its start was acknowledged but no saga has this id", what)
	case st == nil:
		r.NotStarted++
		if debit != (stepRows{}) || credit != (stepRows{}) {
			c.fail("%s: never started (no saga has this id) yet the banks hold barrier rows: %s debit %s, %s credit %s",
				what, bank.BankA, debit, bank.BankB, credit)
		}
	default:
		if msg := planMismatch(st, t); msg != "" {
			c.fail("%s: the saga found by this id holds another plan: %s", what, msg)
			return
		}
		legs := []leg{{bank.BankA, stepState(st, DebitStep), debit}, {bank.BankB, stepState(st, CreditStep), credit}}
		debitApplied, creditApplied = c.saga(what, st, legs)
		if debitApplied != creditApplied && st.Status == orchestrator.Parked {
			if debitApplied {
				r.InFlight += t.Amount
			} else {
				r.InFlight -= t.Amount
			}
		}
	}
	if debitApplied {
		c.wantA[t.From] -= t.Amount
	}
	if creditApplied {
		c.wantB[t.To] += t.Amount
	}
}

// saga checks a transfer's saga and its legs; it returns whether each leg's
// action is in effect.
func (c *checker) saga(what string, st *orchestrator.State, legs []leg) (debitApplied, creditApplied bool) {
	r := c.r
	switch st.Status {
	case orchestrator.Committed:
		r.Committed++
		for _, l := range legs {
			if l.state.Status != orchestrator.StepSucceeded {
				c.fail("%s is committed but its step %s is %s", what, l.state.Name, l.state.Status)
			}
			if !l.rows.applied() {
				c.fail("%s is committed but %s's barrier rows for %s are %s: the action was not applied exactly once",
					what, l.bank, l.state.Name, l.rows)
			}
		}
		return true, true
	case orchestrator.Compensated:
		r.Compensated++
		for _, l := range legs {
			if msg := compensatedStep(l.state, l.rows); msg != "" {
				c.fail("%s is compensated but at %s %s", what, l.bank, msg)
			}
		}
		return false, false
	case orchestrator.Parked:
		if !c.cfg.AllowParked {
			r.NotTerminal++
			c.fail("%s is parked (%s), which this run does not allow", what, st.Reason)
			return false, false
		}
		if st.Reason == "" {
			c.fail("%s is parked without a reason", what)
		}
		r.Parked++
		r.ParkedSagas = append(r.ParkedSagas, ParkedSaga{ID: st.SagaID, Reason: st.Reason})
		return legs[0].rows.applied(), legs[1].rows.applied()
	default:
		r.NotTerminal++
		c.fail("%s is %s, not terminal (reason %q)", what, st.Status, st.Reason)
		return false, false
	}
}

// stepState returns the saga's state of the named step (planMismatch made
// sure it exists).
func stepState(st *orchestrator.State, name string) orchestrator.StepState {
	for _, s := range st.Steps {
		if s.Name == name {
			return s
		}
	}
	return orchestrator.StepState{Name: name}
}

// unplannedRows checks the rows that no planned step explains: forged
// commands, or steps of a saga at the wrong bank. None may have taken
// effect.
func (c *checker) unplannedRows() {
	for _, b := range []struct {
		name string
		rows map[rowKey]stepRows
		step string
	}{{bank.BankA, c.rowsA, DebitStep}, {bank.BankB, c.rowsB, CreditStep}} {
		for _, k := range sortedKeys(b.rows) {
			if c.started[k.saga] && k.step == b.step {
				continue
			}
			if !c.started[k.saga] {
				c.r.ForeignRows++
			}
			if s := b.rows[k]; s.do == participants.BarrierSucceeded {
				c.fail("%s: barrier rows %s for saga %s step %s, which no started transfer runs there: an unplanned action took effect",
					b.name, s, k.saga, k.step)
			}
		}
	}
}

// balances compares every account with what the sagas account for, and
// the banks' total with the total before (less what parked sagas hold).
func (c *checker) balances() {
	r := c.r
	for _, b := range []struct {
		name      string
		got, want map[int64]bank.Cents
	}{{bank.BankA, c.balA, c.wantA}, {bank.BankB, c.balB, c.wantB}} {
		for _, id := range sortedIDs(b.want) {
			got, ok := b.got[id]
			switch {
			case !ok:
				c.fail("%s: account %d has disappeared", b.name, id)
			case got != b.want[id]:
				c.fail("%s: account %d holds %s, the sagas say %s (off by %s)", b.name, id, got, b.want[id], got-b.want[id])
			}
		}
		for _, id := range sortedIDs(b.got) {
			r.TotalAfter += b.got[id]
			if _, ok := b.want[id]; !ok {
				c.fail("%s: account %d (balance %s) did not exist before the load", b.name, id, b.got[id])
			}
			if b.got[id] < 0 {
				c.fail("%s: account %d is negative: %s", b.name, id, b.got[id])
			}
		}
	}
	if want := r.TotalBefore - r.InFlight; r.TotalAfter != want {
		c.fail("money not conserved: the banks hold %s in all, want %s (%s before, %s in flight in parked sagas)",
			r.TotalAfter, want, r.TotalBefore, r.InFlight)
	}
}

// compensatedStep checks one step of a compensated saga against its barrier
// rows: the step must have left no effect, in a way its rows confirm.
func compensatedStep(s orchestrator.StepState, rows stepRows) string {
	switch s.Status {
	case orchestrator.StepCompensated:
		if !rows.undo || rows.do == "" {
			return fmt.Sprintf("step %s is compensated while its barrier rows are %s", s.Name, rows)
		}
	case orchestrator.StepFailed, orchestrator.StepPending:
		// Never compensated: the action must have had no effect (a failed
		// or rejected action rolled back; a forged command may have left a
		// rejected row on a step that never ran).
		if rows.do == participants.BarrierSucceeded || rows.do == participants.BarrierVoided || rows.undo {
			return fmt.Sprintf("step %s is %s (no compensation sent) while its barrier rows are %s", s.Name, s.Status, rows)
		}
	default:
		return fmt.Sprintf("step %s is %s", s.Name, s.Status)
	}
	if rows.applied() {
		return fmt.Sprintf("step %s's action is still in effect: %s", s.Name, rows)
	}
	return ""
}

// planMismatch compares the plan stored with a saga with the transfer.
func planMismatch(st *orchestrator.State, t *Transfer) string {
	if st.Plan == nil || len(st.Plan.Steps) != 2 || len(st.Steps) != 2 {
		return fmt.Sprintf("status %s, not the two steps of a transfer", st.Status)
	}
	for i, want := range []struct {
		step, participant string
		req               bank.TransferReq
	}{{DebitStep, bank.BankA, bank.TransferReq{UserID: t.From, Amount: t.Amount}},
		{CreditStep, bank.BankB, bank.TransferReq{UserID: t.To, Amount: t.Amount}}} {
		def := st.Plan.Steps[i]
		if def.Name != want.step || def.Participant != want.participant || st.Steps[i].Name != want.step {
			return fmt.Sprintf("step %d is %s at %s, want %s at %s", i, def.Name, def.Participant, want.step, want.participant)
		}
		var req bank.TransferReq
		if err := json.Unmarshal(def.Payload, &req); err != nil {
			return fmt.Sprintf("step %s's payload: %v", def.Name, err)
		}
		if req != want.req {
			return fmt.Sprintf("step %s moves %s on account %d, want %s on %d", def.Name, req.Amount, req.UserID, want.req.Amount, want.req.UserID)
		}
	}
	return ""
}

// readStates reads each transfer's saga state; nil where none exists.
func readStates(ctx context.Context, c *orchestrator.Client, ts []Transfer, workers int) ([]*orchestrator.State, error) {
	out := make([]*orchestrator.State, len(ts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range ts {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			st, err := get(gctx, c, ts[i].ID)
			switch {
			case errors.Is(err, orchestrator.ErrNotFound):
			case err != nil:
				return fmt.Errorf("invariants: read saga %s: %w", ts[i].ID, err)
			default:
				out[i] = st
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return out, err
	}
	return out, ctx.Err()
}

// Reading one state: each try has its own deadline (a request whose reply
// is lost would otherwise wait for the caller's), and a failed try is
// repeated a few times.
const (
	getTimeout = 10 * time.Second
	getTries   = 3
)

// get reads one saga's state.
func get(ctx context.Context, c *orchestrator.Client, id string) (*orchestrator.State, error) {
	var err error
	for try := 0; try < getTries && ctx.Err() == nil; try++ {
		tctx, cancel := context.WithTimeout(ctx, getTimeout)
		var st *orchestrator.State
		st, err = c.Get(tctx, id)
		cancel()
		if err == nil || errors.Is(err, orchestrator.ErrNotFound) {
			return st, err
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, err
}

// barrierRows reads a bank's barrier table.
func barrierRows(ctx context.Context, pool *pgxpool.Pool) (map[rowKey]stepRows, error) {
	rows, err := participants.ReadBarrier(ctx, pool, participants.BarrierQuery{})
	if err != nil {
		return nil, err
	}
	out := map[rowKey]stepRows{}
	for _, row := range rows {
		k := rowKey{row.SagaID, row.Step}
		s := out[k]
		if row.Op == events.OpUndo {
			s.undo = row.Status == participants.BarrierCompensated
		} else {
			s.do = row.Status
		}
		out[k] = s
	}
	return out, nil
}

// balances reads a bank's balances, in cents.
func balances(ctx context.Context, pool *pgxpool.Pool) (map[int64]bank.Cents, error) {
	return bank.Balances(ctx, pool)
}

// Balances returns every account's balance of a bank: what Config.InitialA
// or InitialB wants, read before a load.
func Balances(ctx context.Context, pool *pgxpool.Pool) (map[int64]bank.Cents, error) {
	m, err := balances(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("invariants: %w", err)
	}
	return m, nil
}

func sortedIDs(m map[int64]bank.Cents) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func sortedKeys(m map[rowKey]stepRows) []rowKey {
	keys := make([]rowKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].saga != keys[j].saga {
			return keys[i].saga < keys[j].saga
		}
		return keys[i].step < keys[j].step
	})
	return keys
}
