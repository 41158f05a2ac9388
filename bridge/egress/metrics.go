package egress

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exports the per-route counters the queues and routes keep.
type metrics struct {
	e       *Engine
	latency *prometheus.HistogramVec

	delivered, retried, failed, dropped, depth, inFlight, replies *prometheus.Desc
	srcPublished, srcFailures                                     *prometheus.Desc
}

func newMetrics(e *Engine) *metrics {
	route := []string{"route"}
	return &metrics{
		e: e,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_egress_delivery_seconds",
			Help:    "Time from the broker receiving a message to its acknowledged delivery, by egress route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, route),
		delivered:    prometheus.NewDesc("gateway_egress_delivered_total", "Messages delivered (2xx / 2.xx) by egress route.", route, nil),
		retried:      prometheus.NewDesc("gateway_egress_retried_total", "Delivery attempts that failed and were scheduled again (5xx / 5.xx, timeout, connection error).", route, nil),
		failed:       prometheus.NewDesc("gateway_egress_failed_total", "Messages given up: 4xx / 4.xx answers, attempts exhausted, expired or unreadable.", route, nil),
		dropped:      prometheus.NewDesc("gateway_egress_dropped_total", "Messages dropped by a full queue, by policy (drop_oldest: an old one made room; refuse_new: the new one was refused).", []string{"route", "reason"}, nil),
		depth:        prometheus.NewDesc("gateway_egress_queue_depth", "Messages waiting or in flight in the egress queue.", route, nil),
		inFlight:     prometheus.NewDesc("gateway_egress_in_flight", "Deliveries under way.", route, nil),
		replies:      prometheus.NewDesc("gateway_egress_replies_total", "Endpoint answers published to a Response Topic.", route, nil),
		srcPublished: prometheus.NewDesc("gateway_source_published_total", "Samples a source route published.", route, nil),
		srcFailures:  prometheus.NewDesc("gateway_source_failures_total", "Times a source route stopped with an error and was run again.", route, nil),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	return errors.Join(reg.Register(m.latency), reg.Register(m))
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.delivered, m.retried, m.failed, m.dropped, m.depth, m.inFlight, m.replies, m.srcPublished, m.srcFailures} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, r := range m.e.routes {
		s := r.stats()
		n := r.cfg.Name
		counter(m.delivered, s.Delivered, n)
		counter(m.retried, s.Retried, n)
		counter(m.failed, s.Failed, n)
		counter(m.dropped, s.Dropped, n, "drop_oldest")
		counter(m.dropped, s.Refused, n, "refuse_new")
		counter(m.replies, s.Replies, n)
		ch <- prometheus.MustNewConstMetric(m.depth, prometheus.GaugeValue, float64(s.Depth), n)
		ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(s.InFlight), n)
	}
	for _, s := range m.e.sources {
		counter(m.srcPublished, s.published.Load(), s.cfg.Name)
		counter(m.srcFailures, s.failures.Load(), s.cfg.Name)
	}
}
