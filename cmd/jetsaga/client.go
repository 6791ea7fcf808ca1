package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// session is a connection to a deployment for the operator commands.
type session struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	ns     events.Namespace
	client *orchestrator.Client
	url    string
}

// open connects for an operator command and checks that the deployment
// exists (a coordinator has created its streams and bucket), so that a
// wrong URL or prefix is reported as such.
func (f *natsFlags) open(ctx context.Context, cmdName string) (*session, error) {
	ns, err := f.namespace()
	if err != nil {
		return nil, err
	}
	nc, js, err := f.connect(ctx, "jetsaga "+cmdName, false, nil)
	if err != nil {
		return nil, err
	}
	s := &session{nc: nc, js: js, ns: ns, client: orchestrator.NewClient(js, ns), url: redactURLs(f.url)}
	if err := s.check(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// check verifies that the deployment's streams and bucket exist.
func (s *session) check(ctx context.Context) error {
	for _, name := range []string{s.ns.SagasStream(), s.ns.CommandsStream(), events.BucketStream(s.ns.StateBucket())} {
		if _, err := s.js.Stream(ctx, name); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("no jetsaga deployment with prefix %q at %s: stream %s does not exist (a coordinator creates it: run 'jetsaga coordinator' or 'jetsaga dev', or check --prefix)",
					s.ns.Prefix(), s.url, name)
			}
			return fmt.Errorf("stream %s at %s: %w", name, s.url, err)
		}
	}
	return nil
}

func (s *session) close() {
	s.client.Close()
	s.nc.Close()
}

// sagaError rewrites the client's errors about one saga for people.
func (s *session) sagaError(id string, err error) error {
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
		return fmt.Errorf("saga %s not found (prefix %q at %s)", id, s.ns.Prefix(), s.url)
	case errors.Is(err, orchestrator.ErrNotParked):
		return err
	}
	return err
}

// statusValues lists every saga status, for help and validation.
var statusValues = []orchestrator.Status{orchestrator.Running, orchestrator.Compensating, orchestrator.Committed,
	orchestrator.Compensated, orchestrator.Parked, orchestrator.Rejected}

// parseStatus validates a --status value.
func parseStatus(s string) (orchestrator.Status, error) {
	if s == "" {
		return "", nil
	}
	for _, v := range statusValues {
		if string(v) == s {
			return v, nil
		}
	}
	return "", usagef("--status: %q is not a saga status (want one of %v)", s, statusValues)
}
