package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a NATS cluster of embedded servers on 127.0.0.1 with explicit
// routes and clustered JetStream.
type Cluster struct {
	// Servers are the nodes, in order n1, n2, ... Each can be shut down and
	// started again on its own (a node loss); its ports and store survive.
	Servers []*NATSServer

	storeDir  string
	ownsStore bool
}

// StartCluster starts n NATS servers on 127.0.0.1, routed to each other,
// with JetStream clustering on and a store directory per node, and waits
// until every node accepts connections. Call WaitJetStreamReady before
// creating streams. opts.Port is ignored: client and cluster ports are
// chosen up front so that restarted nodes come back at the same addresses.
func StartCluster(n int, opts NATSOptions) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("devenv: StartCluster: n must be at least 1, got %d", n)
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cluster{storeDir: opts.StoreDir}
	if c.storeDir == "" {
		dir, err := os.MkdirTemp("", "jetsaga-nats-cluster-*")
		if err != nil {
			return nil, fmt.Errorf("devenv: create cluster store directory: %w", err)
		}
		c.storeDir, c.ownsStore = dir, true
	}
	prefix := opts.ServerName
	if prefix == "" {
		prefix = "n"
	}
	clusterName := opts.ClusterName
	if clusterName == "" {
		clusterName = "jetsaga"
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		c.Close()
		return nil, err
	}
	clientPorts, clusterPorts := ports[:n], ports[n:]
	for i := range n {
		var routes []*url.URL
		for j, p := range clusterPorts {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
			}
		}
		name := prefix + strconv.Itoa(i+1)
		nodeOpts := opts
		nodeOpts.Port = clientPorts[i]
		nodeOpts.ServerName = name
		if opts.Logf != nil {
			logf := opts.Logf
			nodeOpts.Logf = func(format string, args ...any) { logf("%s: "+format, append([]any{name}, args...)...) }
		}
		c.Servers = append(c.Servers, &NATSServer{
			opts:        nodeOpts,
			port:        clientPorts[i],
			storeDir:    filepath.Join(c.storeDir, name),
			name:        name,
			clusterName: clusterName,
			clusterPort: clusterPorts[i],
			routes:      routes,
		})
	}
	// Start the nodes concurrently: each waits for its listeners only, but
	// JetStream's meta group needs its peers, so sequential starts would
	// pay every node's start-up in turn.
	errs := make(chan error, n)
	for _, s := range c.Servers {
		go func() { errs <- s.Start() }()
	}
	var startErr error
	for range n {
		startErr = errors.Join(startErr, <-errs)
	}
	if startErr != nil {
		c.Close()
		return nil, startErr
	}
	return c, nil
}

// URLs returns the client URLs of all nodes, comma-separated, as
// nats.Connect accepts them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// WaitJetStreamReady waits until a JetStream meta leader is elected, it
// sees every running node as an online peer, and every running node is
// current with the meta group; or until ctx ends. Until the leader knows
// all its peers, losing it can leave the rest unable to elect another, so
// call this after StartCluster and after a node comes back.
func (c *Cluster) WaitJetStreamReady(ctx context.Context) error {
	return WaitJetStreamReady(ctx, func() []*server.Server {
		var running []*server.Server
		for _, s := range c.Servers {
			if srv := s.Server(); srv != nil {
				running = append(running, srv)
			}
		}
		return running
	})
}

// WaitJetStreamReady waits until the servers that running returns (asked
// again at every check) form a whole JetStream cluster: a meta leader that
// sees each of them as an online peer, each current with the meta group;
// or until ctx ends. For clusters not started by StartCluster (a test's
// own, say); Cluster.WaitJetStreamReady is the same for a Cluster.
func WaitJetStreamReady(ctx context.Context, running func() []*server.Server) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		servers := running()
		leader, peers, current := "", 0, true
		for _, srv := range servers {
			if srv.JetStreamIsLeader() {
				leader = srv.Name()
				peers = len(srv.JetStreamClusterPeers())
			}
			if !srv.JetStreamIsCurrent() {
				current = false
			}
		}
		if len(servers) > 0 && leader != "" && peers == len(servers) && current {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devenv: JetStream cluster not ready: %d nodes running, meta leader %q seeing %d online peers, all current: %t: %w",
				len(servers), leader, peers, current, ctx.Err())
		case <-tick.C:
		}
	}
}

// Close shuts every node down and removes the store directory if
// StartCluster created it. It is safe to call more than once.
func (c *Cluster) Close() {
	for _, s := range c.Servers {
		s.Close()
	}
	if c.ownsStore {
		_ = os.RemoveAll(c.storeDir)
	}
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago. All listeners are held open until every port is known, so the
// ports are distinct.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("devenv: find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
