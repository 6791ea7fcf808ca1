// Package service serves jetsaga's saga API as a NATS micro service, so that
// the NATS tools (`nats micro ls`, `nats micro info jetsaga`, `nats req`) and
// programs in any language read and act on sagas without linking Go.
//
// # Endpoints
//
// Every endpoint takes a JSON object and answers JSON, on the subject
// <prefix>.api.<endpoint> (prefix "saga" by default, the deployment's
// namespace), in the queue group "jetsaga" so that several coordinators share
// the load:
//
//	get       {"id": "…"}                                   → the saga's state (orchestrator.State)
//	list      {"status": "parked", "limit": 100}            → {"sagas": [summary…]}, newest first
//	timeline  {"id": "…"}                                   → {"entries": [orchestrator.TimelineEntry…]}
//	start     a plan: the start message (events.Start); "v" and "saga_id" may be left out
//	                                                        → {"saga_id": "…"}
//	redrive   {"id": "…"}                                   → {"saga_id": "…", "accepted": true}
//	skip      {"id": "…", "step": "…", "note": "…"}         → {"saga_id": "…", "accepted": true}
//	resolve   {"id": "…", "note": "…"}                      → {"saga_id": "…", "accepted": true}
//
// For example:
//
//	nats req saga.api.get '{"id":"0190c2a4-…"}'
//	nats req saga.api.list '{"status":"parked"}'
//
// # Errors
//
// An error is a reply with the micro error headers (Nats-Service-Error-Code,
// Nats-Service-Error) and an empty body; the codes follow HTTP's:
// "400" a malformed request (not a JSON object, an unknown field, a missing
// or invalid id, an invalid plan — the description names the field), "404"
// no saga has this id, "409" the saga is not parked (redrive, skip, resolve)
// or its id was started with another plan (start), "500" anything else,
// "504" the request took longer than Config.Timeout.
//
// Each endpoint handles its requests one at a time per instance, the
// endpoints side by side (at most Config.Concurrency at once); instances
// share the load through the queue group. The actions publish the same messages as orchestrator.Client, so they are
// exactly as safe as the CLI's.
package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// Endpoint names: the last token of their subjects.
const (
	EndpointGet      = "get"
	EndpointList     = "list"
	EndpointTimeline = "timeline"
	EndpointStart    = "start"
	EndpointRedrive  = "redrive"
	EndpointSkip     = "skip"
	EndpointResolve  = "resolve"
)

// Endpoints lists every endpoint.
var Endpoints = []string{EndpointGet, EndpointList, EndpointTimeline, EndpointStart, EndpointRedrive, EndpointSkip, EndpointResolve}

// Error codes of the replies (the Nats-Service-Error-Code header).
const (
	CodeBadRequest = "400"
	CodeNotFound   = "404"
	CodeConflict   = "409"
	CodeInternal   = "500"
	CodeTimeout    = "504"
)

// Defaults of Config.
const (
	DefaultName        = "jetsaga"
	DefaultVersion     = "1.0.0"
	DefaultQueueGroup  = "jetsaga"
	DefaultTimeout     = 10 * time.Second
	DefaultConcurrency = 16
	DefaultListLimit   = 100
	MaxListLimit       = 10000
)

// flushTimeout bounds Start's wait for the server to have the subscriptions.
const flushTimeout = 5 * time.Second

// Subject returns the subject of an endpoint in namespace ns.
func Subject(ns events.Namespace, endpoint string) string {
	ns = ns.OrDefault()
	return ns.Prefix() + ".api." + endpoint
}

