package devenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long a starting NATS server may take to listen and
// enable JetStream.
const readyTimeout = 30 * time.Second

// serverSeq numbers the servers of this process for default names.
var serverSeq atomic.Int64

// NATSOptions configures an embedded NATS server (or every node of a
// cluster). The zero value is valid: a server on a random port with
// JetStream in a temporary directory.
type NATSOptions struct {
	// Port is the client port on 127.0.0.1. Default 0: a random free port,
	// chosen at the first start and reused by every later Start so that
	// clients can reconnect. Ignored by StartCluster, which picks its own.
	Port int

	// StoreDir is the JetStream store directory. Default "": a new temporary
	// directory owned by the server and removed by Close. A directory given
	// here is never removed. For StartCluster each node uses a
	// subdirectory named after the node.
	StoreDir string

	// SyncAlways makes JetStream fsync after every write, the durable
	// setting "jetstream { sync_interval: always }". Default false: the
	// server's background sync (every two minutes).
	SyncAlways bool

	// ServerName names the server in logs and in JetStream's cluster. Default
	// "jetsaga-<pid>-<n>" for a single server; StartCluster uses it as a
	// prefix, default "n", giving "n1", "n2", ...
	ServerName string

	// ClusterName is the cluster's name for StartCluster. Default "jetsaga".
	// Ignored by StartNATS.
	ClusterName string

	// Logf, if set, receives the server's log lines (notices, warnings and
	// errors). Default nil: no logging.
	Logf func(format string, args ...any)
}

func (o NATSOptions) validate() error {
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("devenv: NATSOptions.Port: %d is not a TCP port (use 0 for a random one)", o.Port)
	}
	if strings.ContainsAny(o.ServerName, " \t\r\n") {
		return fmt.Errorf("devenv: NATSOptions.ServerName: %q must not contain white space", o.ServerName)
	}
	if strings.ContainsAny(o.ClusterName, " \t\r\n") {
		return fmt.Errorf("devenv: NATSOptions.ClusterName: %q must not contain white space", o.ClusterName)
	}
	return nil
}

// NATSServer is an embedded nats-server with JetStream on disk. It can be
// shut down and started again on the same store and port. Its methods are
// safe for concurrent use.
type NATSServer struct {
	mu        sync.Mutex
	srv       *server.Server
	port      int
	storeDir  string
	ownsStore bool
	name      string
	opts      NATSOptions
	// cluster settings, set by StartCluster.
	clusterName string
	clusterPort int
	routes      []*url.URL
	closed      bool
}

// StartNATS starts an embedded NATS server with JetStream on disk on
// 127.0.0.1 and waits until it accepts connections with JetStream enabled.
func StartNATS(opts NATSOptions) (*NATSServer, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := &NATSServer{opts: opts, port: opts.Port, storeDir: opts.StoreDir, name: opts.ServerName}
	if s.name == "" {
		s.name = fmt.Sprintf("jetsaga-%d-%d", os.Getpid(), serverSeq.Add(1))
	}
	if s.storeDir == "" {
		dir, err := os.MkdirTemp("", "jetsaga-nats-*")
		if err != nil {
			return nil, fmt.Errorf("devenv: create JetStream store directory: %w", err)
		}
		s.storeDir, s.ownsStore = dir, true
	}
	if err := s.Start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// URL returns the client URL, nats://127.0.0.1:<port>. It stays the same
// across Shutdown and Start.
func (s *NATSServer) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Port returns the client port.
func (s *NATSServer) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// StoreDir returns the JetStream store directory.
func (s *NATSServer) StoreDir() string {
	return s.storeDir
}

// Name returns the server name.
func (s *NATSServer) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}

