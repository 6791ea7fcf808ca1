package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jetsaga/jetsaga/dtmgateway"
	"github.com/jetsaga/jetsaga/httpparticipant"
)

// defaultDTMPort is DTM's own port: a DTM client's URL keeps it.
const defaultDTMPort = 36789

// devAllow are the URLs the dev environment's HTTP participant may call:
// services on this machine.
var devAllow = []string{"127.0.0.1", "localhost", "[::1]"}

// allowFlag reads --allow-url (repeatable or comma-separated).
type allowFlag struct{ entries []string }

func (f *allowFlag) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.entries, "allow-url", nil, `hosts ("bank", "bank:5000") or URL prefixes ("https://bank/api/") that HTTP steps may call; repeat or separate with commas`)
	bindEnv(fs, "allow-url", "JETSAGA_ALLOW_URL")
}

func (f *allowFlag) list(required bool) (*httpparticipant.AllowList, error) {
	a, err := httpparticipant.ParseAllowList(f.entries)
	if err != nil {
		return nil, usagef("--allow-url: %v", err)
	}
	if required && a.Empty() {
		return nil, usagef("--allow-url is required: list the hosts or URL prefixes that HTTP steps may call")
	}
	if a.Empty() {
		return nil, nil
	}
	return a, nil
}

func (a *app) httpParticipantCmd() *cobra.Command {
	var (
		nf          natsFlags
		lf          logFlags
		af          allowFlag
		name        string
		concurrency int
		timeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "http-participant --allow-url HOST|PREFIX",
		Short: "Run an HTTP participant: steps whose action and compensation are URLs (DTM's branches)",
		Long: `Run an HTTP participant until SIGINT or SIGTERM: it carries out the steps of participant --name
("http"), calling their URLs exactly as DTM v1.19 calls saga branches, and only the URLs --allow-url
allows. Run as many instances as you like: they share one durable consumer. On SIGINT/SIGTERM it
stops fetching, finishes the calls in flight, drains its NATS connection and exits 0.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			allow, err := af.list(true)
			if err != nil {
				return err
			}
			if concurrency < 1 {
				return usagef("--concurrency must be at least 1, got %d", concurrency)
			}
			log, ns, err := a.serviceSetup(&lf, &nf)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			nc, js, err := nf.connect(ctx, "jetsaga http-participant", true, log)
			if err != nil {
				return err
			}
			defer drain(nc, drainTimeout)
			p, err := httpparticipant.New(httpparticipant.Config{Name: name, JetStream: js, Namespace: ns, Allow: allow,
				Concurrency: concurrency, RequestTimeout: timeout, Logger: log})
			if err != nil {
				return usagef("%v", err)
			}
			log.Info("HTTP participant running", "name", p.Name(), "nats", redactURL(nc.ConnectedUrl()), "allow", allow.String())
			if err := p.Run(ctx); err != nil {
				return err
			}
			st := p.Stats()
			log.Info("HTTP participant stopped", "calls", st.Calls, "succeeded", st.Succeeded, "failed", st.Failed,
				"ongoing", st.Ongoing, "transient", st.Transient, "rejected", st.Rejected)
			return nil
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	lf.register(fs)
	af.register(fs)
	fs.StringVar(&name, "name", httpparticipant.DefaultName, "participant name of the HTTP steps")
	fs.IntVar(&concurrency, "concurrency", httpparticipant.DefaultConcurrency, "calls in flight at once")
	fs.DurationVar(&timeout, "request-timeout", httpparticipant.DefaultRequestTimeout, "timeout of a call whose saga sets no request_timeout")
	return cmd
}

func (a *app) gatewayCmd() *cobra.Command {
	var (
		nf          natsFlags
		lf          logFlags
		af          allowFlag
		addr        string
		participant string
		waitTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve DTM's server API (/api/dtmsvr/...) for sagas, over this jetsaga deployment",
		Long: `Serve DTM's HTTP server API for sagas on --listen until SIGINT or SIGTERM, so that programs that use
DTM's clients run on jetsaga with only the server URL changed (http://host:36789/api/dtmsvr). It keeps
no state: run as many as you like. Give it the HTTP participants' --allow-url to refuse other URLs at
submit. Steps are run by the HTTP participant (jetsaga http-participant) named --participant.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			allow, err := af.list(false)
			if err != nil {
				return err
			}
			log, ns, err := a.serviceSetup(&lf, &nf)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			nc, js, err := nf.connect(ctx, "jetsaga gateway", true, log)
			if err != nil {
				return err
			}
			defer drain(nc, drainTimeout)
			g, err := dtmgateway.New(dtmgateway.Config{JetStream: js, Namespace: ns, Participant: participant, Allow: allow,
				WaitTimeout: waitTimeout, Logger: log})
			if err != nil {
				return usagef("%v", err)
			}
			defer g.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return usagef("--listen %s: %v", addr, err)
			}
			log.Info("DTM gateway serving", "url", "http://"+ln.Addr().String()+"/api/dtmsvr", "nats", redactURL(nc.ConnectedUrl()))
			return serveUntil(ctx, ln, g.Handler(), log)
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	lf.register(fs)
	af.register(fs)
	fs.StringVar(&addr, "listen", fmt.Sprintf(":%d", defaultDTMPort), "address to serve on (DTM's port by default)")
	bindEnv(fs, "listen", "JETSAGA_GATEWAY_LISTEN")
	fs.StringVar(&participant, "participant", httpparticipant.DefaultName, "participant name of the HTTP participants that run the steps")
	fs.DurationVar(&waitTimeout, "wait-timeout", dtmgateway.DefaultWaitTimeout, "how long a submit with wait_result waits")
	return cmd
}

// serveUntil serves h on ln until ctx is done, then shuts down gracefully.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	if err != nil {
		log.Warn("gateway shutdown", "err", err)
	}
	return nil
}

// startDTM runs an HTTP participant (calling services on this machine) and
// a DTM gateway on 127.0.0.1:port (a free port if that one is taken) in the
// stack; it returns the gateway's URL.
func (s *stack) startDTM(port int) (string, error) {
	allow := httpparticipant.MustAllow(devAllow...)
	p, err := httpparticipant.New(httpparticipant.Config{JetStream: s.JS, Namespace: s.NS, Allow: allow,
		Logger: s.cfg.log.With("component", "http-participant")})
	if err != nil {
		return "", err
	}
	g, err := dtmgateway.New(dtmgateway.Config{JetStream: s.JS, Namespace: s.NS, Allow: allow, Logger: s.cfg.log.With("component", "gateway")})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil && port != 0 {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		g.Close()
		return "", err
	}
	log := s.cfg.log.With("component", "gateway")
	s.Go("http-participant", p.Run)
	s.Go("gateway", func(ctx context.Context) error {
		defer g.Close()
		return serveUntil(ctx, ln, g.Handler(), log)
	})
	return "http://" + strings.Replace(ln.Addr().String(), "[::]", "127.0.0.1", 1) + "/api/dtmsvr", nil
}
