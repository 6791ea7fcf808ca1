package orchestrator_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// Example starts a transfer saga and waits for its end: a coordinator and
// the two bank participants run in this process, on an embedded NATS server
// and a throwaway PostgreSQL (or DATABASE_URL's server).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startExample(ctx)
	defer env.stop()

	// The service that wants a transfer only needs a client.
	client := orchestrator.NewClient(env.js, events.Default())
	defer client.Close()
	plan := orchestrator.NewPlan("transfer").
		Step("debit", bank.BankA, "TransOut", "TransOutCompensate", bank.TransferReq{UserID: 1, Amount: 30_00}).
		Step("credit", bank.BankB, "TransIn", "TransInCompensate", bank.TransferReq{UserID: 2, Amount: 30_00},
			orchestrator.Timeout(10*time.Second))
	id, err := client.Start(ctx, plan)
	if err != nil {
		log.Fatal(err)
	}
	state, err := client.Wait(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	a, _ := bank.Balance(ctx, env.pools[0], 1)
	b, _ := bank.Balance(ctx, env.pools[1], 2)
	fmt.Println("saga:", state.Status)
	fmt.Println("bank-a user 1:", a)
	fmt.Println("bank-b user 2:", b)
	// Output:
	// saga: committed
	// bank-a user 1: 70.00
	// bank-b user 2: 130.00
}

// exampleEnv is the infrastructure of the example: in production these are
// separate services.
type exampleEnv struct {
	pg    *devenv.Postgres
	srv   *devenv.NATSServer
	nc    *nats.Conn
	js    jetstream.JetStream
	dbs   []string
	pools []*pgxpool.Pool
	stops []func()
}

func startExample(ctx context.Context) *exampleEnv {
	e := &exampleEnv{}
	var err error
	if u := os.Getenv("DATABASE_URL"); u != "" {
		e.pg, err = devenv.ExternalPostgres(u)
	} else {
		e.pg, err = devenv.StartPostgres(devenv.PGOptions{})
	}
	if err != nil {
		log.Fatal(err)
	}
	if e.srv, err = devenv.StartNATS(devenv.NATSOptions{}); err != nil {
		log.Fatal(err)
	}
	if e.nc, err = nats.Connect(e.srv.URL()); err != nil {
		log.Fatal(err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	// The coordinator creates the streams and the state bucket.
	if err := orchestrator.EnsureStreams(ctx, e.js, events.Default(), events.StreamOptions{}); err != nil {
		log.Fatal(err)
	}
	coord, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: e.js, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	e.run(coord.Run)
	// Each bank: its own database, its tables, its participant.
	for _, name := range []string{bank.BankA, bank.BankB} {
		db := fmt.Sprintf("example_%s_%d", name[len(name)-1:], time.Now().UnixNano())
		if err := e.pg.CreateDatabase(ctx, db); err != nil {
			log.Fatal(err)
		}
		e.dbs = append(e.dbs, db)
		pool, err := pgxpool.New(ctx, e.pg.URL(db))
		if err != nil {
			log.Fatal(err)
		}
		e.pools = append(e.pools, pool)
		if err := participants.Migrate(ctx, pool); err != nil {
			log.Fatal(err)
		}
		if err := bank.Migrate(ctx, pool); err != nil {
			log.Fatal(err)
		}
		if err := bank.Seed(ctx, pool, map[int64]bank.Cents{1: 100_00, 2: 100_00}); err != nil {
			log.Fatal(err)
		}
		p, err := participants.New(participants.Config{Name: name, Pool: pool, JetStream: e.js, Logger: quiet})
		if err != nil {
			log.Fatal(err)
		}
		bank.Register(p)
		e.run(p.Run)
	}
	return e
}

// run runs a service until stop.
func (e *exampleEnv) run(f func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil {
			log.Print(err)
		}
	}()
	e.stops = append(e.stops, func() { cancel(); <-done })
}

func (e *exampleEnv) stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	for _, p := range e.pools {
		p.Close()
	}
	for _, db := range e.dbs {
		_ = e.pg.DropDatabase(context.Background(), db)
	}
	e.nc.Close()
	e.srv.Close()
	_ = e.pg.Stop()
}
