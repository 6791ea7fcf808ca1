package orchestrator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestScanReadsAgainAfterLosingItsConsumer: a replay run while a cluster
// loses a node sees its consumer vanish between fetches (the CI run of the
// cluster-node-loss scenario failed with "no responders"). scan must start
// again after the last message it gave, so that every message matching the
// filters, up to the stream's last one when it began, is given once and in
// order.
func TestScanReadsAgainAfterLosingItsConsumer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.Connect(t, testenv.NATS(t).URL())
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := range 2500 {
		subject := "s.in." + fmt.Sprint(i)
		if i%5 == 4 {
			subject = "s.other." + fmt.Sprint(i) // not matched by the filter
		}
		ack, err := js.Publish(ctx, subject, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%5 != 4 {
			want = append(want, ack.Sequence)
		}
	}
	var got []uint64
	err = scan(ctx, js, "S", []string{"s.in.>"}, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		got = append(got, meta.Sequence.Stream)
		switch len(got) {
		case 1:
			// Published after the scan began: not read.
			if _, err := js.Publish(ctx, "s.in.late", nil); err != nil {
				return err
			}
		case 700, 1500:
			// The consumer vanishes, as with the server it lived on.
			for name := range s.ListConsumers(ctx).Info() {
				if err := s.DeleteConsumer(ctx, name.Name); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scan gave %d messages, want %d (first difference at %d)", len(got), len(want), firstDifference(got, want))
	}
}

func firstDifference(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
