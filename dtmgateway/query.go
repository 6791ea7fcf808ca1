package dtmgateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// DTM's statuses.
const (
	StatusSubmitted = "submitted"
	StatusAborting  = "aborting"
	StatusSucceed   = "succeed"
	StatusFailed    = "failed"
	StatusPrepared  = "prepared" // branches
)

// dtmStatus maps a jetsaga saga status onto DTM's: running → submitted,
// compensating → aborting, committed → succeed, compensated and rejected
// → failed; a parked saga keeps the status of its direction (and says it
// is parked in extra fields).
func dtmStatus(st *orchestrator.State) string {
	s := st.Status
	if s == orchestrator.Parked {
		s = st.ParkedFrom
	}
	switch s {
	case orchestrator.Compensating:
		return StatusAborting
	case orchestrator.Committed:
		return StatusSucceed
	case orchestrator.Compensated, orchestrator.Rejected:
		return StatusFailed
	}
	return StatusSubmitted
}

// Transaction is DTM's trans_global row, as /query and /all return it,
// with jetsaga's own status and parking beside it.
type Transaction struct {
	ID             uint64              `json:"id,omitempty"`
	CreateTime     *time.Time          `json:"create_time,omitempty"`
	UpdateTime     *time.Time          `json:"update_time,omitempty"`
	Gid            string              `json:"gid"`
	TransType      string              `json:"trans_type"`
	Steps          []map[string]string `json:"steps,omitempty"`
	Payloads       []string            `json:"payloads,omitempty"`
	Status         string              `json:"status"`
	Protocol       string              `json:"protocol,omitempty"`
	FinishTime     *time.Time          `json:"finish_time,omitempty"`
	RollbackTime   *time.Time          `json:"rollback_time,omitempty"`
	RollbackReason string              `json:"rollback_reason,omitempty"`
	CustomData     string              `json:"custom_data,omitempty"`
	// Jetsaga's own: its status, and whether (and why) the saga is parked,
	// waiting for an operator (jetsaga redrive/skip/resolve).
	JetsagaStatus string `json:"jetsaga_status"`
	Parked        bool   `json:"parked,omitempty"`
	ParkedReason  string `json:"parked_reason,omitempty"`
}

// Branch is DTM's trans_branch_op row: two per step, compensate then action.
type Branch struct {
	Gid          string     `json:"gid"`
	URL          string     `json:"url"`
	BinData      []byte     `json:"bin_data,omitempty"`
	BranchID     string     `json:"branch_id"`
	Op           string     `json:"op"`
	Status       string     `json:"status"`
	FinishTime   *time.Time `json:"finish_time,omitempty"`
	RollbackTime *time.Time `json:"rollback_time,omitempty"`
	// JetsagaStatus is the step's status in jetsaga.
	JetsagaStatus string `json:"jetsaga_status"`
}

func msTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

// transaction describes a saga in DTM's shape.
func transaction(st *orchestrator.State) Transaction {
	t := Transaction{Gid: st.SagaID, TransType: "saga", Status: dtmStatus(st), Protocol: "http",
		CreateTime: msTime(st.StartedMS), UpdateTime: msTime(st.UpdatedMS), JetsagaStatus: string(st.Status)}
	if st.Plan != nil {
		var in planInput
		if json.Unmarshal(st.Plan.Input, &in) == nil {
			t.CustomData = in.DTM.CustomData
		}
		for _, s := range st.Plan.Steps {
			pl, err := httpparticipant.DecodePayload(s.Payload)
			if err != nil { // not an HTTP step: name its participant's actions
				t.Steps = append(t.Steps, map[string]string{"action": s.Participant + "/" + s.Action, "compensate": compName(s)})
				t.Payloads = append(t.Payloads, string(s.Payload))
				continue
			}
			t.Steps = append(t.Steps, map[string]string{"action": pl.Action, "compensate": pl.Compensate})
			t.Payloads = append(t.Payloads, pl.Body)
		}
	}
	switch st.Status {
	case orchestrator.Committed:
		t.FinishTime = msTime(st.UpdatedMS)
	case orchestrator.Compensated, orchestrator.Rejected:
		t.RollbackTime = msTime(st.UpdatedMS)
	}
	if st.Status == orchestrator.Parked {
		t.Parked, t.ParkedReason = true, st.Reason
	}
	if t.Status == StatusAborting || t.Status == StatusFailed {
		t.RollbackReason = st.Reason
	}
	return t
}

func compName(s events.Step) string {
	if s.Compensation == "" {
		return ""
	}
	return s.Participant + "/" + s.Compensation
}

