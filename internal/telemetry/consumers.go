package telemetry

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerReadTimeout bounds the JetStream requests of one scrape.
const ConsumerReadTimeout = 5 * time.Second

// consumerCacheFor is how long a scrape reuses the consumers read by the
// previous one: several scrapers (or a fast one) cost JetStream nothing more.
const consumerCacheFor = 2 * time.Second

var (
	consumerPending = prometheus.NewDesc(Namespace+"_consumer_pending_messages",
		"Messages of the stream that the consumer has not delivered yet (JetStream's num_pending).",
		[]string{"stream", "consumer"}, nil)
	consumerAckPending = prometheus.NewDesc(Namespace+"_consumer_ack_pending_messages",
		"Messages delivered and not acknowledged yet (JetStream's num_ack_pending).",
		[]string{"stream", "consumer"}, nil)
	consumerMaxAckPending = prometheus.NewDesc(Namespace+"_consumer_max_ack_pending_messages",
		"The consumer's max_ack_pending: deliveries stop while ack-pending is at it.",
		[]string{"stream", "consumer"}, nil)
	consumerRedelivered = prometheus.NewDesc(Namespace+"_consumer_redelivered_messages",
		"Messages delivered more than once and not acknowledged yet (JetStream's num_redelivered).",
		[]string{"stream", "consumer"}, nil)
	consumerReadErrors = prometheus.NewDesc(Namespace+"_consumer_read_errors_total",
		"Scrapes that could not read the consumers' state from JetStream.",
		nil, nil)
)

// ConsumerReader reads the state of some consumers.
type ConsumerReader func(ctx context.Context) ([]*jetstream.ConsumerInfo, error)

// ConsumerCollector reports JetStream consumers' pending and ack-pending
// counts, read from JetStream when scraped (at most every two seconds; a
// scrape within that reuses the last reading). A registry holds one: see
// RegisterConsumers.
type ConsumerCollector struct {
	mu      sync.Mutex
	readers []ConsumerReader
	at      time.Time
	last    []*jetstream.ConsumerInfo
	errors  uint64
}

// RegisterConsumers has the registry's consumer collector read the consumers
// read returns too, registering the collector if the registry has none yet
// (the coordinator and the participants of one process share one registry,
// and each reports the consumers it can see; a consumer seen twice is
// reported once).
func RegisterConsumers(reg prometheus.Registerer, read ConsumerReader) error {
	c := &ConsumerCollector{readers: []ConsumerReader{read}}
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*ConsumerCollector); ok {
			existing.mu.Lock()
			existing.readers = append(existing.readers, read)
			existing.at = time.Time{}
			existing.mu.Unlock()
			return nil
		}
	}
	return err
}

// Describe implements prometheus.Collector.
func (c *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- consumerPending
	ch <- consumerAckPending
	ch <- consumerMaxAckPending
	ch <- consumerRedelivered
	ch <- consumerReadErrors
}

// Collect implements prometheus.Collector.
func (c *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= consumerCacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), ConsumerReadTimeout)
		c.last = c.last[:0]
		seen := map[[2]string]bool{}
		for _, read := range c.readers {
			infos, err := read(ctx)
			if err != nil {
				c.errors++
			}
			for _, ci := range infos {
				if k := [2]string{ci.Stream, ci.Name}; !seen[k] {
					seen[k] = true
					c.last = append(c.last, ci)
				}
			}
		}
		cancel()
		c.at = time.Now()
	}
	for _, ci := range c.last {
		ch <- prometheus.MustNewConstMetric(consumerPending, prometheus.GaugeValue, float64(ci.NumPending), ci.Stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(consumerAckPending, prometheus.GaugeValue, float64(ci.NumAckPending), ci.Stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(consumerMaxAckPending, prometheus.GaugeValue, float64(ci.Config.MaxAckPending), ci.Stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(consumerRedelivered, prometheus.GaugeValue, float64(ci.NumRedelivered), ci.Stream, ci.Name)
	}
	ch <- prometheus.MustNewConstMetric(consumerReadErrors, prometheus.CounterValue, float64(c.errors))
}
