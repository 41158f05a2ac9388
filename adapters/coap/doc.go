// Package coapadapter is the gateway's CoAP adapter: constrained devices
// publish, read and observe MQTT topics over CoAP on UDP (RFC 7252), DTLS
// (PSK and ECDSA certificates, RFC 9146 connection IDs) and TCP or TLS
// (RFC 8323), all served by the same handlers.
//
// It owns the generic resource /ps/{topic} of SPEC §5 (each topic level one
// Uri-Path option) and /.well-known/core (RFC 6690). POST publishes, PUT
// publishes retained, DELETE clears the retained message, GET reads it and
// GET with Observe registers an RFC 7641 observer fed by one shared bridge
// subscription per filter, fanned out into a bounded queue per observer.
//
// The adapter reaches MQTT only through package bridge (never mochi), and
// only cmd/gateway imports it.
//
// # Reusing the handlers (mapping layer)
//
// The request handlers are split from the /ps path parsing so that custom
// routes can reuse them: (*Server).publish(req, topic, defaults),
// (*Server).clear(req, topic), (*Server).read(req, topic) and
// (*Server).observe(req, filter) take an already resolved topic or filter.
// The mapping's routes are served through (*Server).SetTable (routes.go),
// swappable at run time, on every transport; /ps and /.well-known/core
// cannot be shadowed. Config.ExtraLinks adds entries to /.well-known/core.
//
// # UDP fast path
//
// The plain UDP transport does not use go-coap's udp/server: that server
// scans the whole response cache on every datagram (see README.md). Instead a
// read loop of our own builds each peer from go-coap's public pieces
// (udp/client.NewConnWithOpts with our Session and a time-bucketed
// de-duplication cache), so RFC 7252 §4.5 de-duplication stays on and costs
// O(1) per message. Reads and writes are batched (recvmmsg, sendmmsg), and
// notifications to UDP observers bypass go-coap's synchronous CON writes
// (fastnotify.go): no goroutine per observer, paced by the socket buffer.
package coapadapter
