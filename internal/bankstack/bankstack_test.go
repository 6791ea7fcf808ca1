package bankstack

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/participants"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestDatabasePolicies starts the stack on an existing server with each
// database policy and checks what happens to the banks' databases, and that
// a component started with Go stops with the stack.
func TestDatabasePolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server := testenv.PostgresURL(t) // a server we may create databases on
	suffix := fmt.Sprint(time.Now().UnixNano())
	names := map[string]string{bank.BankA: "stack_a_" + suffix, bank.BankB: "stack_b_" + suffix}
	seeded := 0
	start := func(dbs Databases) *Stack {
		t.Helper()
		s, err := Start(ctx, Config{DatabaseURL: server, Databases: dbs, DatabaseNames: names,
			Seed: func(ctx context.Context, b string, pool *pgxpool.Pool) error {
				seeded++
				n, _, err := bank.Accounts(ctx, pool)
				if err != nil || n > 0 {
					return err // kept: already seeded
				}
				return bank.Seed(ctx, pool, map[int64]bank.Cents{1: 100})
			}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	accounts := func(s *Stack, b string) int {
		t.Helper()
		n, _, err := bank.Accounts(ctx, s.Pools[b])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Keep: created, then found again with its rows.
	s := start(KeepDatabases)
	p, err := participants.New(participants.Config{Name: bank.BankA, Pool: s.Pools[bank.BankA], JetStream: s.JS, Namespace: s.NS})
	if err != nil {
		t.Fatal(err)
	}
	bank.Register(p)
	s.Go(bank.BankA, p.Run)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s = start(KeepDatabases)
	if n := accounts(s, bank.BankA); n != 1 || s.DBNames[bank.BankA] != names[bank.BankA] {
		t.Fatalf("kept database %s has %d accounts", s.DBNames[bank.BankA], n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Recreate: emptied, and dropped at Close.
	s = start(RecreateDatabases)
	if err := s.PG.CreateDatabase(ctx, names[bank.BankA]); err == nil {
		t.Fatal("the recreated database does not exist")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = start(KeepDatabases) // created again: Recreate dropped it
	if n := accounts(s, bank.BankA); n != 1 {
		t.Fatalf("%d accounts after Recreate dropped the database and Keep seeded it", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Throwaway: names of their own, dropped at Close.
	s = start(ThrowawayDatabases)
	name := s.DBNames[bank.BankB]
	if name == names[bank.BankB] {
		t.Fatalf("throwaway database named %s, like the kept one", name)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = start(KeepDatabases) // the test server goes with the test binary
	defer s.Close()
	if err := s.PG.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("the throwaway database %s was not dropped: %v", name, err)
	}
	if seeded != 12 {
		t.Fatalf("seed ran %d times, want once per bank and start (12)", seeded)
	}
}