// Server returns the running nats-server, or nil while it is shut down. A
// Start replaces it with a new one.
func (s *NATSServer) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Running reports whether the server is started.
func (s *NATSServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Start starts the server on its store directory and port. It is a no-op if
// the server is running and an error after Close.
func (s *NATSServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("devenv: NATS server is closed")
	}
	if s.srv != nil {
		return nil
	}
	log := &serverLog{logf: s.opts.Logf}
	sopts := &server.Options{
		ServerName: s.name,
		Host:       "127.0.0.1",
		Port:       s.port,
		JetStream:  true,
		StoreDir:   s.storeDir,
		SyncAlways: s.opts.SyncAlways,
		NoSigs:     true,
	}
	if sopts.Port == 0 {
		sopts.Port = server.RANDOM_PORT
	}
	if s.clusterName != "" {
		sopts.Cluster = server.ClusterOpts{Name: s.clusterName, Host: "127.0.0.1", Port: s.clusterPort}
		sopts.Routes = s.routes
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return fmt.Errorf("devenv: configure NATS server: %w", err)
	}
	srv.SetLogger(log, false, false)
	srv.Start()
	// Poll readiness in short steps so that a fatal start-up error (a port
	// in use, an unusable store) fails at once instead of at the timeout.
	deadline := time.Now().Add(readyTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		fatal := log.fatalf()
		if fatal == "" && time.Now().Before(deadline) {
			continue
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		if fatal != "" {
			return fmt.Errorf("devenv: NATS server on port %d failed to start: %s", sopts.Port, fatal)
		}
		return fmt.Errorf("devenv: NATS server on port %d not ready after %s: %s", sopts.Port, readyTimeout, log.errorsOr("no error logged"))
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("devenv: NATS server started without JetStream (store %s): %s", s.storeDir, log.errorsOr("no error logged"))
	}
	if s.port == 0 {
		addr, ok := srv.Addr().(*net.TCPAddr)
		if !ok {
			srv.Shutdown()
			srv.WaitForShutdown()
			return fmt.Errorf("devenv: NATS server listens on %v, not a TCP address", srv.Addr())
		}
		s.port = addr.Port
	}
	s.srv = srv
	return nil
}

// Shutdown stops the server and keeps its store: to JetStream and its
// clients it looks like a broker crash. Start brings it back. Shutdown of a
// stopped server is a no-op.
func (s *NATSServer) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart shuts the server down and starts it again on the same store and
// port.
func (s *NATSServer) Restart() error {
	s.Shutdown()
	return s.Start()
}

// Close shuts the server down for good and removes the store directory if
// StartNATS created it. It is safe to call more than once.
func (s *NATSServer) Close() {
	s.Shutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.ownsStore {
		_ = os.RemoveAll(s.storeDir)
	}
}

// serverLog adapts nats-server's Logger to a printf function and remembers
// the errors, which explain a failed start.
type serverLog struct {
	logf  func(format string, args ...any)
	mu    sync.Mutex
	errs  []string
	fatal string // the first fatal error
}

func (l *serverLog) fatalf() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *serverLog) record(format string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

func (l *serverLog) errorsOr(def string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return def
	}
	return strings.Join(l.errs, "; ")
}

func (l *serverLog) out(level, format string, args []any) {
	if l.logf != nil {
		l.logf(level+" "+format, args...)
	}
}

// Noticef implements server.Logger.
func (l *serverLog) Noticef(format string, args ...any) { l.out("[INF]", format, args) }

// Warnf implements server.Logger.
func (l *serverLog) Warnf(format string, args ...any) { l.out("[WRN]", format, args) }

// Fatalf implements server.Logger. Unlike nats-server's own logger it does
// not exit the process: the failure surfaces as an error from Start.
func (l *serverLog) Fatalf(format string, args ...any) {
	l.record(format, args)
	l.mu.Lock()
	if l.fatal == "" {
		l.fatal = fmt.Sprintf(format, args...)
	}
	l.mu.Unlock()
	l.out("[FTL]", format, args)
}

// Errorf implements server.Logger.
func (l *serverLog) Errorf(format string, args ...any) {
	l.record(format, args)
	l.out("[ERR]", format, args)
}

// Debugf implements server.Logger; debug logging is never enabled.
func (l *serverLog) Debugf(format string, args ...any) {}

// Tracef implements server.Logger; tracing is never enabled.
func (l *serverLog) Tracef(format string, args ...any) {}
