// Package mapping is the gateway's mapping layer: the pure, side-effect free
// part that turns the `routes:` section of the configuration (SPEC §6) into
// a compiled, immutable [Table] the protocol adapters serve from.
//
// It owns:
//
//   - Templates ([Template]): one syntax for URL paths and MQTT topics.
//     "{name}" is exactly one path segment / topic level, "{name...}" is the
//     rest (one or more levels) and must come last; anything else is a
//     literal level. A template is compiled once ([ParsePathTemplate],
//     [ParseTopicTemplate]) and then matched ([Template.Match]) and filled
//     ([Template.Expand]) without maps and, for Match, without allocations.
//   - Route specifications ([RouteSpec] and friends): the YAML-facing types
//     of SPEC §6, and [Compile], which validates a whole list of them and
//     reports every problem at once as [*FieldError] values whose
//     [FieldError.FieldPath] ("routes[3].coap.path") the config loader turns
//     into FILE:LINE:COL.
//   - Egress and source routes: [Route.Subscribe] with [HTTPOut] or [CoAPOut]
//     and a defaulted [Delivery] policy, or a [Source]; URL and header
//     templates are [TextTemplate] values ("{var}" filled per message,
//     "${NAME}" from the environment at load).
//   - The compiled [Table] of [Route] values, with lookups for adapters that
//     do not register one handler per route ([Table.MatchHTTP],
//     [Table.MatchCoAP]) and a JSON description for GET /routes
//     ([Table.Describe]).
//   - Payload transforms ([Transform]): cbor-to-json and json-to-cbor, which
//     either convert the whole payload or fail with [ErrTransform], never
//     producing half a message.
//
// The package knows nothing of chi, go-coap or mochi and imports nothing else
// of this project. Imports point one way (STYLE §1): only the adapters
// (adapters/http, adapters/coap) and cmd/gateway import mapping; bridge and
// mapping are siblings that never import each other.
//
// # Topics and filters
//
// A topic template's [Template.Filter] is the MQTT subscription filter that
// receives exactly the topics the template can match, with one documented
// difference: "{x...}" matches one or more levels, while the filter "#" also
// matches the parent level [MQTT-4.7.1-2]. So "a/{rest...}" matches "a/b" and
// "a/" (rest is the empty level "") but not "a", whereas the filter "a/#"
// also matches "a". A variable in the first level never matches a topic that
// starts with '$', just as "+" and "#" do not [MQTT-4.7.2-1].
//
// # Paths
//
// Path templates match decoded paths (url.URL.Path for HTTP; "/" joined with
// the Uri-Path options for CoAP). A variable never matches an empty segment,
// and "{x...}" captures one or more non-empty segments joined by "/".
package mapping
