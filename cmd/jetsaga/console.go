package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/console"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// consoleJSON is the line `console --json` prints once it listens.
type consoleJSON struct {
	URL      string `json:"url"`
	ReadOnly bool   `json:"read_only"`
	Auth     string `json:"auth"` // none, token, basic, token+basic
}

func (a *app) consoleCmd() *cobra.Command {
	var (
		nf       natsFlags
		lf       logFlags
		listen   string
		readOnly bool
		token    string
		basic    []string
		operator string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the web console: sagas by status, a saga's plan and timeline, actions on parked sagas",
		Long: `Serve the web console on --listen until Ctrl-C or SIGTERM: an overview of the sagas (by status, by
name, the last minutes, the parked ones first), a list filtered by status, name, participant and
start time, and each saga's plan and timeline as pictures, live while it runs. Parked sagas can be
redriven, skipped or resolved from it, after a confirmation, with the operator's name recorded in
the action; --read-only offers and accepts no action.

On a loopback address (the default) it needs no login. Anywhere else it refuses to start without
--token (then open the URL with ?token=TOKEN once, or send "Authorization: Bearer TOKEN") or
--basic-auth USER:PASSWORD (repeatable; the user is the operator recorded). Put it behind TLS (a
reverse proxy) when it is reached over a network. Actions must come from its own pages (CSRF token,
Origin checked). Everything it serves is embedded in the binary.`,
		Example: `  jetsaga console
  jetsaga console --listen :8080 --read-only --token "$(openssl rand -hex 16)"
  JETSAGA_CONSOLE_BASIC_AUTH=alice:s3cret,bob:hunter2 jetsaga console --listen 10.0.0.5:8080`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := console.Config{ReadOnly: readOnly, Token: token, Operator: operator}
			users, err := parseBasicAuth(basic)
			if err != nil {
				return err
			}
			cfg.Users = users
			if err := checkExposure(listen, cfg); err != nil {
				return err
			}
			log, ns, err := a.serviceSetup(&lf, &nf)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			nc, js, err := nf.connect(ctx, "jetsaga console", true, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			s := &session{nc: nc, js: js, ns: ns, client: orchestrator.NewClient(js, ns), url: redactURLs(nf.url)}
			defer s.client.Close()
			if err := s.check(ctx); err != nil {
				return err
			}
			cfg.Client, cfg.Logger = s.client, log
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("console: listen on %s: %w", listen, err)
			}
			url, shutdown, err := serveConsole(ctx, ln, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSONLine(a.stdout, consoleJSON{URL: url, ReadOnly: readOnly, Auth: authKind(cfg)}); err != nil {
					_ = shutdown()
					return err
				}
			} else {
				ro := ""
				if readOnly {
					ro = " (read-only)"
				}
				fmt.Fprintf(a.stdout, "jetsaga console%s: %s\n", ro, url)
			}
			<-ctx.Done()
			return shutdown()
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	lf.register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the console on; anything but loopback needs --token or --basic-auth")
	bindEnv(fs, "listen", "JETSAGA_CONSOLE_LISTEN")
	fs.BoolVar(&readOnly, "read-only", false, "offer and accept no action on sagas")
	bindEnv(fs, "read-only", "JETSAGA_CONSOLE_READ_ONLY")
	fs.StringVar(&token, "token", "", "require this token (open the URL with ?token=…, or send Authorization: Bearer …)")
	bindEnv(fs, "token", "JETSAGA_CONSOLE_TOKEN")
	fs.StringSliceVar(&basic, "basic-auth", nil, "require HTTP basic authentication as USER:PASSWORD (repeatable, or comma-separated)")
	bindEnv(fs, "basic-auth", "JETSAGA_CONSOLE_BASIC_AUTH")
	fs.StringVar(&operator, "operator", defaultOperator(), "the name the confirmation form proposes as the operator, without basic authentication")
	fs.BoolVar(&asJSON, "json", false, `print {"url": ..., "read_only": ..., "auth": ...} as one JSON line once it listens`)
	return cmd
}

// defaultOperator is the name of the user running the console.
func defaultOperator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "operator"
}

// parseBasicAuth reads USER:PASSWORD pairs.
func parseBasicAuth(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	users := map[string]string{}
	for _, p := range pairs {
		u, pw, ok := strings.Cut(p, ":")
		if !ok || u == "" || pw == "" {
			return nil, usagef("--basic-auth: want USER:PASSWORD, got %q", maskPassword(p))
		}
		users[u] = pw
	}
	return users, nil
}

func maskPassword(p string) string {
	if u, _, ok := strings.Cut(p, ":"); ok {
		return u + ":xxxxx"
	}
	return p
}

// checkExposure refuses a console that anyone on the network could use.
func checkExposure(listen string, cfg console.Config) error {
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return usagef("--listen %q: want HOST:PORT, e.g. 127.0.0.1:8080 or :8080: %v", listen, err)
	}
	if !console.IsLoopback(listen) && cfg.Token == "" && len(cfg.Users) == 0 {
		return usagef("--listen %s is not a loopback address: set --token or --basic-auth, or anyone who reaches it could act on sagas", listen)
	}
	return nil
}

func authKind(cfg console.Config) string {
	switch {
	case cfg.Token != "" && len(cfg.Users) > 0:
		return "token+basic"
	case cfg.Token != "":
		return "token"
	case len(cfg.Users) > 0:
		return "basic"
	}
	return "none"
}

// serveConsole serves the console on ln until shutdown (or ctx is done:
// open pages' live connections end with it). It returns the URL to open.
// It closes ln on error.
func serveConsole(ctx context.Context, ln net.Listener, cfg console.Config) (url string, shutdown func() error, err error) {
	c, err := console.New(ctx, cfg)
	if err != nil {
		_ = ln.Close()
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return sctx },
		ErrorLog:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	url = "http://" + browsable(ln.Addr().String()) + "/"
	if cfg.Token != "" {
		url += "?token=" + cfg.Token
	}
	return url, func() error {
		cancel() // ends the live pages' event streams
		sdctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		err := srv.Shutdown(sdctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
		c.Close()
		return err
	}, nil
}

// browsable turns a listen address into one a browser can open.
func browsable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// startDevConsole serves the console of `jetsaga dev` on 127.0.0.1:port
// (a free port if that one is taken), without authentication: loopback
// only.
func startDevConsole(ctx context.Context, client *orchestrator.Client, port int, log *slog.Logger) (url string, stop func() error, err error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", nil, fmt.Errorf("console: %w", err)
		}
	}
	return serveConsole(ctx, ln, console.Config{Client: client, Operator: defaultOperator(), Logger: log.With("component", "console")})
}
