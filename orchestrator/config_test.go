package orchestrator_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	_, js := testenv.Connect(t, testenv.NATS(t).URL())
	for _, tc := range []struct {
		field string
		cfg   orchestrator.Config
	}{
		{"JetStream", orchestrator.Config{}},
		{"Workers", orchestrator.Config{JetStream: js, Workers: -1}},
		{"MaxAckPending", orchestrator.Config{JetStream: js, MaxAckPending: -1}},
		{"CacheSize", orchestrator.Config{JetStream: js, CacheSize: -3}},
		{"AckWait", orchestrator.Config{JetStream: js, AckWait: -1}},
	} {
		_, err := orchestrator.NewCoordinator(tc.cfg)
		if !errors.Is(err, orchestrator.ErrInvalidConfig) || !strings.Contains(err.Error(), "Config."+tc.field+" ") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	if _, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js}); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
