package participants_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/participants"
)

func TestReadBarrier(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	ctx := context.Background()
	if err := participants.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, reason, result, attempt) VALUES
		('s2', 'debit', 'do', 'succeeded', NULL, '{"n":1}', 1),
		('s1', 'credit', 'do', 'voided', 'compensated before it ran', NULL, 1),
		('s1', 'credit', 'undo', 'compensated', NULL, NULL, 2)`)
	if err != nil {
		t.Fatal(err)
	}
	all, err := participants.ReadBarrier(ctx, pool, participants.BarrierQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].SagaID != "s1" || all[0].Op != events.OpDo || all[0].Status != participants.BarrierVoided ||
		all[0].Reason == "" || all[1].Status != participants.BarrierCompensated || all[1].Attempt != 2 ||
		string(all[2].Result) != `{"n": 1}` || all[2].Created.IsZero() {
		t.Fatalf("rows: %+v", all)
	}
	one, err := participants.ReadBarrier(ctx, pool, participants.BarrierQuery{SagaID: "s2"})
	if err != nil || len(one) != 1 || !participants.Applied(&one[0], nil) {
		t.Fatalf("rows of s2: %+v, %v", one, err)
	}
	if _, err := participants.ReadBarrier(ctx, pool, participants.BarrierQuery{Table: "bad;table"}); err == nil || !strings.Contains(err.Error(), "Table") {
		t.Fatalf("a bad table name: %v", err)
	}
}
