package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/gateway/bridge"
)

// registerBrokerMetrics exposes the embedded broker's counters at /metrics.
func registerBrokerMetrics(reg prometheus.Registerer, b *bridge.Broker) error {
	gauge := func(name, help string, f func(bridge.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_broker_" + name, Help: help},
			func() float64 { return float64(f(b.Stats())) })
	}
	counter := func(name, help string, f func(bridge.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gateway_broker_" + name, Help: help},
			func() float64 { return float64(f(b.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		gauge("subscriptions", "MQTT client subscriptions.", func(s bridge.Stats) int64 { return s.Subscriptions }),
		gauge("retained_messages", "Retained messages held.", func(s bridge.Stats) int64 { return s.Retained }),
		gauge("inflight_messages", "QoS 1/2 messages awaiting acknowledgement.", func(s bridge.Stats) int64 { return s.Inflight }),
		counter("messages_received_total", "PUBLISH packets received from MQTT clients.", func(s bridge.Stats) int64 { return s.MessagesReceived }),
		counter("messages_sent_total", "PUBLISH packets sent to MQTT clients.", func(s bridge.Stats) int64 { return s.MessagesSent }),
		counter("messages_dropped_total", "Messages dropped for a client whose write queue was full.", func(s bridge.Stats) int64 { return s.MessagesDropped }),
		counter("inflight_dropped_total", "QoS 1/2 messages dropped for a subscriber over its in-flight limit.", func(s bridge.Stats) int64 { return s.InflightDropped }),
		counter("late_replies_total", "Request/response replies that arrived after their request ended.", func(s bridge.Stats) int64 { return s.LateReplies }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
