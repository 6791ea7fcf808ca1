package dtmgateway_test

import (
	"testing"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
