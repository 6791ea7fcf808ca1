package console

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// The pictures are inline SVG built by the templates from the geometry
// computed here: no script draws them, and the CSP allows no inline style,
// so colours come from classes in app.css.

// planChart is a saga's plan: one box per step, in columns by depth (a
// step's column is one more than that of the deepest step it waits for),
// and an arrow from each step to the steps that wait for it.
type planChart struct {
	Width, Height int
	Boxes         []planBox
	Edges         []string // SVG path data
}

type planBox struct {
	X, Y, W, H           int
	Name, Sub, Status    string
	Kind                 events.StepKind
	Stuck                bool
	TextX, Line1, Line2  int
	Line3                int
	Participant, Action  string
	Compensation, Detail string
}

const (
	boxW, boxH   = 190, 62
	colGap       = 60
	rowGap       = 18
	chartPadding = 10
)

func newPlanChart(st *orchestrator.State) planChart {
	var steps []events.Step
	if st.Plan != nil {
		steps = st.Plan.Steps
	}
	index := map[string]int{}
	for i, s := range steps {
		index[s.Name] = i
	}
	deps := make([][]int, len(steps))
	for i, s := range steps {
		after := s.After
		if after == nil && i > 0 { // absent: the previous step
			after = []string{steps[i-1].Name}
		}
		for _, a := range after {
			if j, ok := index[a]; ok && j != i {
				deps[i] = append(deps[i], j)
			}
		}
	}
	depth := make([]int, len(steps))
	for range steps { // relax: a plan is a DAG, so len(steps) rounds settle it
		for i := range steps {
			for _, j := range deps[i] {
				depth[i] = max(depth[i], depth[j]+1)
			}
		}
	}
	status := map[string]orchestrator.StepState{}
	for _, s := range st.Steps {
		status[s.Name] = s
	}
	rows := map[int]int{}
	c := planChart{}
	for i, s := range steps {
		col, row := depth[i], rows[depth[i]]
		rows[col]++
		x := chartPadding + col*(boxW+colGap)
		y := chartPadding + row*(boxH+rowGap)
		ss := status[s.Name]
		kind := s.Kind
		if kind == "" {
			kind = events.Compensable
		}
		b := planBox{X: x, Y: y, W: boxW, H: boxH, Name: s.Name, Status: string(ss.Status), Kind: kind, Stuck: ss.Stuck,
			TextX: x + 10, Line1: y + 20, Line2: y + 37, Line3: y + 53, Participant: s.Participant, Action: s.Action,
			Compensation: s.Compensation}
		b.Sub = s.Participant + " · " + s.Action
		b.Detail = string(ss.Status)
		if ss.Attempt > 1 {
			b.Detail += " · attempt " + strconv.Itoa(ss.Attempt)
		}
		if kind != events.Compensable {
			b.Detail += " · " + string(kind)
		}
		if ss.Stuck {
			b.Detail += " · stuck"
		}
		c.Boxes = append(c.Boxes, b)
		c.Width = max(c.Width, x+boxW+chartPadding)
		c.Height = max(c.Height, y+boxH+chartPadding)
	}
	for i := range steps {
		to := c.Boxes[i]
		for _, j := range deps[i] {
			from := c.Boxes[j]
			x1, y1 := from.X+from.W, from.Y+from.H/2
			x2, y2 := to.X-6, to.Y+to.H/2
			mid := (x1 + x2) / 2
			c.Edges = append(c.Edges, fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x1, y1, mid, y1, mid, y2, x2, y2))
		}
	}
	if len(steps) == 0 {
		c.Width, c.Height = 200, 40
	}
	return c
}

// timelineChart is a saga's messages against time: per step, a bar from
// each command to its outcome (actions above, compensations below, coloured
// by the outcome), an open bar for a command without an outcome; on the
// saga's row the start, operator actions and rejected inputs; timer ticks
// as vertical lines.
type timelineChart struct {
	Width, Height int
	PlotX, PlotW  int
	Rows          []tlRow
	Bars          []tlBar
	Marks         []tlMark
	Ticks         []tlTick
	Axis          []tlAxis
	AxisY         int
	Span          string
}

type tlRow struct {
	Y, TextY int
	Label    string
	Odd      bool
}

type tlBar struct {
	X, Y, W, H          int
	Step, Op, Status    string
	Attempt             int
	Title               string
	Open                bool
	LabelX, LabelY      int
	Label               string
	ShowLabel           bool
	Command, OutcomeMsg string
}

