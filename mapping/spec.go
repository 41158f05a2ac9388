package mapping

import (
	"fmt"
	"time"
)

// RouteSpec is one entry of the `routes:` list as written in YAML (SPEC §6).
// Decode it strictly (unknown keys are errors) and hand the list to
// [Compile]. Only ingress and request/response routes are implemented; the
// egress and source fields (Subscribe, HTTPOut, CoAPOut, Source) parse so
// that a config written for a later version is understood, but [Compile]
// rejects them.
type RouteSpec struct {
	// Name identifies the route in errors, logs, metrics and GET /routes.
	Name string `yaml:"name" json:"name"`
	// HTTP binds an HTTP path to Topic.
	HTTP *HTTPSpec `yaml:"http" json:"http,omitempty"`
	// CoAP binds a CoAP path to Topic.
	CoAP *CoAPSpec `yaml:"coap" json:"coap,omitempty"`
	// Topic is the topic template requests publish to and read from.
	Topic string `yaml:"topic" json:"topic,omitempty"`
	// QoS of publishes; nil means 1.
	QoS *int `yaml:"qos" json:"qos,omitempty"`
	// Retain makes publishes retained.
	Retain bool `yaml:"retain" json:"retain,omitempty"`
	// ContentType is the MQTT 5 content type of publishes; with a Transform
	// it defaults to the transform's output type.
	ContentType string `yaml:"content_type" json:"content_type,omitempty"`
	// Transform converts request payloads: "cbor-to-json" or "json-to-cbor".
	Transform string `yaml:"transform" json:"transform,omitempty"`
	// Reply makes the route request/response over MQTT.
	Reply *ReplySpec `yaml:"reply" json:"reply,omitempty"`

	// Subscribe is the topic template of an egress route (not supported yet).
	Subscribe string `yaml:"subscribe" json:"subscribe,omitempty"`
	// HTTPOut is an egress webhook (not supported yet).
	HTTPOut *HTTPOutSpec `yaml:"http_out" json:"http_out,omitempty"`
	// CoAPOut is an egress CoAP request (not supported yet).
	CoAPOut *CoAPOutSpec `yaml:"coap_out" json:"coap_out,omitempty"`
	// Source makes the gateway observe or poll an endpoint (not supported yet).
	Source *SourceSpec `yaml:"source" json:"source,omitempty"`
}

// HTTPSpec is a route's `http:` key.
type HTTPSpec struct {
	// Path is a path template, e.g. "/sensors/{id}/temperature".
	Path string `yaml:"path" json:"path"`
	// Methods allowed; nil means GET, POST, PUT, DELETE (POST for reply
	// routes). Valid: GET, POST, PUT, DELETE, PATCH.
	Methods []string `yaml:"methods" json:"methods,omitempty"`
}

// CoAPSpec is a route's `coap:` key.
type CoAPSpec struct {
	// Path is a path template, e.g. "/s/{id}/t".
	Path string `yaml:"path" json:"path"`
	// Methods allowed; nil means GET, POST, PUT, DELETE (POST for reply
	// routes). Valid: GET, POST, PUT, DELETE.
	Methods []string `yaml:"methods" json:"methods,omitempty"`
}

// ReplySpec is a route's `reply:` key: the gateway publishes the request and
// answers with the first reply.
type ReplySpec struct {
	// Topic is the reply topic template; empty means a per-request reply
	// topic chosen by the gateway.
	Topic string `yaml:"topic" json:"topic,omitempty"`
	// Timeout is how long to wait for the reply; zero means
	// [DefaultReplyTimeout].
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// HTTPOutSpec is an egress route's `http_out:` key (parsed, not supported yet).
type HTTPOutSpec struct {
	// URL is the endpoint template, e.g. "https://ops.example/hooks/{site}".
	URL string `yaml:"url" json:"url"`
	// Method is the HTTP method, e.g. POST.
	Method string `yaml:"method" json:"method,omitempty"`
	// Headers are added to each request.
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Body is "raw" (the payload) or "envelope" (SPEC §8).
	Body string `yaml:"body" json:"body,omitempty"`
	// Retry is the retry policy for failed deliveries.
	Retry *RetrySpec `yaml:"retry" json:"retry,omitempty"`
}

// RetrySpec is an egress retry policy (parsed, not supported yet).
type RetrySpec struct {
	// MaxAttempts bounds the delivery attempts.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts,omitempty"`
	// Backoff is the range of waits between attempts, e.g. "1s..1m".
	Backoff string `yaml:"backoff" json:"backoff,omitempty"`
}

// CoAPOutSpec is an egress route's `coap_out:` key (parsed, not supported yet).
type CoAPOutSpec struct {
	// URL is the device URL template, e.g. "coaps://{dev}.lan:5684/valve".
	URL string `yaml:"url" json:"url"`
	// Method is the CoAP method, e.g. PUT.
	Method string `yaml:"method" json:"method,omitempty"`
	// Confirmable sends CON requests.
	Confirmable bool `yaml:"confirmable" json:"confirmable,omitempty"`
	// PSK is the DTLS pre-shared key for coaps:// URLs.
	PSK *PSKSpec `yaml:"psk" json:"psk,omitempty"`
}

// PSKSpec is a DTLS pre-shared key for coap_out (parsed, not supported yet).
// The key is given inline, from a file or from an environment variable.
type PSKSpec struct {
	// Identity is the PSK identity.
	Identity string `yaml:"identity" json:"identity"`
	// KeyHex is the key, hex-encoded.
	KeyHex string `yaml:"key_hex" json:"-"`
	// KeyHexFile names a file holding the hex key.
	KeyHexFile string `yaml:"key_hex_file" json:"-"`
	// KeyHexEnv names an environment variable holding the hex key.
	KeyHexEnv string `yaml:"key_hex_env" json:"-"`
}

// SourceSpec is a source route's `source:` key (parsed, not supported yet).
type SourceSpec struct {
	// CoAPObserve is a CoAP URL to observe (RFC 7641).
	CoAPObserve string `yaml:"coap_observe" json:"coap_observe,omitempty"`
	// HTTPPoll is an HTTP URL to poll.
	HTTPPoll string `yaml:"http_poll" json:"http_poll,omitempty"`
	// Interval between polls.
	Interval Duration `yaml:"interval" json:"interval,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("5s",
// "1m30s") in YAML and JSON.
type Duration time.Duration

// UnmarshalText parses a Go duration string. YAML decoders (goccy/go-yaml,
// yaml.v3) and encoding/json call it for string values.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a Go duration such as \"5s\" or \"1m30s\"", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// String returns d as a Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
