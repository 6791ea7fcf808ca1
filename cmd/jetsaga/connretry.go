package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
)

// retryEvery is the pause between two tries to reach a server that refused
// or could not be reached.
const retryEvery = 250 * time.Millisecond

// connectRetrying connects to NATS, trying again while no server can be
// reached (refused, unreachable) until --connect-timeout has passed: a
// service started before NATS, or while it restarts, waits for it. Other
// errors (authorization, TLS) end it at once.
func (f *natsFlags) connectRetrying(ctx context.Context, opts []nats.Option) (*nats.Conn, error) {
	deadline := time.Now().Add(f.connectTimeout)
	for {
		nc, err := nats.Connect(f.url, opts...)
		if err == nil || !errors.Is(err, nats.ErrNoServers) || time.Until(deadline) < retryEvery {
			return nc, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(retryEvery):
		}
	}
}

// explain says what went wrong with a connection to NATS: the dial error
// of an unreachable server, or who the server refused.
func (f *natsFlags) explain(err error) error {
	if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		return fmt.Errorf("%v: the server refused %s", err, f.identity())
	}
	if errors.Is(err, nats.ErrNoServers) {
		return fmt.Errorf("%v (tried for %s, --connect-timeout)", explainConnect(err, f.url, f.connectTimeout), f.connectTimeout)
	}
	return explainConnect(err, f.url, f.connectTimeout)
}

// identity names the credentials a connection presented, never a secret.
func (f *natsFlags) identity() string {
	switch {
	case f.creds != "":
		return fmt.Sprintf("the credentials file %s (--nats-creds)", f.creds)
	case f.nkey != "":
		return fmt.Sprintf("the NKey seed file %s (--nats-nkey)", f.nkey)
	case f.user != "":
		return fmt.Sprintf("user %q (--nats-user, --nats-password)", f.user)
	case f.token != "":
		return "the token of --nats-token"
	}
	for _, raw := range strings.Split(f.url, ",") {
		if u, err := url.Parse(strings.TrimSpace(raw)); err == nil && u.User != nil && u.User.Username() != "" {
			return fmt.Sprintf("user %q (from the URL)", u.User.Username())
		}
	}
	return "a connection without credentials (set --nats-user and --nats-password, --nats-token, --nats-creds or --nats-nkey)"
}

// pingRetrying pings PostgreSQL, trying again while the server refuses
// connections (it is starting, or restarting) until timeout has passed.
func pingRetrying(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		err := pool.Ping(pctx)
		cancel()
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Until(deadline) < retryEvery {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retryEvery):
		}
	}
}

// explainPG drops pgx's report of the TLS attempt that the default
// sslmode=prefer makes first ("tls error: server refused TLS connection")
// when the plain connection that followed failed for a reason of its own:
// that reason is the one that matters.
func explainPG(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	prefix, details, ok := strings.Cut(ce.Error(), ":")
	if !ok {
		return err
	}
	var kept, tls []string
	for _, line := range strings.Split(details, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.Contains(line, "tls error: server refused TLS connection"):
			tls = append(tls, line)
		default:
			kept = append(kept, line)
		}
	}
	if len(kept) == 0 {
		kept = tls
	}
	return &explainedError{msg: prefix + ": " + strings.Join(kept, "; "), err: err}
}

// explainedError rewords err and still unwraps to it.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }
