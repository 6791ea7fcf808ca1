package orchestrator

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsaga/jetsaga/internal/telemetry"
)

// census counts the sagas that are not finished — running, compensating,
// parked — by name, for the gauges of the coordinator's metrics. It watches
// the state bucket (a stateFollower of the coordinator's watch, with the
// timers), so every instance sees every saga whichever instance wrote it:
// it reads the bucket's current values when it starts (a full decode only
// for the unfinished sagas among them), then every state written. Of an
// update it reads only the status and the name, at the head of the JSON; it
// keeps only unfinished sagas in memory.
type census struct {
	names *telemetry.Limiter

	mu    sync.Mutex
	ready bool
	sagas map[string]censusEntry
	seen  map[string]bool // every name label reported so far

	initial map[string]censusEntry // the current values of a new watch, being read
}

type censusEntry struct {
	name      string // the label value (limited)
	status    Status
	startedMS int64
}

// censusStatuses are the statuses the census counts.
var censusStatuses = []Status{Running, Compensating, Parked}

var (
	sagasDesc = prometheus.NewDesc(telemetry.Namespace+"_sagas",
		"Sagas that are not finished, by saga name and status (running, compensating, parked), as the state bucket holds them; every coordinator instance reports the same values (aggregate with max).",
		[]string{"name", "status"}, nil)
	oldestDesc = prometheus.NewDesc(telemetry.Namespace+"_saga_oldest_age_seconds",
		"Age of the oldest saga in each unfinished status (running, compensating, parked), from its start; 0 when there is none.",
		[]string{"status"}, nil)
	censusReadyDesc = prometheus.NewDesc(telemetry.Namespace+"_coordinator_census_ready",
		"1 once the saga gauges have read the whole state bucket, 0 before.",
		nil, nil)
)

func newCensus(names *telemetry.Limiter) *census {
	return &census{names: names, sagas: map[string]censusEntry{}, seen: map[string]bool{}}
}

// begin, apply and loaded make the census a stateFollower: the current
// values are counted apart and replace the counts once all are read.
func (c *census) begin() { c.initial = map[string]censusEntry{} }

func (c *census) apply(e jetstream.KeyValueEntry, initial bool) {
	if initial {
		c.record(c.initial, e, true)
		return
	}
	c.mu.Lock()
	c.record(c.sagas, e, false)
	c.mu.Unlock()
}

func (c *census) loaded() {
	c.mu.Lock()
	c.sagas, c.ready = c.initial, true
	for _, s := range c.initial {
		c.seen[s.name] = true
	}
	c.mu.Unlock()
	c.initial = nil
}

// record records one entry of the bucket in m.
func (c *census) record(m map[string]censusEntry, e jetstream.KeyValueEntry, initial bool) {
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, key)
		return
	}
	status, name, ok := stateHead(e.Value())
	if !ok || status.Terminal() {
		delete(m, key)
		return
	}
	if old, ok := m[key]; ok {
		old.status = status
		m[key] = old
		return
	}
	started := e.Created().UnixMilli() // a saga's first state is written at its start
	if initial {
		if st, err := decodeState(e.Value()); err == nil && st.StartedMS != 0 {
			started = st.StartedMS
		}
	}
	label := c.names.Value(name)
	m[key] = censusEntry{name: label, status: status, startedMS: started}
	if !initial {
		c.seen[label] = true
	}
}

// stateHead reads the status and the name of an encoded State without
// decoding the rest: encodeState writes "v", "saga_id", "name" (omitted when
// empty) and "status" first. A quote inside a JSON string is always escaped,
// so the first `"status":"` is the key.
func stateHead(data []byte) (status Status, name string, ok bool) {
	head := data[:min(len(data), 1024)]
	st, ok := jsonStringAfter(head, `"status":"`)
	if !ok {
		var s struct {
			Name   string `json:"name"`
			Status Status `json:"status"`
		}
		if json.Unmarshal(data, &s) != nil {
			return "", "", false
		}
		return s.Status, s.Name, true
	}
	name, _ = jsonStringAfter(head, `"name":"`)
	return Status(st), name, true
}

// jsonStringAfter returns the JSON string that follows key (which ends with
// its opening quote).
func jsonStringAfter(data []byte, key string) (string, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := data[i+len(key):]
	escaped := false
	for j := 0; j < len(rest); j++ {
		switch {
		case rest[j] == '\\':
			escaped = true
			j++
		case rest[j] == '"':
			if !escaped {
				return string(rest[:j]), true
			}
			var s string
			if json.Unmarshal(data[i+len(key)-1:i+len(key)+j+1], &s) != nil {
				return "", false
			}
			return s, true
		}
	}
	return "", false
}

func (c *census) Describe(ch chan<- *prometheus.Desc) {
	ch <- sagasDesc
	ch <- oldestDesc
	ch <- censusReadyDesc
}

func (c *census) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := map[[2]string]int{}
	oldest := map[Status]int64{}
	for _, s := range c.sagas {
		counts[[2]string{s.name, string(s.status)}]++
		if o, ok := oldest[s.status]; !ok || s.startedMS < o {
			oldest[s.status] = s.startedMS
		}
	}
	for name := range c.seen {
		for _, st := range censusStatuses {
			ch <- prometheus.MustNewConstMetric(sagasDesc, prometheus.GaugeValue, float64(counts[[2]string{name, string(st)}]), name, string(st))
		}
	}
	for _, st := range censusStatuses {
		age := 0.0
		if ms, ok := oldest[st]; ok {
			age = max(sinceMS(ms).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, string(st))
	}
	ready := 0.0
	if c.ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(censusReadyDesc, prometheus.GaugeValue, ready)
}