// branches lists a saga's branches as DTM's SQL store does: per step, the
// compensation then the action, both with the step's branch id.
func branches(st *orchestrator.State) []Branch {
	out := []Branch{}
	if st.Plan == nil {
		return out
	}
	for i, def := range st.Plan.Steps {
		if i >= len(st.Steps) {
			break
		}
		ss := st.Steps[i]
		action, comp, id, body := def.Participant+"/"+def.Action, compName(def), def.Name, []byte(def.Payload)
		if pl, err := httpparticipant.DecodePayload(def.Payload); err == nil {
			action, comp, body = pl.Action, pl.Compensate, []byte(pl.Body)
			if pl.BranchID != "" {
				id = pl.BranchID
			}
		}
		if len(body) == 0 {
			body = nil
		}
		do, undo := branchStatuses(ss)
		out = append(out,
			Branch{Gid: st.SagaID, URL: comp, BinData: body, BranchID: id, Op: httpparticipant.CompensateName, Status: undo,
				RollbackTime: msTime(ss.UndoneMS), JetsagaStatus: string(ss.Status)},
			Branch{Gid: st.SagaID, URL: action, BinData: body, BranchID: id, Op: httpparticipant.ActionName, Status: do,
				FinishTime: msTime(ss.DoneMS), JetsagaStatus: string(ss.Status)})
	}
	return out
}

// branchStatuses maps a step's status onto its two DTM branches.
func branchStatuses(ss orchestrator.StepState) (do, undo string) {
	do, undo = StatusPrepared, StatusPrepared
	switch ss.Status {
	case orchestrator.StepSucceeded, orchestrator.StepSkipped:
		do = StatusSucceed
	case orchestrator.StepFailed, orchestrator.StepUnknown:
		do = StatusFailed
	case orchestrator.StepCompensating, orchestrator.StepCompensated:
		switch {
		case ss.Reason != "":
			do = StatusFailed
		case ss.DoneMS != 0:
			do = StatusSucceed
		}
		if ss.Status == orchestrator.StepCompensated {
			undo = StatusSucceed
		}
	}
	return do, undo
}

func (g *Gateway) query(w http.ResponseWriter, r *http.Request) {
	gid := r.URL.Query().Get("gid")
	if gid == "" {
		errorMessage(w, "no gid specified")
		return
	}
	st, err := g.client.Get(r.Context(), gid)
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
		writeJSON(w, http.StatusOK, map[string]any{"transaction": nil, "branches": []Branch{}})
		return
	case err != nil && strings.Contains(err.Error(), "saga id"):
		errorMessage(w, "gid: "+err.Error())
		return
	case err != nil:
		g.internal(w, "query", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"transaction": transaction(st), "branches": branches(st)})
}

// all lists sagas, newest first, paged: position is the opaque
// next_position of the previous page.
func (g *Gateway) all(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			errorMessage(w, fmt.Sprintf("limit: %q is not a number 1..10000", v))
			return
		}
		limit = n
	}
	var startMS, endMS int64
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"createTimeStart", &startMS}, {"createTimeEnd", &endMS}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				errorMessage(w, fmt.Sprintf("%s: %q is not a time in epoch milliseconds", f.name, v))
				return
			}
			*f.dst = n
		}
	}
	status := q.Get("status")
	switch status {
	case "", StatusSubmitted, StatusAborting, StatusSucceed, StatusFailed, StatusPrepared:
	default:
		errorMessage(w, fmt.Sprintf("status: %q is not one of submitted, aborting, succeed, failed", status))
		return
	}
	transType := q.Get("transType")
	var afterMS int64
	var afterID string
	pos := q.Get("position")
	if pos != "" {
		ms, id, ok := strings.Cut(pos, "_")
		n, err := strconv.ParseInt(ms, 10, 64)
		if !ok || err != nil {
			errorMessage(w, fmt.Sprintf("position: %q is not a next_position this gateway returned", pos))
			return
		}
		afterMS, afterID = n, id
	}
	gid := q.Get("gid")
	out := map[string]any{"transactions": []Transaction{}, "next_position": ""}
	if transType != "" && transType != "saga" {
		writeJSON(w, http.StatusOK, out) // jetsaga holds sagas only
		return
	}
	states, err := g.client.List(r.Context(), orchestrator.ListFilter{})
	if err != nil {
		g.internal(w, "all", err)
		return
	}
	sort.Slice(states, func(i, j int) bool {
		if states[i].StartedMS != states[j].StartedMS {
			return states[i].StartedMS > states[j].StartedMS
		}
		return states[i].SagaID > states[j].SagaID
	})
	var page []Transaction
	var lastMS int64
	next := ""
	for _, st := range states {
		if pos != "" && (st.StartedMS > afterMS || (st.StartedMS == afterMS && st.SagaID >= afterID)) {
			continue
		}
		if gid != "" && st.SagaID != gid {
			continue
		}
		if (startMS != 0 && st.StartedMS < startMS) || (endMS != 0 && st.StartedMS > endMS) {
			continue
		}
		t := transaction(st)
		if status != "" && t.Status != status {
			continue
		}
		if len(page) == limit {
			next = fmt.Sprintf("%d_%s", lastMS, page[len(page)-1].Gid)
			break
		}
		page = append(page, t)
		lastMS = st.StartedMS
	}
	if page != nil {
		out["transactions"] = page
	}
	out["next_position"] = next
	writeJSON(w, http.StatusOK, out)
}
