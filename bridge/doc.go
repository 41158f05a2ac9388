// Package bridge is the core of the gateway: it owns the embedded MQTT broker
// (mochi-mqtt v2), its listeners and its persistent storage, and exposes the
// one seam the protocol adapters use to reach MQTT: Publish, Subscribe and
// Retained over our own Message type.
//
// Adapters import bridge; bridge imports nothing else of this project, and no
// package but bridge imports mochi-mqtt. Handlers given to Subscribe run on
// a goroutine of the subscription (or, with a zero queue, on the publisher's
// goroutine), never block the broker for longer than their queue allows, and
// end when the subscription is closed.
package bridge
