package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// recordingRegisterer keeps the collectors registered through it.
type recordingRegisterer struct{ collectors []prometheus.Collector }

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}
func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}
func (r *recordingRegisterer) Unregister(prometheus.Collector) bool { return false }

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// exportedMetrics returns every metric the services export (the
// coordinator's, the participants', Go's and the process's) with its
// labels.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	rec := &recordingRegisterer{}
	if _, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, Registerer: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := participants.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	ch := make(chan *prometheus.Desc, 1024)
	for _, c := range rec.collectors {
		c.Describe(ch)
	}
	close(ch)
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read descriptor %s", d)
		}
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		out[m[1]] = labels
	}
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName())
			}
		}
		out[mf.GetName()] = labels
	}
	return out
}

// metricRef is a metric named in an expression, with the labels its
// selector matches on.
type metricRef struct {
	name   string
	labels []string
}

var (
	metricRE   = regexp.MustCompile(`\b((?:jetsaga|go|process)_[a-zA-Z0-9_]+|up)\b(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	histSuffix = []string{"_bucket", "_sum", "_count"}
)

// metricRefs finds the metrics an expression names.
func metricRefs(expr string) []metricRef {
	var out []metricRef
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		r := metricRef{name: m[1]}
		for _, l := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			r.labels = append(r.labels, l[1])
		}
		out = append(out, r)
	}
	return out
}

// checkRefs checks that every metric expr names is exported, with the
// labels its selector uses; where says where expr is.
func checkRefs(t *testing.T, exported map[string][]string, where, expr string) {
	t.Helper()
	refs := metricRefs(expr)
	if len(refs) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	for _, r := range refs {
		if r.name == "up" { // Prometheus' own, per target
			continue
		}
		labels, ok := exported[r.name]
		if !ok {
			for _, s := range histSuffix {
				if base, cut := strings.CutSuffix(r.name, s); cut {
					labels, ok = exported[base]
					labels = append(slices.Clone(labels), "le")
				}
			}
		}
		if !ok {
			t.Errorf("%s: metric %s is not exported by jetsaga", where, r.name)
			continue
		}
		for _, l := range r.labels {
			if l != "job" && l != "instance" && !slices.Contains(labels, l) {
				t.Errorf("%s: metric %s has no label %q (it has %v)", where, r.name, l, labels)
			}
		}
	}
}

// TestDeployAlertsAndDashboard: deploy/'s Prometheus alert rules and
// Grafana dashboard parse, have what their tools need, and every metric
// (and label) they name is one that jetsaga exports.
func TestDeployAlertsAndDashboard(t *testing.T) {
	t.Parallel()
	exported := exportedMetrics(t)

	data, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "jetsaga-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("deploy/prometheus/jetsaga-alerts.yml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want alert, expr, a severity label, a summary and a description: %+v", where, r)
			}
			alerts[r.Alert] = true
			checkRefs(t, exported, where, r.Expr)
		}
	}
	// The conditions an operator must hear about.
	for _, a := range []string{"JetsagaCoordinatorDown", "JetsagaSagasParked", "JetsagaOldestSagaTooOld",
		"JetsagaConsumerAckPendingAtLimit", "JetsagaOutboxBacklog"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}

	data, err = os.ReadFile(filepath.Join(deployDir, "grafana", "jetsaga-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("deploy/grafana/jetsaga-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard: title %q, uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	if len(dash.Templating.List) != 1 || dash.Templating.List[0].Type != "datasource" || dash.Templating.List[0].Query != "prometheus" {
		t.Errorf("dashboard: want one Prometheus data source variable, got %+v", dash.Templating.List)
	}
	named := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Title == "" || p.Type == "" || len(p.Targets) == 0 {
			t.Errorf("panel %+v: want a title, a type and targets", p)
		}
		for _, tg := range p.Targets {
			checkRefs(t, exported, "panel "+p.Title, tg.Expr)
			for _, r := range metricRefs(tg.Expr) {
				named[strings.TrimSuffix(strings.TrimSuffix(r.name, "_bucket"), "_count")] = true
			}
		}
	}
	// Every jetsaga metric is on the dashboard.
	for name := range exported {
		if strings.HasPrefix(name, "jetsaga_") && !strings.HasSuffix(name, "_read_errors_total") && name != "jetsaga_coordinator_census_ready" &&
			!named[name] && !strings.HasPrefix(name, "jetsaga_coordinator_messages_") {
			t.Errorf("metric %s is on no panel of the dashboard", name)
		}
	}
}
