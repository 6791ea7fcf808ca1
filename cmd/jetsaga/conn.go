package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/jetsaga/jetsaga/events"
)

// Connection defaults.
const (
	defaultNATSURL        = "nats://127.0.0.1:4222"
	defaultConnectTimeout = 5 * time.Second
)

// natsFlags are the connection flags of every command that talks to NATS.
type natsFlags struct {
	url            string
	creds          string
	nkey           string
	user, password string
	token          string
	inboxPrefix    string
	tlsCA          string
	tlsCert        string
	tlsKey         string
	prefix         string
	connectTimeout time.Duration
}

// register adds the flags to fs.
func (f *natsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats-url", defaultNATSURL, "NATS server URL, or a comma-separated list of a cluster's URLs")
	bindEnv(fs, "nats-url", "JETSAGA_NATS_URL", "NATS_URL")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
	bindEnv(fs, "nats-creds", "NATS_CREDS")
	fs.StringVar(&f.nkey, "nats-nkey", "", "NATS NKey seed file")
	bindEnv(fs, "nats-nkey", "NATS_NKEY")
	fs.StringVar(&f.user, "nats-user", "", "NATS user name")
	bindEnv(fs, "nats-user", "NATS_USER")
	fs.StringVar(&f.password, "nats-password", "", "NATS password")
	bindEnv(fs, "nats-password", "NATS_PASSWORD")
	fs.StringVar(&f.token, "nats-token", "", "NATS authentication token")
	bindEnv(fs, "nats-token", "NATS_TOKEN")
	fs.StringVar(&f.inboxPrefix, "nats-inbox-prefix", "", `prefix of the client's reply subjects instead of "_INBOX" (e.g. _INBOX_<user>, for a user that may only subscribe there)`)
	bindEnv(fs, "nats-inbox-prefix", "NATS_INBOX_PREFIX")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "CA certificate file that verifies the NATS server")
	bindEnv(fs, "tls-ca", "NATS_TLS_CA")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate file for NATS (with --tls-key)")
	bindEnv(fs, "tls-cert", "NATS_TLS_CERT")
	fs.StringVar(&f.tlsKey, "tls-key", "", "client key file for NATS (with --tls-cert)")
	bindEnv(fs, "tls-key", "NATS_TLS_KEY")
	fs.StringVar(&f.prefix, "prefix", events.DefaultPrefix, "first token of jetsaga's subjects; deployments with different prefixes share a NATS account")
	bindEnv(fs, "prefix", "JETSAGA_PREFIX")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", defaultConnectTimeout, "how long to try to reach NATS (and PostgreSQL) before giving up")
}

// namespace returns the namespace of --prefix.
func (f *natsFlags) namespace() (events.Namespace, error) {
	ns, err := events.NewNamespace(f.prefix)
	if err != nil {
		var fe *events.FieldError
		if errors.As(err, &fe) {
			return ns, usagef("--prefix: %s", fe.Problem)
		}
		return ns, usagef("--prefix: %v", err)
	}
	return ns, nil
}

// validate checks the flags that depend on each other.
func (f *natsFlags) validate() error {
	if strings.TrimSpace(f.url) == "" {
		return usagef("--nats-url is empty")
	}
	if f.connectTimeout <= 0 {
		return usagef("--connect-timeout must be positive, got %s", f.connectTimeout)
	}
	methods := 0
	for _, set := range []bool{f.creds != "", f.nkey != "", f.user != "", f.token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return usagef("--nats-creds, --nats-nkey, --nats-user and --nats-token are alternatives: set only one")
	}
	if f.password != "" && f.user == "" {
		return usagef("--nats-password needs --nats-user")
	}
	if p := f.inboxPrefix; p != "" {
		if strings.ContainsAny(p, "*> \t\r\n") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
			return usagef("--nats-inbox-prefix %q is not a subject prefix: want tokens without wildcards, spaces or empty tokens, e.g. _INBOX_bank-a", p)
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together: set both or neither")
	}
	return nil
}

