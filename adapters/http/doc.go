// Package httpadapter is the gateway's HTTP side: a chi v5 server that lets
// web apps publish to topics, read retained messages and stream topics as
// Server-Sent Events (SPEC §4, §8), on top of the bridge seam. It never talks
// to the MQTT broker implementation directly.
//
// Who imports it: cmd/gateway (to run it) and, later, the mapping layer code
// of this same package (custom routes reuse the unexported publish,
// readRetained and stream handlers). It imports bridge and nothing else of
// the gateway.
//
// Lifecycle: New checks the Config and builds the router; Start binds the
// listener and returns once it listens; Shutdown ends SSE streams, drains
// in-flight requests and is idempotent. Every goroutine the package starts is
// owned by the Server (the accept loop) or by net/http (one per request; SSE
// streams run on their request's goroutine).
//
// Topics in URLs: the topic is the escaped path after /topics/, split on '/'
// and each level percent-decoded (see topicFromPath for the exact rules).
//
// Errors are application/problem+json (RFC 9457); the single error → status
// table is problemFor in problem.go.
package httpadapter
