package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/outbox"
)

// Example writes a business row and a message in one transaction; the relay
// running in the same process publishes the message to JetStream right
// after the commit.
func Example() {
	ctx := context.Background()
	// A throwaway PostgreSQL and NATS for this example; yours come from
	// configuration.
	env := startExampleServers()
	defer env.stop()

	pool, err := pgxpool.New(ctx, env.databaseURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	nc, err := nats.Connect(env.natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		log.Fatal(err)
	}

	// Once per deployment (safe to run from every instance at start-up).
	if err := outbox.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id bigint PRIMARY KEY, total_cents bigint NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// The relay, woken in memory by writers that share ob.
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	relay, err := outbox.NewRelay(pool, js, outbox.RelayConfig{Outbox: ob})
	if err != nil {
		log.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() {
		stopRelay()
		if err := <-relayDone; err != nil {
			log.Fatal(err)
		}
	}()

	// The business transaction: the order and its event commit together,
	// and the relay is woken after the commit.
	err = ob.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total_cents) VALUES (42, 1999)`); err != nil {
			return err
		}
		return ob.Write(ctx, tx, outbox.Message{
			ID:      "order/42/created",
			Subject: "orders.created",
			Data:    []byte(`{"id":42,"total_cents":1999}`),
		})
	})
	if err != nil {
		log.Fatal(err)
	}

	// A consumer sees the event once.
	cons, err := js.OrderedConsumer(ctx, "ORDERS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Subject(), msg.Headers().Get(jetstream.MsgIDHeader), string(msg.Data()))
	// Output: orders.created order/42/created {"id":42,"total_cents":1999}
}

// exampleServers are the example's PostgreSQL database (on DATABASE_URL's
// server if set, else a throwaway cluster) and embedded NATS server.
type exampleServers struct {
	pg          *devenv.Postgres
	db          string
	databaseURL string
	nats        *devenv.NATSServer
	natsURL     string
}

func startExampleServers() *exampleServers {
	e := &exampleServers{}
	var err error
	if u := os.Getenv("DATABASE_URL"); u != "" {
		e.pg, err = devenv.ExternalPostgres(u)
	} else {
		e.pg, err = devenv.StartPostgres(devenv.PGOptions{})
	}
	if err != nil {
		log.Fatal(err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e.db = "outbox_example_" + hex.EncodeToString(rnd[:])
	if err := e.pg.CreateDatabase(context.Background(), e.db); err != nil {
		log.Fatal(err)
	}
	e.databaseURL = e.pg.URL(e.db)
	if e.nats, err = devenv.StartNATS(devenv.NATSOptions{}); err != nil {
		log.Fatal(err)
	}
	e.natsURL = e.nats.URL()
	return e
}

func (e *exampleServers) stop() {
	e.nats.Close()
	if err := e.pg.DropDatabase(context.Background(), e.db); err != nil {
		log.Print(err)
	}
	if err := e.pg.Stop(); err != nil {
		log.Print(err)
	}
}