// connect connects to NATS. A service (long-running) reconnects forever
// once connected; a one-shot command keeps the client's defaults. The first
// connection fails fast, after --connect-timeout, with the address tried.
func (f *natsFlags) connect(ctx context.Context, name string, service bool, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := f.options(name)
	if err != nil {
		return nil, nil, err
	}
	if service {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	}
	if log != nil {
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("disconnected from NATS", "err", err)
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				log.Info("reconnected to NATS", "url", redactURL(nc.ConnectedUrl()))
			}),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				log.Warn("NATS error", "err", err)
			}),
		)
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	// nats.Connect does not take a context: run it aside so that Ctrl-C
	// is not held up by a slow server.
	done := make(chan result, 1)
	go func() {
		nc, err := f.connectRetrying(ctx, opts)
		done <- result{nc, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, nil, fmt.Errorf("cannot connect to NATS at %s: %w", redactURLs(f.url), ctx.Err())
	}
	if r.err != nil {
		return nil, nil, fmt.Errorf("cannot connect to NATS at %s: %v", redactURLs(f.url), f.explain(r.err))
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		r.nc.Close()
		return nil, nil, fmt.Errorf("JetStream at %s: %w", redactURLs(f.url), err)
	}
	return r.nc, js, nil
}

// explainConnect replaces the client's "no servers available" with the
// dial error of the first server, which says what is wrong (refused,
// unreachable, unknown host).
func explainConnect(err error, urls string, timeout time.Duration) error {
	if !errors.Is(err, nats.ErrNoServers) {
		return err
	}
	for _, u := range strings.Split(urls, ",") {
		host := hostPort(strings.TrimSpace(u))
		if host == "" {
			continue
		}
		c, derr := net.DialTimeout("tcp", host, timeout)
		if derr != nil {
			return derr
		}
		_ = c.Close()
	}
	return err
}

// hostPort extracts host:port from a NATS URL (default port 4222).
func hostPort(raw string) string {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "4222")
	}
	return u.Host
}

// redactURLs masks the passwords in a comma-separated list of URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = redactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactURL masks the password of a URL (or of a PostgreSQL key=value
// connection string).
func redactURL(raw string) string {
	if strings.Contains(raw, "://") {
		if u, err := url.Parse(raw); err == nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			}
			q := u.Query()
			if q.Has("password") {
				q.Set("password", "xxxxx")
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		return "<unparsable URL>"
	}
	return dsnPassword.ReplaceAllString(raw, "${1}xxxxx")
}

// dbFlags is the PostgreSQL flag of the commands that use a database.
type dbFlags struct {
	url string
}

func (f *dbFlags) register(fs *pflag.FlagSet, usage string) {
	fs.StringVar(&f.url, "database-url", "", usage)
	bindEnv(fs, "database-url", "DATABASE_URL")
}

// openPool opens a pool on rawURL and checks that the server answers
// within timeout. Errors name the address with its password masked.
func openPool(ctx context.Context, rawURL string, maxConns int32, timeout time.Duration) (*pgxpool.Pool, error) {
	if rawURL == "" {
		return nil, usagef("--database-url is required (or set DATABASE_URL), e.g. postgres://user:password@host:5432/dbname")
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, usagef("--database-url %s: %v", redactURL(rawURL), err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > timeout {
		cfg.ConnConfig.ConnectTimeout = timeout
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %w", redactURL(rawURL), explainPG(err))
	}
	if err := pingRetrying(ctx, pool, timeout); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %w", redactURL(rawURL), explainPG(err))
	}
	return pool, nil
}

// drain drains nc (subscriptions finish, pending publishes are flushed) and
// waits up to timeout for it to close.
func drain(nc *nats.Conn, timeout time.Duration) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(timeout)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}

// options are the connection options of the flags: name, timeout,
// authentication, inbox prefix and TLS.
func (f *natsFlags) options(name string) ([]nats.Option, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name(name), nats.Timeout(f.connectTimeout)}
	switch {
	case f.creds != "":
		opts = append(opts, nats.UserCredentials(f.creds))
	case f.nkey != "":
		o, err := nats.NkeyOptionFromSeed(f.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", f.nkey, err)
		}
		opts = append(opts, o)
	case f.user != "":
		opts = append(opts, nats.UserInfo(f.user, f.password))
	case f.token != "":
		opts = append(opts, nats.Token(f.token))
	}
	if f.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.inboxPrefix))
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	if f.tlsCert != "" {
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	return opts, nil
}
