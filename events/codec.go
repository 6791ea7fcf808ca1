package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// decodeStrict parses one JSON object into v, rejecting unknown fields,
// trailing data and oversized input. v must have an int field tagged "v",
// read back through version. The common case parses once; only a message
// that fails is parsed again to tell a version problem from the rest.
func decodeStrict(data []byte, v any, version func() int) error {
	if len(data) > MaxMessageBytes {
		return fieldErr("", "message is %d bytes, the limit is %d", len(data), MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = fieldErr("", "trailing data after the JSON object")
	}
	if err == nil && version() == Version {
		return nil
	}
	var probe struct {
		V *int `json:"v"`
	}
	if perr := json.Unmarshal(data, &probe); perr != nil {
		return fieldErr("", "not a JSON object: %v", perr)
	}
	if probe.V == nil {
		return fieldErr("v", "missing (the protocol version, %d)", Version)
	}
	if *probe.V != Version {
		return &versionError{got: *probe.V}
	}
	if _, ok := err.(*FieldError); ok {
		return err
	}
	return fieldErr("", "%v", err)
}

// normRaw compacts a raw JSON document so that equal meanings have equal
// bytes, treats null as absent, and checks its size.
// checkRaw checks a JSON document without changing it.
func checkRaw(field string, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	if len(raw) > MaxPayloadBytes {
		return fieldErr(field, "is %d bytes, the limit is %d", len(raw), MaxPayloadBytes)
	}
	if !json.Valid(raw) {
		var b bytes.Buffer
		err := json.Compact(&b, raw)
		return fieldErr(field, "is not valid JSON: %v", err)
	}
	return nil
}

func normRaw(field string, raw *json.RawMessage) error {
	if len(*raw) == 0 {
		return nil
	}
	if len(*raw) > MaxPayloadBytes {
		return fieldErr(field, "is %d bytes, the limit is %d", len(*raw), MaxPayloadBytes)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, *raw); err != nil {
		return fieldErr(field, "is not valid JSON: %v", err)
	}
	if b.String() == "null" {
		*raw = nil
		return nil
	}
	*raw = b.Bytes()
	return nil
}

func checkReason(field, reason string, required bool) error {
	if required && reason == "" {
		return fieldErr(field, "missing")
	}
	if len(reason) > MaxReasonBytes {
		return fieldErr(field, "is %d bytes, the limit is %d", len(reason), MaxReasonBytes)
	}
	return nil
}

// DecodeStart parses and validates a start message. The result is
// normalised: every step's After is explicit, raw documents are compacted.
func DecodeStart(data []byte) (Start, error) {
	var w struct {
		Start
		Steps []struct {
			Step
			After *[]string `json:"after"`
		} `json:"steps"`
	}
	if err := decodeStrict(data, &w, func() int { return w.V }); err != nil {
		return Start{}, err
	}
	s := w.Start
	s.Steps = make([]Step, len(w.Steps))
	for i, ws := range w.Steps {
		st := ws.Step
		switch {
		case ws.After != nil:
			st.After = *ws.After
			if st.After == nil {
				st.After = []string{}
			}
		case i > 0:
			st.After = []string{w.Steps[i-1].Name}
		default:
			st.After = []string{}
		}
		s.Steps[i] = st
	}
	if err := s.normalize(); err != nil {
		return Start{}, err
	}
	if err := s.Validate(); err != nil {
		return Start{}, err
	}
	return s, nil
}

// Encode validates and encodes a start message. Steps with a nil After are
// encoded as sequential (after the previous step).
func (s Start) Encode() ([]byte, error) {
	s.V = Version
	steps := make([]Step, len(s.Steps))
	for i, st := range s.Steps {
		if st.After == nil {
			if i > 0 {
				st.After = []string{s.Steps[i-1].Name}
			} else {
				st.After = []string{}
			}
		}
		steps[i] = st
	}
	s.Steps = steps
	if err := s.normalize(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// normalize makes a start canonical: kinds explicit, JSON documents
// (input, payloads) compact, "null" documents absent. It fails only on a
// document that is not valid JSON or is over the size limit.
func (s *Start) normalize() error {
	if err := normRaw("input", &s.Input); err != nil {
		return err
	}
	for i := range s.Steps {
		st := &s.Steps[i]
		if st.Kind == "" {
			st.Kind = Compensable
		}
		if err := normRaw("steps["+strconv.Itoa(i)+"].payload", &st.Payload); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a start message without changing it: version, ids,
// names, limits, step kinds, documents, dependencies (known, not self, no
// duplicates, no cycles) and the taxonomy rule that every compensable step
// precedes every step without compensation and retriable steps follow the
// pivot. Steps must have an explicit After (as DecodeStart and Encode make
// them); an empty kind counts as compensable.
func (s *Start) Validate() error {
	if err := s.checkHeader(); err != nil {
		return err
	}
	index := make(map[string]int, len(s.Steps))
	pivots := 0
	for i := range s.Steps {
		if err := s.checkStep(i, index, &pivots); err != nil {
			return err
		}
		index[s.Steps[i].Name] = i
	}
	if err := s.checkDependencies(index); err != nil {
		return err
	}
	anc, err := s.ancestors(index)
	if err != nil {
		return err
	}
	return s.checkTaxonomy(anc)
}

// checkHeader checks what a start says besides its steps.
func (s *Start) checkHeader() error {
	if s.V != Version {
		return &versionError{got: s.V}
	}
	if err := checkToken("saga_id", s.SagaID); err != nil {
		return err
	}
	if err := checkToken("name", s.Name); err != nil {
		return err
	}
	if err := checkRaw("input", s.Input); err != nil {
		return err
	}
	if s.DeadlineMS < 0 {
		return fieldErr("deadline_ms", "is %d, must be >= 0", s.DeadlineMS)
	}
	if len(s.Steps) == 0 {
		return fieldErr("steps", "a saga needs at least one step")
	}
	if len(s.Steps) > MaxSteps {
		return fieldErr("steps", "has %d steps, the limit is %d", len(s.Steps), MaxSteps)
	}
	return nil
}

// checkStep checks step i on its own; index holds the steps before it and
// pivots counts their pivots.
func (s *Start) checkStep(i int, index map[string]int, pivots *int) error {
	st := &s.Steps[i]
	f := "steps[" + strconv.Itoa(i) + "]"
	if err := checkToken(f+".name", st.Name); err != nil {
		return err
	}
	if j, dup := index[st.Name]; dup {
		return fieldErr(f+".name", "%q is also the name of steps[%d]", st.Name, j)
	}
	if err := checkToken(f+".participant", st.Participant); err != nil {
		return err
	}
	if err := checkToken(f+".action", st.Action); err != nil {
		return err
	}
	switch st.kind() {
	case Compensable:
		if st.Compensation == "" {
			return fieldErr(f+".compensation", "missing: a compensable step needs one (or set kind to %q or %q)", Pivot, Retriable)
		}
		if err := checkToken(f+".compensation", st.Compensation); err != nil {
			return err
		}
	case Pivot, Retriable:
		if st.Compensation != "" {
			return fieldErr(f+".compensation", "a %s step has no compensation", st.Kind)
		}
		if st.CompensateFailed {
			return fieldErr(f+".compensate_failed", "a %s step has no compensation", st.Kind)
		}
		if st.Kind == Pivot {
			if *pivots++; *pivots > 1 {
				return fieldErr(f+".kind", "a plan has at most one pivot step")
			}
		}
	default:
		return fieldErr(f+".kind", "unknown kind %q (want %q, %q or %q)", st.Kind, Compensable, Pivot, Retriable)
	}
	if err := checkRaw(f+".payload", st.Payload); err != nil {
		return err
	}
	if st.TimeoutMS < NoTimeout {
		return fieldErr(f+".timeout_ms", "is %d, must be >= 0, or -1 for no timeout", st.TimeoutMS)
	}
	if st.Retry != nil {
		if err := st.Retry.validate(f + ".retry"); err != nil {
			return err
		}
	}
	if st.After == nil {
		return fieldErr(f+".after", "missing")
	}
	return nil
}

// kind is the step's kind, compensable when empty.
func (s *Step) kind() StepKind {
	if s.Kind == "" {
		return Compensable
	}
	return s.Kind
}

// checkDependencies checks that every step waits for known, other steps,
// each once.
func (s *Start) checkDependencies(index map[string]int) error {
	for i, st := range s.Steps {
		seen := make(map[string]bool, len(st.After))
		for k, dep := range st.After {
			f := fmt.Sprintf("steps[%d].after[%d]", i, k)
			if _, ok := index[dep]; !ok {
				return fieldErr(f, "names unknown step %q", dep)
			}
			if dep == st.Name {
				return fieldErr(f, "step %q cannot wait for itself", dep)
			}
			if seen[dep] {
				return fieldErr(f, "names %q twice", dep)
			}
			seen[dep] = true
		}
	}
	return nil
}

// checkTaxonomy checks, given every step's ancestors, that steps without
// compensation come after every compensable step, and retriable steps
// after the pivot.
func (s *Start) checkTaxonomy(anc [][]bool) error {
	pivot := -1
	for i, st := range s.Steps {
		if st.kind() == Pivot {
			pivot = i
		}
	}
	for i, st := range s.Steps {
		if st.kind() == Compensable {
			continue
		}
		for j, c := range s.Steps {
			if c.kind() == Compensable && !anc[i][j] {
				return fieldErr(fmt.Sprintf("steps[%d].after", i),
					"%s step %q must wait (directly or not) for compensable step %q: a compensable step cannot run after or beside one without compensation",
					st.Kind, st.Name, c.Name)
			}
		}
		if st.kind() == Retriable && pivot >= 0 && !anc[i][pivot] {
			return fieldErr(fmt.Sprintf("steps[%d].after", i),
				"retriable step %q must wait (directly or not) for the pivot %q", st.Name, s.Steps[pivot].Name)
		}
	}
	return nil
}

// ancestors returns, per step, the set of steps it transitively waits for, or
// a FieldError naming a cycle.
func (s *Start) ancestors(index map[string]int) ([][]bool, error) {
	n := len(s.Steps)
	anc := make([][]bool, n)
	state := make([]byte, n) // 0 new, 1 visiting, 2 done
	var visit func(i int, path []int) error
	visit = func(i int, path []int) error {
		switch state[i] {
		case 2:
			return nil
		case 1:
			names := ""
			start := 0
			for k, p := range path {
				if p == i {
					start = k
				}
			}
			for _, p := range path[start:] {
				names += s.Steps[p].Name + " -> "
			}
			return fieldErr(fmt.Sprintf("steps[%d].after", i), "dependency cycle: %s%s", names, s.Steps[i].Name)
		}
		state[i] = 1
		anc[i] = make([]bool, n)
		for _, dep := range s.Steps[i].After {
			j := index[dep]
			if err := visit(j, append(path, i)); err != nil {
				return err
			}
			anc[i][j] = true
			for k, a := range anc[j] {
				if a {
					anc[i][k] = true
				}
			}
		}
		state[i] = 2
		return nil
	}
	for i := range s.Steps {
		if err := visit(i, nil); err != nil {
			return nil, err
		}
	}
	return anc, nil
}

func (r RetryPolicy) validate(f string) error {
	if r.MaxAttempts < 1 || r.MaxAttempts > 1000 {
		return fieldErr(f+".max_attempts", "is %d, must be 1..1000", r.MaxAttempts)
	}
	if r.InitialBackoffMS < 0 {
		return fieldErr(f+".initial_backoff_ms", "is %d, must be >= 0", r.InitialBackoffMS)
	}
	if r.MaxBackoffMS < r.InitialBackoffMS {
		return fieldErr(f+".max_backoff_ms", "is %d, must be >= initial_backoff_ms (%d)", r.MaxBackoffMS, r.InitialBackoffMS)
	}
	return nil
}

// DecodeCommand parses and validates a command.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if err := decodeStrict(data, &c, func() int { return c.V }); err != nil {
		return Command{}, err
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Encode validates and encodes a command.
func (c Command) Encode() ([]byte, error) {
	c.V = Version
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// Validate checks a command and normalises its payload.
func (c *Command) Validate() error {
	if c.V != Version {
		return &versionError{got: c.V}
	}
	for _, f := range []struct{ name, v string }{
		{"saga_id", c.SagaID}, {"participant", c.Participant}, {"step", c.Step}, {"action", c.Action},
	} {
		if err := checkToken(f.name, f.v); err != nil {
			return err
		}
	}
	if err := checkOp("op", c.Op); err != nil {
		return err
	}
	if c.Attempt < 1 {
		return fieldErr("attempt", "is %d, must be >= 1", c.Attempt)
	}
	if err := c.Retry.validate("retry"); err != nil {
		return err
	}
	return normRaw("payload", &c.Payload)
}

func checkOp(field string, op Op) error {
	switch op {
	case OpDo, OpUndo:
		return nil
	case "":
		return fieldErr(field, "missing (want %q or %q)", OpDo, OpUndo)
	}
	return fieldErr(field, "unknown op %q (want %q or %q)", op, OpDo, OpUndo)
}

// DecodeOutcome parses and validates an outcome.
func DecodeOutcome(data []byte) (Outcome, error) {
	var o Outcome
	if err := decodeStrict(data, &o, func() int { return o.V }); err != nil {
		return Outcome{}, err
	}
	if err := o.Validate(); err != nil {
		return Outcome{}, err
	}
	return o, nil
}

// Encode validates and encodes an outcome.
func (o Outcome) Encode() ([]byte, error) {
	o.V = Version
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(o)
}

// Validate checks an outcome: the status must fit the op (succeeded and
// failed answer do, compensated answers undo, rejected and exhausted either),
// failures carry a reason.
func (o *Outcome) Validate() error {
	if o.V != Version {
		return &versionError{got: o.V}
	}
	if err := checkToken("saga_id", o.SagaID); err != nil {
		return err
	}
	if err := checkToken("participant", o.Participant); err != nil {
		return err
	}
	switch o.Status {
	case Succeeded, Failed, Compensated, Rejected, Exhausted:
	case "":
		return fieldErr("status", "missing")
	default:
		return fieldErr("status", "unknown status %q", o.Status)
	}
	anonymous := o.Status == Rejected && o.Step == "" && o.Op == "" && o.Attempt == 0
	if !anonymous {
		if err := checkToken("step", o.Step); err != nil {
			return err
		}
		if err := checkOp("op", o.Op); err != nil {
			return err
		}
		if o.Attempt < 1 {
			return fieldErr("attempt", "is %d, must be >= 1", o.Attempt)
		}
		switch {
		case o.Op == OpDo && o.Status == Compensated:
			return fieldErr("status", "%q does not answer op %q", o.Status, o.Op)
		case o.Op == OpUndo && (o.Status == Succeeded || o.Status == Failed):
			return fieldErr("status", "%q does not answer op %q", o.Status, o.Op)
		}
	}
	needReason := o.Status == Failed || o.Status == Rejected || o.Status == Exhausted
	if err := checkReason("reason", o.Reason, needReason); err != nil {
		return err
	}
	return normRaw("result", &o.Result)
}

// DecodeTick parses and validates a tick.
func DecodeTick(data []byte) (Tick, error) {
	var t Tick
	if err := decodeStrict(data, &t, func() int { return t.V }); err != nil {
		return Tick{}, err
	}
	if err := t.Validate(); err != nil {
		return Tick{}, err
	}
	return t, nil
}

// Encode validates and encodes a tick.
func (t Tick) Encode() ([]byte, error) {
	t.V = Version
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(t)
}

// Validate checks a tick.
func (t *Tick) Validate() error {
	if t.V != Version {
		return &versionError{got: t.V}
	}
	if err := checkToken("saga_id", t.SagaID); err != nil {
		return err
	}
	if t.DueMS <= 0 {
		return fieldErr("due_ms", "is %d, must be a Unix time in milliseconds", t.DueMS)
	}
	return nil
}

// DecodeControl parses and validates an operator action.
func DecodeControl(data []byte) (Control, error) {
	var c Control
	if err := decodeStrict(data, &c, func() int { return c.V }); err != nil {
		return Control{}, err
	}
	if err := c.Validate(); err != nil {
		return Control{}, err
	}
	return c, nil
}

// Encode validates and encodes an operator action.
func (c Control) Encode() ([]byte, error) {
	c.V = Version
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// Validate checks an operator action: skip names a step, resolve has a note.
func (c *Control) Validate() error {
	if c.V != Version {
		return &versionError{got: c.V}
	}
	if err := checkToken("saga_id", c.SagaID); err != nil {
		return err
	}
	if err := checkToken("id", c.ID); err != nil {
		return err
	}
	switch c.Action {
	case Redrive:
	case Skip:
		if err := checkToken("step", c.Step); err != nil {
			return err
		}
	case Resolve:
		if err := checkReason("note", c.Note, true); err != nil {
			return err
		}
	case "":
		return fieldErr("action", "missing")
	default:
		return fieldErr("action", "unknown action %q (want %q, %q or %q)", c.Action, Redrive, Skip, Resolve)
	}
	if c.Step != "" {
		if err := checkToken("step", c.Step); err != nil {
			return err
		}
	}
	if err := checkReason("note", c.Note, false); err != nil {
		return err
	}
	return checkReason("by", c.By, false)
}
