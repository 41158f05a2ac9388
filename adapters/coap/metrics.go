package coapadapter

import "github.com/prometheus/client_golang/prometheus"

// metrics are the adapter's Prometheus metrics, all prefixed gateway_coap_.
type metrics struct {
	requests      *prometheus.CounterVec // by transport and response code
	published     *prometheus.CounterVec // by qos
	peers         *prometheus.GaugeVec   // by transport
	refused       prometheus.Counter
	observers     prometheus.Gauge
	notifications *prometheus.CounterVec // by type (con, non, tcp)
	dropped       prometheus.Counter
	ended         *prometheus.CounterVec // by reason
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_coap_requests_total", Help: "CoAP requests answered, by transport and response code.",
		}, []string{"transport", "code"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_coap_published_total", Help: "Messages published into the broker from CoAP, by QoS.",
		}, []string{"qos"}),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_coap_peers", Help: "CoAP peers (UDP endpoints, DTLS sessions, TCP connections) tracked.",
		}, []string{"transport"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_coap_refused_datagrams_total", Help: "Datagrams from new peers refused because of the peer limit.",
		}),
		observers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_coap_observers", Help: "Active CoAP observations.",
		}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_coap_notifications_total", Help: "Observe notifications sent, by message type.",
		}, []string{"type"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_coap_notifications_dropped_total", Help: "Notifications dropped because an observer's queue was full or the payload too large.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_coap_observations_ended_total", Help: "Observations ended, by reason.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.published, m.peers, m.refused, m.observers, m.notifications, m.dropped, m.ended} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
