package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/jetsaga/jetsaga/devenv"
)

// PartitionCluster is a NATS cluster whose routes run through proxies the
// test can cut: Isolate cuts a node off from every other (its clients stay
// connected to it), Heal joins it again. No route bypasses the proxies.
type PartitionCluster struct {
	Servers []*natsserver.Server
	// proxies[i][j] carries node i's route to node j.
	proxies [][]*routeProxy
}

// NewPartitionCluster starts n embedded NATS servers with JetStream, routed
// through proxies, and waits until a JetStream meta leader sees them all.
// Everything stops when the test ends. Of opts, SyncAlways applies.
func NewPartitionCluster(t testing.TB, n int, opts ...NATSOption) *PartitionCluster {
	t.Helper()
	var o devenv.NATSOptions
	for _, opt := range opts {
		opt(&o)
	}
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	c := &PartitionCluster{proxies: make([][]*routeProxy, n)}
	for i := range n {
		c.proxies[i] = make([]*routeProxy, n)
		var routes []*url.URL
		for j := range n {
			if j == i {
				continue
			}
			p := newRouteProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[j])))
			c.proxies[i][j] = p
			routes = append(routes, &url.URL{Scheme: "nats", Host: p.ln.Addr().String()})
		}
		s, err := natsserver.NewServer(&natsserver.Options{
			ServerName: "p" + strconv.Itoa(i+1), Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true,
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: o.SyncAlways,
			// The address a node gossips to other nodes for routes it was not
			// configured with leads nowhere: every route goes through a proxy.
			Cluster: natsserver.ClusterOpts{Name: "partitioned", Host: "127.0.0.1", Port: ports[i], Advertise: "127.0.0.1:1", NoAdvertise: true},
			Routes:  routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("testenv: NATS server %s not ready", s.Name())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// WaitJetStreamReady waits until a JetStream meta leader sees every node
// and every node is current with the meta group (after Heal, say).
func (c *PartitionCluster) WaitJetStreamReady(ctx context.Context) error {
	return devenv.WaitJetStreamReady(ctx, func() []*natsserver.Server { return c.Servers })
}

// URLs returns the client URLs of all nodes, comma-separated.
func (c *PartitionCluster) URLs() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Index returns the index of the node named name, or -1.
func (c *PartitionCluster) Index(name string) int {
	for i, s := range c.Servers {
		if s.Name() == name {
			return i
		}
	}
	return -1
}

// Isolate cuts node i off from every other node.
func (c *PartitionCluster) Isolate(i int) { c.setCut(i, true) }

// Heal joins node i to the others again.
func (c *PartitionCluster) Heal(i int) { c.setCut(i, false) }

func (c *PartitionCluster) setCut(i int, cut bool) {
	if i < 0 || i >= len(c.Servers) {
		panic(fmt.Sprintf("testenv: no node %d", i))
	}
	for j := range c.Servers {
		if j != i {
			c.proxies[i][j].setCut(cut)
			c.proxies[j][i].setCut(cut)
		}
	}
}

// routeProxy forwards TCP connections to a route port; cut, it closes
// them and refuses new ones.
type routeProxy struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func newRouteProxy(t testing.TB, to string) *routeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &routeProxy{ln: ln, to: to}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.forward(c)
		}
	}()
	return p
}

// forward joins c to a new connection to the route port, unless cut.
func (p *routeProxy) forward(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		c.Close()
		return
	}
	u, err := net.DialTimeout("tcp", p.to, time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.conns = append(p.conns, c, u)
	go func() { _, _ = io.Copy(u, c); u.Close() }()
	go func() { _, _ = io.Copy(c, u); c.Close() }()
}

func (p *routeProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}