// Config configures a Service. Conn and Client are required.
type Config struct {
	// Conn is the connection the service listens on. Required.
	Conn *nats.Conn
	// Client reads and acts on sagas; its namespace selects the subjects.
	// Required.
	Client *orchestrator.Client
	// Name is the micro service's name (`nats micro info <name>`). Default
	// DefaultName.
	Name string
	// Version is the service's version, semantic. Default DefaultVersion.
	Version string
	// QueueGroup shares the requests among the instances. Default
	// DefaultQueueGroup.
	QueueGroup string
	// Timeout bounds the handling of one request. Default DefaultTimeout.
	Timeout time.Duration
	// Concurrency bounds the requests handled at once (one per endpoint at
	// most); more wait. Default DefaultConcurrency.
	Concurrency int
	// Logger receives the service's errors (code 500). Default
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("service: Config.Conn is required")
	}
	if c.Client == nil {
		return errors.New("service: Config.Client is required")
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.QueueGroup == "" {
		c.QueueGroup = DefaultQueueGroup
	}
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("service: Config.Timeout is %s, must be >= 0 (0 means %s)", c.Timeout, DefaultTimeout)
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("service: Config.Concurrency is %d, must be >= 0 (0 means %d)", c.Concurrency, DefaultConcurrency)
	case c.Concurrency == 0:
		c.Concurrency = DefaultConcurrency
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Service is a running saga API.
type Service struct {
	cfg    Config
	svc    micro.Service
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// Start adds the micro service to the connection and serves it until Stop.
func Start(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ns := cfg.Client.Namespace()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), ctx: ctx, cancel: cancel}
	svc, err := micro.AddService(cfg.Conn, micro.Config{
		Name:        cfg.Name,
		Version:     cfg.Version,
		Description: "jetsaga sagas: get, list, timeline, start, redrive, skip, resolve",
		QueueGroup:  cfg.QueueGroup,
		Metadata:    map[string]string{"prefix": ns.Prefix()},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("service: %w", err)
	}
	s.svc = svc
	handlers := map[string]func(context.Context, []byte) (any, *apiError){
		EndpointGet: s.get, EndpointList: s.list, EndpointTimeline: s.timeline, EndpointStart: s.start,
		EndpointRedrive: s.redrive, EndpointSkip: s.skip, EndpointResolve: s.resolve,
	}
	for _, name := range Endpoints {
		h := handlers[name]
		err := svc.AddEndpoint(name, micro.HandlerFunc(func(r micro.Request) { s.serve(r, h) }),
			micro.WithEndpointSubject(Subject(ns, name)),
			micro.WithEndpointMetadata(map[string]string{"format": "application/json"}))
		if err != nil {
			_ = svc.Stop()
			cancel()
			return nil, fmt.Errorf("service: endpoint %s: %w", name, err)
		}
	}
	// Once Start returns, the server has the subscriptions: a request sent
	// then finds its responders (on a broken connection they are sent again
	// when it reconnects).
	_ = cfg.Conn.FlushTimeout(flushTimeout)
	return s, nil
}

// Info describes the running service (what `nats micro info` shows).
func (s *Service) Info() micro.Info { return s.svc.Info() }

// Stop stops taking requests and cancels those in flight.
func (s *Service) Stop() error {
	err := s.svc.Stop()
	s.cancel()
	for range cap(s.sem) { // wait for the handlers in flight
		s.sem <- struct{}{}
	}
	return err
}

// apiError is an error reply.
type apiError struct {
	code, desc string
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{CodeBadRequest, fmt.Sprintf(format, args...)}
}

// serve runs h for r and answers, on the endpoint's subscription goroutine:
// micro reads what the handler answered once it returns (for its stats),
// so the answer must be given before that (answering from another
// goroutine raced with it). Endpoints run side by side; requests to one
// endpoint, one at a time per instance (more instances share the load
// through the queue group). Concurrency bounds the endpoints at work.
func (s *Service) serve(r micro.Request, h func(context.Context, []byte) (any, *apiError)) {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		_ = r.Error(CodeInternal, "service stopping", nil)
		return
	}
	defer func() { <-s.sem }()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	res, aerr := h(ctx, r.Data())
	if aerr == nil {
		err := r.RespondJSON(res)
		if err == nil {
			return
		}
		aerr = &apiError{CodeInternal, "encode the reply: " + err.Error()}
	}
	if aerr.code == CodeInternal && ctx.Err() == context.DeadlineExceeded {
		aerr = &apiError{CodeTimeout, "timed out after " + s.cfg.Timeout.String() + ": " + aerr.desc}
	}
	if aerr.code == CodeInternal {
		s.cfg.Logger.Error("service: request failed", "subject", r.Subject(), "err", aerr.desc)
	}
	_ = r.Error(aerr.code, aerr.desc, nil)
}

// decode decodes a request body strictly into v: a JSON object with no
// unknown fields.
func decode(data []byte, v any) *apiError {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return badRequest("the request must be a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("malformed request: %v", err)
	}
	if d.More() {
		return badRequest("malformed request: data after the JSON object")
	}
	return nil
}

// checkID checks a saga id.
func checkID(id string) *apiError {
	if id == "" {
		return badRequest("id: required")
	}
	if err := events.ValidToken(id); err != nil {
		return badRequest("id: %q %v", id, err)
	}
	return nil
}

// fromClient maps an error of the client to a reply.
func fromClient(err error) *apiError {
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
		return &apiError{CodeNotFound, err.Error()}
	case errors.Is(err, orchestrator.ErrNotParked), errors.Is(err, orchestrator.ErrPlanConflict):
		return &apiError{CodeConflict, err.Error()}
	default:
		return &apiError{CodeInternal, err.Error()}
	}
}

// IDRequest names a saga: the request of get, timeline and redrive.
type IDRequest struct {
	ID string `json:"id"`
}

// ListRequest is the request of list.
type ListRequest struct {
	// Status keeps only sagas in this status ("" keeps all).
	Status orchestrator.Status `json:"status,omitempty"`
	// Limit bounds the sagas returned, newest first. Default
	// DefaultListLimit, at most MaxListLimit.
	Limit int `json:"limit,omitempty"`
}

// ListResponse is the reply of list.
type ListResponse struct {
	Sagas []Summary `json:"sagas"`
}

