// Package devenv starts real infrastructure for development, demos,
// benchmarks and tests: embedded NATS servers with JetStream on disk
// (single node or a loopback cluster) and throwaway PostgreSQL clusters
// built from the locally installed server binaries.
//
// It is not a test package: the jetsaga demo, dev and bench commands and
// the packages' examples use it, and so can a user's own examples, tests and
// tools (what runs in production is a real NATS deployment and PostgreSQL
// server). This repository's tests use internal/testenv, which wraps it with
// testing.TB lifecycles.
//
// # NATS
//
//	srv, err := devenv.StartNATS(devenv.NATSOptions{SyncAlways: true})
//	if err != nil {
//		return err
//	}
//	defer srv.Close()
//	nc, err := nats.Connect(srv.URL())
//
// Shutdown stops a server but keeps its store, Start brings it back on the
// same store directory and port (a broker crash and recovery), and Close
// stops it for good and removes a store directory it created.
//
// StartCluster runs n servers on 127.0.0.1 with explicit routes and
// JetStream clustering; each node can be shut down and started again on its
// own to simulate a node loss.
//
// # PostgreSQL
//
// StartPostgres runs initdb and postgres from the local installation
// (found on PATH or under /usr/lib/postgresql/*/bin, highest version first)
// in a new temporary directory, listening on 127.0.0.1 at a free port with
// full durability (fsync and synchronous_commit on). When the current user
// is root the binaries run as the postgres user, since PostgreSQL refuses to
// run as root. ExternalPostgres wraps an existing server (for example
// DATABASE_URL) behind the same API.
//
// # No orphaned postmasters
//
// The postmaster is started directly (not through pg_ctl, which would
// detach it) with a parent-death signal of SIGKILL, so the kernel kills it
// if this process dies, even on a crash or a test-timeout panic; its
// backends notice the postmaster's death and exit on their own. Linux
// delivers the parent-death signal when the thread that forked the child
// exits, not the process, and Go may retire threads at any time, so the
// fork happens on a goroutine locked to its OS thread that stays alive,
// waiting for the postmaster, until the postmaster has exited. A directory
// left behind by a killed process is removed by the next StartPostgres.
package devenv
