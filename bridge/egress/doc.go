// Package egress is the gateway's delivery engine for the egress and source
// routes of SPEC §6: MQTT messages out to HTTP webhooks and CoAP devices,
// and observed or polled endpoints in to MQTT.
//
// For each egress route the [Engine] holds one broker subscription on the
// route's filter (bridge.SubOptions.Queue 0, so the handler runs on the
// publisher's goroutine during the broker's fan-out). The handler matches
// the topic against the route's subscribe template, encodes a record
// (topic, payload, MQTT 5 properties, captured variables, receive time) and
// puts it into the route's durable queue (bridge/queue) before it returns.
// The broker acknowledges a QoS ≥ 1 publish only after its fan-out has
// returned (a patch of the carried mochi), so a crash between broker and
// queue loses nothing: the publisher resends. That is the "fed at QoS 1" of
// SPEC §6. Puts from many publishers share fsyncs (the
// queue's group commit).
//
// Workers (max_in_flight per route, one when ordered) take records from the
// queue and hand them to the route's [Deliverer], which the protocol
// adapters implement (adapters/http: webhooks; adapters/coap: CoAP
// requests). Each result is classified: success acknowledges the record;
// an error marked [ErrPermanent] (4xx / 4.xx, a URL the message cannot
// fill) fails it, logged and counted, never retried; any other error (5xx /
// 5.xx, timeout, connection error) retries it with exponential backoff and
// jitter. Delivery is at-least-once: an endpoint may see a message twice
// after a crash or a timeout whose request did arrive.
//
// Reverse request/response: when the triggering message carries an MQTT 5
// Response Topic, the endpoint's final answer (success or permanent
// failure) is published there with the same Correlation Data, the answer's
// content type, and the user property "status" (HTTP status "204", CoAP
// code "2.05").
//
// Sources ([Source]) run under the engine with backoff after failure and
// publish each [Sample] to their route's topic.
//
// Metrics (per route, on the registry given in [Config]):
// gateway_egress_delivered_total, gateway_egress_retried_total,
// gateway_egress_failed_total, gateway_egress_dropped_total{reason},
// gateway_egress_queue_depth, gateway_egress_in_flight,
// gateway_egress_delivery_seconds (from broker receipt to acknowledged
// delivery), gateway_source_published_total and
// gateway_source_failures_total.
//
// Imports: bridge, bridge/queue and mapping; only cmd/gateway and the
// adapters' egress files import this package.
package egress
