package dtmgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/jetsaga/jetsaga/orchestrator"
)

// Gateway serves DTM's server API (/api/dtmsvr/…) for sagas over a jetsaga
// deployment. It keeps no state of its own: run as many as you like.
type Gateway struct {
	cfg    Config
	client *orchestrator.Client
	log    *slog.Logger
}

// New checks cfg and returns a gateway. Close releases it.
func New(cfg Config) (*Gateway, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Gateway{cfg: c, client: orchestrator.NewClient(c.JetStream, c.Namespace), log: c.Logger}, nil
}

// Close stops the gateway's watch of the state bucket (waits in flight
// return).
func (g *Gateway) Close() { g.client.Close() }

// Handler returns the HTTP handler: /api/dtmsvr/… and /api/ping.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"msg": "pong"})
	})
	mux.HandleFunc("/api/dtmsvr/newGid", g.newGid)
	mux.HandleFunc("/api/dtmsvr/submit", g.submit)
	mux.HandleFunc("/api/dtmsvr/query", g.query)
	mux.HandleFunc("/api/dtmsvr/all", g.all)
	mux.HandleFunc("/api/dtmsvr/forceStop", g.forceStop)
	mux.HandleFunc("/api/dtmsvr/resetNextCronTime", g.resetNextCronTime)
	mux.HandleFunc("/api/dtmsvr/abort", func(w http.ResponseWriter, r *http.Request) {
		failure(w, "a saga cannot be aborted: it rolls back when a step fails or timeout_to_fail passes")
	})
	mux.HandleFunc("/api/dtmsvr/", func(w http.ResponseWriter, r *http.Request) {
		route := strings.TrimPrefix(r.URL.Path, "/api/dtmsvr/")
		errorMessage(w, fmt.Sprintf("/api/dtmsvr/%s is not supported by jetsaga: it runs sagas only (no tcc, xa, msg or workflow)", route))
	})
	return mux
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func success(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]string{"dtm_result": "SUCCESS"})
}

// failure is DTM's 409: a business failure.
func failure(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusConflict, map[string]string{"dtm_result": "FAILURE", "message": msg})
}

// errorMessage is DTM's 500 for a bad request or an internal error.
func errorMessage(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusInternalServerError, map[string]string{"message": msg})
}

func (g *Gateway) internal(w http.ResponseWriter, what string, err error) {
	g.log.Error("dtm gateway", "what", what, "err", err)
	errorMessage(w, what+": "+err.Error())
}

func (g *Gateway) newGid(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.NewV7()
	if err != nil {
		g.internal(w, "newGid", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"dtm_result": "SUCCESS", "gid": strings.ReplaceAll(id.String(), "-", "")})
}

// readBody reads a request body within MaxBodyBytes.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &badRequest{msg: fmt.Sprintf("request body: larger than %d bytes", g.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, &badRequest{msg: "request body: " + err.Error()}
	}
	return body, nil
}

var traceparentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// traceparent is the request's W3C trace context, or a new one.
func traceparent(r *http.Request) string {
	if tp := strings.TrimSpace(r.Header.Get("traceparent")); traceparentRE.MatchString(tp) {
		return tp
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

func (g *Gateway) submit(w http.ResponseWriter, r *http.Request) {
	body, err := g.readBody(w, r)
	if err != nil {
		errorMessage(w, err.Error())
		return
	}
	req, err := parseSubmit(body)
	if err != nil {
		errorMessage(w, err.Error())
		return
	}
	b, err := g.buildPlan(req, traceparent(r))
	if err != nil {
		errorMessage(w, err.Error())
		return
	}
	ctx := r.Context()
	// A finished gid cannot be submitted again (DTM: 409); a running one
	// is accepted again if it is the same saga.
	st, err := g.client.Get(ctx, req.Gid)
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
	case err != nil:
		g.internal(w, "submit: read the saga", err)
		return
	case st.Status.Terminal():
		failure(w, fmt.Sprintf("current status '%s', cannot submit. FAILURE", dtmStatus(st)))
		return
	}
	if _, err := g.client.Start(ctx, b.plan); err != nil {
		if errors.Is(err, orchestrator.ErrPlanConflict) {
			failure(w, fmt.Sprintf("gid %q is already used by a different saga", req.Gid))
			return
		}
		g.internal(w, "submit", err)
		return
	}
	if !req.WaitResult {
		success(w)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.WaitTimeout)
	defer cancel()
	st, err = g.client.Wait(wctx, req.Gid)
	switch {
	case err == nil && st.Status == orchestrator.Committed:
		success(w)
	case err == nil && st.Status.Terminal():
		failure(w, rollbackReason(st))
	case err == nil:
		failure(w, fmt.Sprintf("wait result not return success: the saga is parked (%s). FAILURE", st.Reason))
	case wctx.Err() != nil && ctx.Err() == nil:
		failure(w, fmt.Sprintf("wait result not return success: the saga is still %s after %s; query it. FAILURE", statusOf(st), g.cfg.WaitTimeout))
	default:
		g.internal(w, "submit: wait", err)
	}
}

func statusOf(st *orchestrator.State) string {
	if st == nil {
		return "submitted"
	}
	return dtmStatus(st)
}

func rollbackReason(st *orchestrator.State) string {
	if st.Reason != "" {
		return st.Reason + ". FAILURE"
	}
	return "wait result not return success: FAILURE"
}

// gidOf reads the gid of a request: ?gid= or a JSON body {"gid": …}.
func (g *Gateway) gidOf(w http.ResponseWriter, r *http.Request) (string, error) {
	if gid := r.URL.Query().Get("gid"); gid != "" {
		return gid, nil
	}
	body, err := g.readBody(w, r)
	if err != nil {
		return "", err
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		var v struct {
			Gid *string `json:"gid"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return "", &badRequest{msg: "request body: not a JSON object {\"gid\": …}: " + err.Error()}
		}
		if v.Gid != nil && *v.Gid != "" {
			return *v.Gid, nil
		}
	}
	return "", &badRequest{msg: "gid: missing"}
}

// target reads the saga an operator request names (?gid=), answering the
// request itself when it cannot.
func (g *Gateway) target(w http.ResponseWriter, r *http.Request) (string, *orchestrator.State, bool) {
	gid, err := g.gidOf(w, r)
	if err != nil {
		errorMessage(w, err.Error())
		return "", nil, false
	}
	st, ok := g.load(w, r, gid)
	return gid, st, ok
}

// forceStop: DTM makes the saga failed at once. jetsaga never drops a saga
// that may still act: a saga parked while compensating is resolved
// (compensated, the operator vouching for the rest); anything else that is
// not finished is refused with the reason.
func (g *Gateway) forceStop(w http.ResponseWriter, r *http.Request) {
	gid, st, ok := g.target(w, r)
	if !ok {
		return
	}
	switch {
	case st.Status.Terminal():
		failure(w, fmt.Sprintf("current status '%s', cannot forceStop. FAILURE", dtmStatus(st)))
	case st.Status == orchestrator.Parked && st.ParkedFrom == orchestrator.Compensating:
		if err := g.client.Resolve(r.Context(), gid, "forceStop through the DTM gateway"); err != nil {
			g.internal(w, "forceStop", err)
			return
		}
		success(w)
	case st.Status == orchestrator.Parked:
		failure(w, "the saga is parked going forward: jetsaga does not fail it by force; redrive it, skip its step or resolve it with the jetsaga command. FAILURE")
	default:
		failure(w, fmt.Sprintf("the saga is %s: jetsaga stops a saga only once it is parked (bound sagas with timeout_to_fail). FAILURE", st.Status))
	}
}

// resetNextCronTime: DTM retries the saga now. A parked saga is redriven
// (its stuck step sent again with a fresh budget); other sagas have no
// cron to reset (retries are the participants' backoff): nothing to do.
func (g *Gateway) resetNextCronTime(w http.ResponseWriter, r *http.Request) {
	gid, st, ok := g.target(w, r)
	if !ok {
		return
	}
	if st.Status == orchestrator.Parked {
		if err := g.client.Redrive(r.Context(), gid); err != nil && !errors.Is(err, orchestrator.ErrNotParked) {
			g.internal(w, "resetNextCronTime", err)
			return
		}
	}
	success(w)
}

// load reads a saga for an operator route; it answers the request itself
// when it returns false.
func (g *Gateway) load(w http.ResponseWriter, r *http.Request, gid string) (*orchestrator.State, bool) {
	st, err := g.client.Get(r.Context(), gid)
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
		errorMessage(w, fmt.Sprintf("gid %q: no such saga", gid))
		return nil, false
	case err != nil && strings.Contains(err.Error(), "saga id"):
		errorMessage(w, "gid: "+err.Error())
		return nil, false
	case err != nil:
		g.internal(w, "read the saga", err)
		return nil, false
	}
	return st, true
}
