package participants_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/participants"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

// Booking is the payload of the hotel's step, as the saga's plan carries it.
type Booking struct {
	Room   int `json:"room"`
	Nights int `json:"nights"`
}

// Validate makes a nonsensical booking a poison command (rejected, never
// retried).
func (b Booking) Validate() error {
	if b.Room <= 0 || b.Nights <= 0 {
		return errors.New("room and nights must be positive")
	}
	return nil
}

// Example writes a participant: a hotel that books a room (action "Book")
// and cancels the booking (compensation "BookCompensate"). The handlers get
// the step's transaction; the barrier row and the outcome commit with them.
func Example() {
	ctx := context.Background()
	env := startExampleServers() // PostgreSQL and NATS; yours come from configuration
	defer env.stop()
	pool, js := env.pool, env.js

	if _, err := pool.Exec(ctx, `CREATE TABLE bookings (saga_id text PRIMARY KEY, room int NOT NULL UNIQUE, nights int NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	p, err := participants.New(participants.Config{Name: "hotel", Pool: pool, JetStream: js})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Migrate(ctx); err != nil { // the barrier table
		log.Fatal(err)
	}
	participants.Register(p, "Book", participants.Step[Booking]{
		Do: func(ctx context.Context, tx pgx.Tx, info participants.StepInfo, b Booking) (any, error) {
			_, err := tx.Exec(ctx, `INSERT INTO bookings VALUES ($1, $2, $3)`, info.SagaID, b.Room, b.Nights)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "bookings_room_key" {
				// A business failure: the saga compensates the steps before.
				return nil, participants.Failf("room %d is taken", b.Room)
			}
			if err != nil {
				return nil, err // transient: retried with backoff
			}
			return map[string]int{"room": b.Room}, nil // the outcome's result
		},
		Undo: func(ctx context.Context, tx pgx.Tx, info participants.StepInfo, b Booking) (any, error) {
			_, err := tx.Exec(ctx, `DELETE FROM bookings WHERE saga_id = $1`, info.SagaID)
			return nil, err
		},
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			log.Fatal(err)
		}
	}()

	// Play the coordinator: two sagas want room 7.
	for _, saga := range []string{"trip-1", "trip-2"} {
		cmd := events.Command{SagaID: saga, Participant: "hotel", Step: "hotel", Op: events.OpDo, Attempt: 1,
			Action: "Book", Payload: json.RawMessage(`{"room":7,"nights":2}`)}
		if _, err := participanttest.Send(ctx, js, events.Default(), cmd); err != nil {
			log.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		o, err := participanttest.WaitOutcome(wctx, js, events.Default(), cmd)
		cancel()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s %s%s\n", saga, o.Status, o.Reason, o.Result)
	}
	// Output:
	// trip-1: succeeded {"room":7}
	// trip-2: failed room 7 is taken
}

// exampleServers is a throwaway PostgreSQL database (on DATABASE_URL's
// server if set) and an embedded NATS server with jetsaga's streams.
type exampleServers struct {
	pg   *devenv.Postgres
	db   string
	pool *pgxpool.Pool
	nats *devenv.NATSServer
	nc   *nats.Conn
	js   jetstream.JetStream
}

func startExampleServers() *exampleServers {
	ctx := context.Background()
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
	e.db = "participants_example_" + hex.EncodeToString(rnd[:])
	if err := e.pg.CreateDatabase(ctx, e.db); err != nil {
		log.Fatal(err)
	}
	if e.pool, err = pgxpool.New(ctx, e.pg.URL(e.db)); err != nil {
		log.Fatal(err)
	}
	if e.nats, err = devenv.StartNATS(devenv.NATSOptions{}); err != nil {
		log.Fatal(err)
	}
	if e.nc, err = nats.Connect(e.nats.URL()); err != nil {
		log.Fatal(err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		log.Fatal(err)
	}
	if err := participanttest.CreateStreams(ctx, e.js, events.Default(), events.StreamOptions{}); err != nil {
		log.Fatal(err)
	}
	return e
}

func (e *exampleServers) stop() {
	e.nc.Close()
	e.nats.Close()
	e.pool.Close()
	if err := e.pg.DropDatabase(context.Background(), e.db); err != nil {
		log.Print(err)
	}
	if err := e.pg.Stop(); err != nil {
		log.Print(err)
	}
}