// Summary is one saga of a list.
type Summary struct {
	SagaID     string              `json:"saga_id"`
	Name       string              `json:"name,omitempty"`
	Status     orchestrator.Status `json:"status"`
	Reason     string              `json:"reason,omitempty"`
	ParkedFrom orchestrator.Status `json:"parked_from,omitempty"`
	StartedMS  int64               `json:"started_ms"`
	UpdatedMS  int64               `json:"updated_ms"`
}

// TimelineResponse is the reply of timeline.
type TimelineResponse struct {
	Entries []orchestrator.TimelineEntry `json:"entries"`
}

// SkipRequest is the request of skip.
type SkipRequest struct {
	ID   string `json:"id"`
	Step string `json:"step"`
	Note string `json:"note,omitempty"`
}

// ResolveRequest is the request of resolve.
type ResolveRequest struct {
	ID   string `json:"id"`
	Note string `json:"note"`
}

// Accepted is the reply of start and of the operator actions: the message
// is stored in the sagas stream and the coordinator applies it.
type Accepted struct {
	SagaID   string `json:"saga_id"`
	Accepted bool   `json:"accepted"`
}

func (s *Service) get(ctx context.Context, data []byte) (any, *apiError) {
	var req IDRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	st, err := s.cfg.Client.Get(ctx, req.ID)
	if err != nil {
		return nil, fromClient(err)
	}
	return st, nil
}

var listStatuses = []orchestrator.Status{orchestrator.Running, orchestrator.Compensating, orchestrator.Committed,
	orchestrator.Compensated, orchestrator.Parked, orchestrator.Rejected}

func (s *Service) list(ctx context.Context, data []byte) (any, *apiError) {
	var req ListRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if req.Status != "" && !contains(listStatuses, req.Status) {
		return nil, badRequest("status: %q is not a saga status (running, compensating, committed, compensated, parked, rejected)", req.Status)
	}
	switch {
	case req.Limit < 0 || req.Limit > MaxListLimit:
		return nil, badRequest("limit: %d is not between 0 and %d", req.Limit, MaxListLimit)
	case req.Limit == 0:
		req.Limit = DefaultListLimit
	}
	states, err := s.cfg.Client.List(ctx, orchestrator.ListFilter{Status: req.Status, Limit: req.Limit})
	if err != nil {
		return nil, fromClient(err)
	}
	out := ListResponse{Sagas: make([]Summary, 0, len(states))}
	for _, st := range states {
		out.Sagas = append(out.Sagas, Summary{SagaID: st.SagaID, Name: st.Name, Status: st.Status, Reason: st.Reason,
			ParkedFrom: st.ParkedFrom, StartedMS: st.StartedMS, UpdatedMS: st.UpdatedMS})
	}
	return out, nil
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Service) timeline(ctx context.Context, data []byte) (any, *apiError) {
	var req IDRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	entries, err := s.cfg.Client.Timeline(ctx, req.ID)
	if err != nil {
		return nil, fromClient(err)
	}
	if len(entries) == 0 {
		return nil, &apiError{CodeNotFound, fmt.Sprintf("%v: %s", orchestrator.ErrNotFound, req.ID)}
	}
	return TimelineResponse{Entries: entries}, nil
}

func (s *Service) start(ctx context.Context, data []byte) (any, *apiError) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, badRequest("the request must be a JSON object: a plan (the start message)")
	}
	start, err := orchestrator.ParsePlan(data)
	if err != nil {
		return nil, badRequest("invalid plan: %v", err)
	}
	if err := s.cfg.Client.StartMessage(ctx, start); err != nil {
		return nil, fromClient(err)
	}
	return Accepted{SagaID: start.SagaID, Accepted: true}, nil
}

func (s *Service) redrive(ctx context.Context, data []byte) (any, *apiError) {
	var req IDRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	if err := s.cfg.Client.Redrive(ctx, req.ID); err != nil {
		return nil, fromClient(err)
	}
	return Accepted{SagaID: req.ID, Accepted: true}, nil
}

func (s *Service) skip(ctx context.Context, data []byte) (any, *apiError) {
	var req SkipRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	if req.Step == "" {
		return nil, badRequest("step: required (the step that parked the saga)")
	}
	if err := s.cfg.Client.Skip(ctx, req.ID, req.Step, req.Note); err != nil {
		return nil, fromClient(err)
	}
	return Accepted{SagaID: req.ID, Accepted: true}, nil
}

func (s *Service) resolve(ctx context.Context, data []byte) (any, *apiError) {
	var req ResolveRequest
	if err := decode(data, &req); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	if req.Note == "" {
		return nil, badRequest("note: required (what the operator did)")
	}
	if err := s.cfg.Client.Resolve(ctx, req.ID, req.Note); err != nil {
		return nil, fromClient(err)
	}
	return Accepted{SagaID: req.ID, Accepted: true}, nil
}
