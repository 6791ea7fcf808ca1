// Package telemetrytest reads metrics the way Prometheus does, for tests:
// it scrapes an HTTP endpoint or gathers a registry, and parses the text
// exposition with Prometheus' own parser.
package telemetrytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are parsed metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (a /metrics endpoint) and parses the text exposition.
func Scrape(url string) (Families, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("GET %s: content type %q, want the text format", url, ct)
	}
	return Parse(body)
}

// Parse parses a text exposition.
func Parse(body []byte) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse the exposition: %w\n%s", err, body)
	}
	return mfs, nil
}

// ScrapeRegistry serves reg over HTTP with client_golang's handler, as the
// services do, scrapes it once and parses what it got.
func ScrapeRegistry(reg *prometheus.Registry) (Families, error) {
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	return Scrape(srv.URL)
}

// Value returns the value of the sample of name whose labels include
// labels: a counter's or a gauge's value, a histogram's sample count.
// Labels are "k=v" pairs. ok is false when there is no such sample.
func (f Families) Value(name string, labels ...string) (v float64, ok bool) {
	mf := f[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Want is a sample's expected value, as Value reads it.
type Want struct {
	Name   string
	Labels []string // "k=v" pairs the sample's labels include
	Value  float64
}

// Check says which of wants f does not hold, each with the value found.
func (f Families) Check(wants ...Want) error {
	var errs []error
	for _, w := range wants {
		if got, ok := f.Value(w.Name, w.Labels...); !ok || got != w.Value {
			errs = append(errs, fmt.Errorf("%s%v = %v (present %v), want %v", w.Name, w.Labels, got, ok, w.Value))
		}
	}
	return errors.Join(errs...)
}

// Sum adds the values of every sample of name whose labels include labels.
func (f Families) Sum(name string, labels ...string) float64 {
	mf := f[name]
	sum := 0.0
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Series lists every series of the families whose names start with prefix,
// as Prometheus stores them (a histogram is a series per bucket, plus _sum
// and _count), sorted: name{label="value",...}.
func (f Families) Series(prefix string) []string {
	var out []string
	for name, mf := range f {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(labels)
			base := strings.Join(labels, ",")
			if h := m.Histogram; h != nil {
				for _, b := range h.GetBucket() {
					out = append(out, fmt.Sprintf("%s_bucket{%s,le=%q}", name, base, fmt.Sprint(b.GetUpperBound())))
				}
				out = append(out, name+"_bucket{"+base+`,le="+Inf"}`, name+"_sum{"+base+"}", name+"_count{"+base+"}")
				continue
			}
			out = append(out, name+"{"+base+"}")
		}
	}
	sort.Strings(out)
	return out
}

// ContainsAny reports whether a series (as Series lists it) has one of
// values as a label value.
func ContainsAny(series string, values ...string) bool {
	for _, v := range values {
		if strings.Contains(series, fmt.Sprintf("=%q", v)) {
			return true
		}
	}
	return false
}