type tlMark struct {
	X, Y         int
	Kind, Label  string
	Title        string
	LabelX       int
	Points       string
	Step, Action string
}

type tlTick struct {
	X, Y1, Y2 int
	Title     string
}

type tlAxis struct {
	X     int
	Label string
}

const (
	tlWidth  = 980
	tlLabelW = 150
	tlRowH   = 38
	tlTop    = 8
)

func newTimelineChart(st *orchestrator.State, tl []orchestrator.TimelineEntry, now time.Time) timelineChart {
	c := timelineChart{Width: tlWidth, PlotX: tlLabelW + 10, PlotW: tlWidth - tlLabelW - 30}
	rowOf := map[string]int{}
	c.Rows = append(c.Rows, tlRow{Label: "saga"})
	for _, s := range st.Steps {
		rowOf[s.Name] = len(c.Rows)
		c.Rows = append(c.Rows, tlRow{Label: s.Name})
	}
	for i := range c.Rows {
		c.Rows[i].Y = tlTop + i*tlRowH
		c.Rows[i].TextY = c.Rows[i].Y + tlRowH/2 + 4
		c.Rows[i].Odd = i%2 == 1
	}
	c.AxisY = tlTop + len(c.Rows)*tlRowH
	c.Height = c.AxisY + 28
	if len(tl) == 0 {
		return c
	}
	t0, tEnd := tl[0].Time, tl[len(tl)-1].Time
	if st.Status == orchestrator.Running || st.Status == orchestrator.Compensating {
		if now.After(tEnd) {
			tEnd = now // open bars reach the present
		}
	}
	span := tEnd.Sub(t0)
	span += span / 20
	span = max(span, 10*time.Millisecond)
	x := func(t time.Time) int {
		return c.PlotX + int(math.Round(float64(t.Sub(t0))/float64(span)*float64(c.PlotW)))
	}
	c.Span = offset(span)
	type key struct {
		step    string
		op      events.Op
		attempt int
	}
	open := map[key]int{} // → index in Bars
	for _, e := range tl {
		switch e.Kind {
		case events.KindStart:
			c.Marks = append(c.Marks, mark(x(e.Time), c.Rows[0].Y, "start", "start", "start "+e.Time.UTC().Format(time.RFC3339Nano), "", ""))
		case events.KindCommand:
			cmd, err := events.DecodeCommand(e.Data)
			row, ok := rowOf[cmd.Step]
			if err != nil || !ok {
				continue
			}
			y := c.Rows[row].Y + 6
			if cmd.Op == events.OpUndo {
				y += 14
			}
			b := tlBar{X: x(e.Time), Y: y, H: 11, Step: cmd.Step, Op: string(cmd.Op), Attempt: cmd.Attempt, Open: true,
				Status: "open", Command: e.Summary}
			// A step's next command ends the attempt before it that got no
			// outcome (it timed out, or was given up).
			for k, i := range open {
				if k.step == cmd.Step {
					c.Bars[i].W = max(x(e.Time)-c.Bars[i].X, 3)
					delete(open, k)
				}
			}
			open[key{cmd.Step, cmd.Op, cmd.Attempt}] = len(c.Bars)
			c.Bars = append(c.Bars, b)
		case events.KindEvent:
			o, err := events.DecodeOutcome(e.Data)
			if err != nil {
				continue
			}
			k := key{o.Step, o.Op, o.Attempt}
			i, ok := open[k]
			if !ok {
				if row, ok := rowOf[o.Step]; ok { // an outcome without its command: a point
					c.Marks = append(c.Marks, mark(x(e.Time), c.Rows[row].Y, "stray", "", e.Summary, o.Step, ""))
				}
				continue
			}
			delete(open, k)
			b := &c.Bars[i]
			b.Open, b.Status, b.OutcomeMsg = false, string(o.Status), e.Summary
			b.W = max(x(e.Time)-b.X, 3)
		case events.KindTick:
			c.Ticks = append(c.Ticks, tlTick{X: x(e.Time), Y1: tlTop, Y2: c.AxisY, Title: "timer tick at +" + offset(e.Time.Sub(t0)) + ": " + e.Summary})
		case events.KindControl:
			ctl, err := events.DecodeControl(e.Data)
			if err != nil {
				continue
			}
			title := e.Summary
			if ctl.By != "" {
				title += " (by " + ctl.By + ")"
			}
			c.Marks = append(c.Marks, mark(x(e.Time), c.Rows[0].Y, "control", string(ctl.Action), title, ctl.Step, string(ctl.Action)))
		}
	}
	end := x(tEnd)
	for _, i := range open {
		c.Bars[i].W = max(end-c.Bars[i].X, 3)
	}
	for i := range c.Bars {
		b := &c.Bars[i]
		what := "action"
		if b.Op == string(events.OpUndo) {
			what = "compensation"
		}
		b.Title = fmt.Sprintf("%s %s, attempt %d: %s", b.Step, what, b.Attempt, b.Status)
		if b.Open {
			b.Title = fmt.Sprintf("%s %s, attempt %d: no outcome", b.Step, what, b.Attempt)
		}
		b.Label = b.Status
		if b.Open {
			b.Label = "no outcome"
		}
		b.LabelX, b.LabelY = b.X+b.W+4, b.Y+10
		b.ShowLabel = b.LabelX < c.PlotX+c.PlotW-40
	}
	for _, r := range st.Rejections {
		if r.TimeMS == 0 {
			continue
		}
		c.Marks = append(c.Marks, mark(x(time.UnixMilli(r.TimeMS)), c.Rows[0].Y, "rejection", "rejected",
			fmt.Sprintf("rejected %s (seq %d): %s", r.Kind, r.Seq, r.Reason), "", ""))
	}
	for _, a := range axis(span) {
		c.Axis = append(c.Axis, tlAxis{X: x(t0.Add(a)), Label: "+" + offset(a)})
	}
	return c
}

