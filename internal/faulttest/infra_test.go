package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// clusterReady bounds the wait for a cluster to be whole again after a node
// came back.
const clusterReady = 2 * time.Minute

// shortRestarts bounds the NATS restarts of the short form: each costs the
// clients a reconnection and their JetStream consumers a recovery.
const shortRestarts = 4

// restartNATS restarts the NATS server on its store directory (a broker
// crash to JetStream and every client), down for 0-1s: a few times in the
// short form (every 2-5s, at most shortRestarts), every 8-15s in the long
// one.
func restartNATS(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	lo, hi, limit := 2*time.Second, 5*time.Second, shortRestarts
	if soak() {
		lo, hi, limit = 8*time.Second, 15*time.Second, 0
	}
	for (limit == 0 || n < limit) && pause(ctx, rng, lo, hi) {
		s.single.Shutdown()
		n++
		time.Sleep(between(rng, 0, time.Second))
		if err := s.single.Start(); err != nil {
			return n, fmt.Errorf("restart NATS: %w", err)
		}
	}
	return n, nil
}

// loseClusterNodes stops one node of the 3-node cluster for 2-4s, brings it
// back and waits until the cluster is whole and current again, then after
// 1-3s stops another node, and so on (twice in the short form). R3 streams
// and bucket keep a quorum throughout.
func loseClusterNodes(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	return eachNodeInTurn(ctx, rng, len(s.cluster.Servers), func(i int) func() error {
		node := s.cluster.Servers[i]
		node.Shutdown()
		return func() error {
			if err := node.Start(); err != nil {
				return fmt.Errorf("restart node %s: %w", node.Name(), err)
			}
			return nil
		}
	}, s.cluster.WaitJetStreamReady)
}

// eachNodeInTurn takes one node of a cluster of n out with out(i), which
// returns how to bring it back; after 2-4s brings it back and waits until
// ready says the cluster is whole again; then after 1-3s the next node
// (another than last time): twice in the short form, until ctx ends in the
// soak. It returns how many times it took a node out.
func eachNodeInTurn(ctx context.Context, rng *rand.Rand, n int, out func(i int) (back func() error), ready func(context.Context) error) (int, error) {
	times, last, limit := 0, -1, 2
	if soak() {
		limit = 0
	}
	for (limit == 0 || times < limit) && pause(ctx, rng, time.Second, 3*time.Second) {
		i := rng.IntN(n - 1)
		if i >= last && last >= 0 {
			i++ // another node than last time
		}
		last = i
		back := out(i)
		times++
		time.Sleep(between(rng, 2*time.Second, 4*time.Second))
		if err := back(); err != nil {
			return times, err
		}
		c, cancel := context.WithTimeout(context.Background(), clusterReady)
		err := ready(c)
		cancel()
		if err != nil {
			return times, err
		}
	}
	return times, nil
}

// terminateBackends terminates every session of the banks' two databases
// (but the test's own) every 0.3-1.5s: the participants lose connections in
// the middle of transactions, of commits, and while idle in their pools.
func terminateBackends(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	dbs := []string{s.poolA.Config().ConnConfig.Database, s.poolB.Config().ConnConfig.Database}
	for pause(ctx, rng, 300*time.Millisecond, 1500*time.Millisecond) {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var killed int
		err := s.poolA.QueryRow(c, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = ANY($1) AND pid <> pg_backend_pid() AND application_name <> $2`, dbs, testAppName).Scan(&killed)
		cancel()
		if err != nil {
			return n, fmt.Errorf("pg_terminate_backend: %w", err)
		}
		n += killed
	}
	return n, nil
}

// partitionClusterNodes cuts one node of the 3-node cluster off from the
// other two for 2-4s — its clients (the services connected to it) stay
// connected to it, and it goes on answering what it can — then joins it
// again and waits until the cluster is whole and current, then after 1-3s
// the next (another node than last time); 2 partitions (unlimited in the
// soak).
func partitionClusterNodes(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	return eachNodeInTurn(ctx, rng, len(s.partition.Servers), func(i int) func() error {
		s.partition.Isolate(i)
		return func() error { s.partition.Heal(i); return nil }
	}, s.partition.WaitJetStreamReady)
}
