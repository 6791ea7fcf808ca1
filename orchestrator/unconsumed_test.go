package orchestrator

import "testing"

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"saga.cmd.bank-a.*", "saga.cmd.bank-a.x", true},
		{"saga.cmd.bank-a.*", "saga.cmd.bank-b.x", false},
		{"saga.cmd.*.*", "saga.cmd.bank-z.x", true},
		{"saga.cmd.>", "saga.cmd.bank-z.x", true},
		{">", "saga.cmd.bank-z.x", true},
		{"saga.cmd.bank-a", "saga.cmd.bank-a.x", false},
		{"saga.cmd.bank-a.*.*", "saga.cmd.bank-a.x", false},
		{"other.cmd.bank-a.*", "saga.cmd.bank-a.x", false},
	} {
		if got := subjectMatches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}
