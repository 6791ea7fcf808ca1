// Package testenv gives tests real infrastructure: embedded NATS servers
// (single node or cluster) and fresh PostgreSQL databases, each cleaned up
// through testing.TB, on top of devenv.
//
// # Setup
//
// Every test package that uses it declares
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Main runs the tests, stops the PostgreSQL cluster the binary started (if
// any), and then fails the run if goroutines leaked.
//
// # NATS
//
//	srv := testenv.NATS(t)                 // JetStream on t.TempDir(), random port
//	nc, js := testenv.Connect(t, srv.URL()) // reconnects across srv.Restart()
//	c := testenv.Cluster(t, 3)             // meta leader elected; testenv.Connect(t, c.URLs())
//	ctx := testenv.ClusterContext(t)       // its requests wait a minute, not 5 s
//
// # PostgreSQL
//
//	pool := testenv.Postgres(t)  // a pgxpool on a fresh database of its own
//	url := testenv.PostgresURL(t) // or just the fresh database's URL
//
// The server is DATABASE_URL's if that is set (databases are created on it
// and dropped after each test), otherwise one throwaway cluster per test
// binary, started on first use from the local PostgreSQL binaries. If
// neither is available the test fails with instructions; it never skips.
//
// # Polling
//
// Use CheckFor instead of sleeping:
//
//	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { ... })
package testenv
