package httpadapter

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/gateway/bridge"
)

// Metric names. Message counters and the publish histogram carry an
// "adapter" label so that the CoAP adapter can register the very same
// collectors (same name, help and labels) on the same registry: New reuses a
// collector that is already registered.
const (
	metricMessagesIn  = "gateway_messages_in_total"
	metricMessagesOut = "gateway_messages_out_total"
	metricPublish     = "gateway_publish_duration_seconds"
	metricErrors      = "gateway_http_errors_total"
	metricSSEStreams  = "gateway_http_sse_streams"
	metricSSEDropped  = "gateway_http_sse_dropped_total"
	metricClients     = "gateway_broker_clients"
)

// metrics are the adapter's Prometheus collectors.
type metrics struct {
	in         *prometheus.CounterVec   // adapter, route
	out        *prometheus.CounterVec   // adapter, route
	publish    *prometheus.HistogramVec // adapter, qos
	errs       *prometheus.CounterVec   // status
	sseStreams prometheus.Gauge
	sseDropped prometheus.Counter

	// Hot-path children, resolved once.
	inTopics   prometheus.Counter
	publishQoS [3]prometheus.Observer

	mu       sync.Mutex
	errCache map[int]prometheus.Counter
}

// newMetrics creates the collectors and registers them on reg.
func newMetrics(reg prometheus.Registerer, b *bridge.Broker) (*metrics, error) {
	m := &metrics{errCache: map[int]prometheus.Counter{}}
	m.in = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricMessagesIn,
		Help: "Messages published into the broker by an adapter, by adapter and route.",
	}, []string{"adapter", "route"})
	m.out = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricMessagesOut,
		Help: "Messages delivered by an adapter to its clients, by adapter and route.",
	}, []string{"adapter", "route"})
	m.publish = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricPublish,
		Help:    "Time for the broker to take a message published by an adapter, by adapter and QoS.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"adapter", "qos"})
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricErrors,
		Help: "HTTP error responses, by status code.",
	}, []string{"status"})
	m.sseStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricSSEStreams,
		Help: "Open Server-Sent Events streams.",
	})
	m.sseDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metricSSEDropped,
		Help: "Messages dropped because an SSE client did not keep up (its queue was full).",
	})
	clients := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricClients,
		Help: "MQTT clients connected to the embedded broker.",
	}, func() float64 { return float64(b.Stats().ClientsConnected) })

	var err error
	m.in = register(reg, m.in, &err)
	m.out = register(reg, m.out, &err)
	m.publish = register(reg, m.publish, &err)
	m.errs = register(reg, m.errs, &err)
	m.sseStreams = register(reg, m.sseStreams, &err)
	m.sseDropped = register(reg, m.sseDropped, &err)
	_ = register(reg, prometheus.Collector(clients), &err)
	if err != nil {
		return nil, err
	}
	m.inTopics = m.in.WithLabelValues("http", routeTopics)
	for q := range m.publishQoS {
		m.publishQoS[q] = m.publish.WithLabelValues("http", strconv.Itoa(q))
	}
	return m, nil
}

// register registers c, or returns the equal collector already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}

// messagesIn counts one message published on route.
func (m *metrics) messagesIn(route string) {
	if route == routeTopics {
		m.inTopics.Inc()
		return
	}
	m.in.WithLabelValues("http", route).Inc()
}

// messagesOut counts n messages delivered on route.
func (m *metrics) messagesOut(route string, n int) {
	m.out.WithLabelValues("http", route).Add(float64(n))
}

// errors counts one error response.
func (m *metrics) errors(status int) {
	m.mu.Lock()
	c, ok := m.errCache[status]
	if !ok {
		c = m.errs.WithLabelValues(strconv.Itoa(status))
		m.errCache[status] = c
	}
	m.mu.Unlock()
	c.Inc()
}
