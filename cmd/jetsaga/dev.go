package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

func (a *app) devCmd() *cobra.Command {
	var (
		db          dbFlags
		lf          logFlags
		port        int
		dtmPort     int
		consolePort int
		storeDir    string
		metricsAddr string
		serveAPI    bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local development environment until Ctrl-C",
		Long: `Run a whole local jetsaga environment in this process until Ctrl-C or SIGTERM: an embedded NATS
server with JetStream on --port, PostgreSQL (DATABASE_URL's server, or a throwaway cluster from the
local binaries) with the databases bank_a and bank_b, the coordinator and both banks of the example,
an HTTP participant (calling services on this machine) and the DTM-compatible API on --dtm-port.
It prints how to connect, the URL of the web console (on --console-port) and an example
"jetsaga start" command.

JetStream's data lives in a temporary directory removed at exit, or in --store-dir, which is kept.
A throwaway PostgreSQL cluster is removed at exit; on a DATABASE_URL server bank_a and bank_b are
created if missing and kept, so a dev environment with both survives restarts.

It serves the saga API as a NATS micro service (<prefix>.api.*, "nats micro ls") unless
--service=false, the metrics of the coordinator and both banks on --metrics-addr, and exports
traces when the OTEL_* environment asks for them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if port < 1 || port > 65535 {
				return usagef("--port must be a TCP port (1-65535), got %d", port)
			}
			if storeDir != "" {
				if err := os.MkdirAll(storeDir, 0o755); err != nil {
					return usagef("--store-dir: %v", err)
				}
			}
			log, err := lf.logger(a)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			tp, stopTracing, err := setupTracing(ctx, "jetsaga-dev", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			var reg *prometheus.Registry
			if metricsAddr != "" {
				reg = newRegistry()
			}
			fmt.Fprintln(a.stdout, "jetsaga dev: starting NATS, PostgreSQL, the coordinator and both banks...")
			s, err := startStack(ctx, stackConfig{natsPort: port, storeDir: storeDir, databaseURL: db.url,
				syncAlways: true, log: log, connectTimeout: defaultConnectTimeout, registry: reg, tracer: tp})
			if err != nil {
				return fmt.Errorf("start the dev environment: %w", err)
			}
			var dtmURL string
			if err := s.startParticipants(); err == nil {
				if _, err = s.startCoordinator(); err == nil {
					dtmURL, err = s.startDTM(dtmPort)
				}
			}
			stopMetrics, stopAPI := func() {}, func() {}
			consoleURL, stopConsole := "", func() error { return nil }
			if err == nil {
				consoleURL, stopConsole, err = startDevConsole(ctx, s.client, consolePort, log)
			}
			if err == nil {
				stopMetrics, err = serveMetrics(metricsAddr, reg, log)
			}
			if err == nil && serveAPI {
				stopAPI, err = startAPI(s.NC, s.JS, s.NS, tp, log)
			}
			if err != nil {
				stopMetrics()
				_ = stopConsole()
				_ = s.close()
				return err
			}
			a.printDevInfo(s, port, storeDir, dtmURL, consoleURL)
			<-ctx.Done()
			fmt.Fprintln(a.stdout, "jetsaga dev: stopping...")
			stopAPI()
			_ = stopConsole()
			stopMetrics()
			if err := s.close(); err != nil {
				return fmt.Errorf("stop the dev environment: %w", err)
			}
			fmt.Fprintln(a.stdout, "jetsaga dev: stopped")
			return nil
		},
	}
	fs := cmd.Flags()
	db.register(fs, "an existing PostgreSQL server to keep the banks' databases on (default: a throwaway cluster from the local binaries)")
	lf.register(fs)
	fs.IntVar(&port, "port", 4222, "NATS client port on 127.0.0.1")
	fs.IntVar(&dtmPort, "dtm-port", defaultDTMPort, "port on 127.0.0.1 of the DTM-compatible API (a free one if it is taken)")
	fs.IntVar(&consolePort, "console-port", 8080, "port on 127.0.0.1 of the web console (a free one if it is taken)")
	fs.StringVar(&storeDir, "store-dir", "", "keep JetStream's data in this directory (default: a temporary directory removed at exit)")
	metricsFlag(fs, &metricsAddr)
	fs.BoolVar(&serveAPI, "service", true, "serve the saga API as a NATS micro service (<prefix>.api.*)")
	bindEnv(fs, "service", "JETSAGA_SERVICE")
	return cmd
}

// printDevInfo tells the user how to reach the environment.
func (a *app) printDevInfo(s *stack, port int, storeDir, dtmURL, consoleURL string) {
	w := a.stdout
	urlFlag := ""
	if port != 4222 {
		urlFlag = " --nats-url " + s.NATS.URL()
	}
	kept := "temporary, removed at exit"
	if storeDir != "" {
		kept = "kept"
	}
	pg := "throwaway cluster, removed at exit"
	if s.PG.External() {
		pg = "existing server, databases kept"
	}
	fmt.Fprintln(w, "\njetsaga dev: ready")
	tw := newTable(w)
	fmt.Fprintf(tw, "  console\t%s\tthe web console (loopback, no login)\n", consoleURL)
	fmt.Fprintf(tw, "  NATS\t%s\tJetStream in %s (%s)\n", s.NATS.URL(), s.NATS.StoreDir(), kept)
	for _, b := range banks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", b.name, redactURL(s.DBURLs[b.name]), pg)
	}
	fmt.Fprintf(tw, "  DTM API\t%s\tHTTP steps may call %s\n", dtmURL, strings.Join(devAllow, ", "))
	fmt.Fprintf(tw, "  coordinator\tprefix %s\tstreams %s, %s; bucket %s\n", s.NS.Prefix(), s.NS.SagasStream(), s.NS.CommandsStream(), s.NS.StateBucket())
	_ = tw.Flush()
	var accs []string
	for _, acc := range demoAccounts {
		accs = append(accs, fmt.Sprintf("%s (user_id %d)", acc, acc.user))
	}
	fmt.Fprintf(w, "  accounts     %s\n", strings.Join(accs, ", "))
	fmt.Fprintf(w, "\nTry it from another terminal:\n  jetsaga start%s --wait -f - <<'EOF'\n%s\nEOF\n", urlFlag, transferJSON(alice, bob, 1000))
	fmt.Fprintf(w, "  jetsaga list%s\n  jetsaga status%s <saga id>\n\nCtrl-C stops everything.\n", urlFlag, urlFlag)
}