func mark(x, rowY int, kind, label, title, step, action string) tlMark {
	y := rowY + tlRowH/2
	m := tlMark{X: x, Y: y, Kind: kind, Label: label, Title: title, LabelX: x + 7, Step: step, Action: action}
	switch kind {
	case "rejection": // a cross
		m.Points = fmt.Sprintf("M%d %d L%d %d M%d %d L%d %d", x-5, y-5, x+5, y+5, x-5, y+5, x+5, y-5)
	default: // a diamond
		m.Points = fmt.Sprintf("M%d %d L%d %d L%d %d L%d %d Z", x, y-6, x+6, y, x, y+6, x-6, y)
	}
	return m
}

// axis returns about six round offsets within span.
func axis(span time.Duration) []time.Duration {
	raw := float64(span) / 6
	step := time.Duration(1)
	for _, m := range []float64{1, 2, 5} {
		for p := 1.0; p < 1e15; p *= 10 {
			if d := time.Duration(m * p); d >= time.Duration(raw) && (step == 1 || d < step) {
				step = d
				break
			}
		}
	}
	var out []time.Duration
	for a := time.Duration(0); a <= span; a += step {
		out = append(out, a)
	}
	return out
}

// rateChart shows, for each of the last minutes, the sagas started and
// those that ended.
type rateChart struct {
	Width, Height, BaseY int
	Bars                 []rateBar
	Max                  int
}

type rateBar struct {
	X, W                int
	SY, SH, FY, FH      int
	LabelX, LabelY      int
	Label, Title        string
	Started, Finished   int
	ShowLabel           bool
	StartedX, FinishedX int
	StartedW, FinishedW int
}

func newRateChart(minutes []orchestrator.MinuteCount) rateChart {
	c := rateChart{Width: 600, Height: 150, BaseY: 120}
	for _, m := range minutes {
		c.Max = max(c.Max, m.Started, m.Finished)
	}
	if len(minutes) == 0 {
		return c
	}
	slot := (c.Width - 20) / len(minutes)
	h := func(n int) int {
		if c.Max == 0 {
			return 0
		}
		return int(math.Round(float64(n) / float64(c.Max) * 100))
	}
	for i, m := range minutes {
		x := 10 + i*slot
		w := max(slot/2-2, 2)
		b := rateBar{X: x, W: slot, StartedX: x + 1, StartedW: w, FinishedX: x + 1 + w + 1, FinishedW: w,
			Started: m.Started, Finished: m.Finished, LabelX: x + slot/2, LabelY: c.BaseY + 16,
			Label: m.Start.UTC().Format("15:04"), ShowLabel: i%max(len(minutes)/5, 1) == 0 || i == len(minutes)-1}
		b.SH, b.FH = h(m.Started), h(m.Finished)
		b.SY, b.FY = c.BaseY-b.SH, c.BaseY-b.FH
		b.Title = fmt.Sprintf("%s UTC: %d started, %d ended", b.Label, m.Started, m.Finished)
		c.Bars = append(c.Bars, b)
	}
	return c
}
