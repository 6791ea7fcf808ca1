package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestHTTPParticipantAndGateway runs the two commands against a
// coordinator, submits a DTM saga to the gateway and sees it commit with
// the service called; then both stop on the interrupt with exit 0.
func TestHTTPParticipantAndGateway(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	var calls atomic.Int32
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.WriteString(w, `{"dtm_result":"SUCCESS"}`)
	}))
	defer svc.Close()
	addr := closedPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan result, 2)
	for _, args := range [][]string{
		{"http-participant", "--allow-url", strings.TrimPrefix(svc.URL, "http://"), "--nats-url", f.url},
		{"gateway", "--listen", addr, "--allow-url", svc.URL + "/api/", "--nats-url", f.url},
	} {
		go func() { results <- cliContext(ctx, nil, "", args...) }()
	}
	base := "http://" + addr + "/api/dtmsvr"
	body := fmt.Sprintf(`{"gid":"cli-1","trans_type":"saga","steps":[{"action":"%[1]s/api/TransOut","compensate":"%[1]s/api/TransOutCompensate"}],"payloads":["{}"],"wait_result":true}`, svc.URL)
	testenv.CheckFor(t, waitTotal, 50*time.Millisecond, func() error {
		resp, err := http.Post(base+"/submit", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var v map[string]any
		_ = json.Unmarshal(data, &v)
		if resp.StatusCode != 200 || v["dtm_result"] != "SUCCESS" {
			return fmt.Errorf("submit: %d %s", resp.StatusCode, data)
		}
		return nil
	})
	if calls.Load() != 1 {
		t.Errorf("service called %d times", calls.Load())
	}
	cancel()
	for range 2 {
		if r := <-results; r.code != exitOK {
			t.Errorf("%s", r)
		}
	}
}

func TestHTTPParticipantNeedsAllowedURLs(t *testing.T) {
	t.Parallel()
	wantOneLineError(t, cli(t, nil, "", "http-participant"), exitUsage, "--allow-url is required")
	wantOneLineError(t, cli(t, nil, "", "gateway", "--allow-url", "ftp://x"), exitUsage, "--allow-url")
}
