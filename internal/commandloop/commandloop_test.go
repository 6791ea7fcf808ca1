package commandloop

import (
	"strings"
	"testing"
	"time"
)

func TestFill(t *testing.T) {
	for _, tc := range []struct {
		in          Settings
		want        Settings
		field, says string
	}{
		{in: Settings{}, want: Settings{Concurrency: 16, MaxAckPending: 64, AckWait: 30 * time.Second, ShutdownTimeout: 30 * time.Second}},
		{in: Settings{Concurrency: 2, AckWait: time.Second}, want: Settings{Concurrency: 2, MaxAckPending: 8, AckWait: time.Second, ShutdownTimeout: time.Second}},
		{in: Settings{Concurrency: 4, MaxAckPending: 4, ShutdownTimeout: time.Minute},
			want: Settings{Concurrency: 4, MaxAckPending: 4, AckWait: 30 * time.Second, ShutdownTimeout: time.Minute}},
		{in: Settings{Concurrency: -1}, field: "Concurrency", says: "negative (-1)"},
		{in: Settings{AckWait: -time.Second}, field: "AckWait", says: "negative"},
		{in: Settings{AckWait: 50 * time.Millisecond}, field: "AckWait", says: "the minimum is 100ms"},
		{in: Settings{MaxAckPending: -3}, field: "MaxAckPending", says: "negative (-3)"},
		{in: Settings{Concurrency: 8, MaxAckPending: 4}, field: "MaxAckPending", says: "below Concurrency (8)"},
		{in: Settings{ShutdownTimeout: -time.Second}, field: "ShutdownTimeout", says: "negative"},
	} {
		s := tc.in
		err := s.Fill(16, 30*time.Second)
		if tc.field == "" {
			if err != nil || s != tc.want {
				t.Errorf("Fill(%+v) = %+v, %v; want %+v", tc.in, s, err, tc.want)
			}
			continue
		}
		if err == nil || err.Field != tc.field || !strings.Contains(err.Problem, tc.says) {
			t.Errorf("Fill(%+v) = %v; want %s %s", tc.in, err, tc.field, tc.says)
		}
	}
}
