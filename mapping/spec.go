package mapping

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RouteSpec is one entry of the `routes:` list as written in YAML (SPEC §6).
// Decode it strictly (unknown keys are errors) and hand the list to
// [Compile]. A route is one of three kinds, told apart by its keys:
//
//   - ingress (and request/response): http and/or coap, topic, and
//     optionally qos, retain, content_type, transform, reply;
//   - egress: subscribe and exactly one of http_out or coap_out;
//   - source: source and topic (and optionally qos, retain, content_type).
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

	// Subscribe is the topic template of an egress route, e.g.
	// "alerts/{site}/{kind...}": the route receives every message its
	// [Template.Filter] matches, and the variables it captures fill the
	// URL and headers of http_out or coap_out.
	Subscribe string `yaml:"subscribe" json:"subscribe,omitempty"`
	// HTTPOut sends each message of an egress route as an HTTP request
	// (webhook).
	HTTPOut *HTTPOutSpec `yaml:"http_out" json:"http_out,omitempty"`
	// CoAPOut sends each message of an egress route as a CoAP request.
	CoAPOut *CoAPOutSpec `yaml:"coap_out" json:"coap_out,omitempty"`
	// Source makes the gateway observe (CoAP) or poll (HTTP) an endpoint and
	// publish what it gets to Topic.
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

// HTTPOutSpec is an egress route's `http_out:` key: each message becomes
// one HTTP request.
type HTTPOutSpec struct {
	// URL is the endpoint template, e.g. "https://ops.example/hooks/{site}":
	// http or https; {var} takes a variable captured by subscribe (escaped
	// for its place in the URL), ${NAME} an environment variable read at
	// load.
	URL string `yaml:"url" json:"url"`
	// Method is the HTTP method: POST (default), PUT, PATCH, DELETE or GET.
	Method string `yaml:"method" json:"method,omitempty"`
	// Headers are added to each request. Values may use {var} and ${NAME}
	// like URL; an unset environment variable is a load error.
	Headers map[string]string `yaml:"headers" json:"-"`
	// Body is "raw" (default: the payload as the body, the topic and MQTT 5
	// properties as headers) or "envelope" (the JSON envelope of SPEC §8).
	Body string `yaml:"body" json:"body,omitempty"`

	DeliverySpec `yaml:",inline"`
}

// CoAPOutSpec is an egress route's `coap_out:` key: each message becomes
// one CoAP request.
type CoAPOutSpec struct {
	// URL is the device URL template, e.g. "coaps://{dev}.lan:5684/valve":
	// coap (UDP) or coaps (DTLS, needs PSK).
	URL string `yaml:"url" json:"url"`
	// Method is the CoAP method: POST (default), PUT, DELETE or GET.
	Method string `yaml:"method" json:"method,omitempty"`
	// Confirmable sends CON requests (default true); false sends NON.
	Confirmable *bool `yaml:"confirmable" json:"confirmable,omitempty"`
	// PSK is the DTLS pre-shared key for coaps:// URLs.
	PSK *PSKSpec `yaml:"psk" json:"psk,omitempty"`

	DeliverySpec `yaml:",inline"`
}

// DeliverySpec holds the delivery keys that http_out and coap_out share.
// Every key is optional.
type DeliverySpec struct {
	// Retry is the retry policy for deliveries that failed for now (5xx /
	// 5.xx, timeout, connection error).
	Retry *RetrySpec `yaml:"retry" json:"retry,omitempty"`
	// Timeout bounds one delivery attempt; default [DefaultEgressTimeout].
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
	// MaxInFlight is how many requests of the route may be outstanding at
	// once; default [DefaultMaxInFlight]. With Ordered it must be 1 or
	// unset.
	MaxInFlight int `yaml:"max_in_flight" json:"max_in_flight,omitempty"`
	// Ordered delivers strictly one message at a time in arrival order: a
	// message that is being retried holds back every later one.
	Ordered bool `yaml:"ordered" json:"ordered,omitempty"`
	// Queue bounds the route's durable queue.
	Queue *QueueSpec `yaml:"queue" json:"queue,omitempty"`
}

// RetrySpec is an egress retry policy.
type RetrySpec struct {
	// MaxAttempts bounds the delivery attempts of one message (the first
	// one included); 0 or unset means no bound (the queue's bounds still
	// apply).
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts,omitempty"`
	// Backoff is the range of waits between attempts, "MIN..MAX" (e.g.
	// "1s..1m"; default "1s..1m"): the wait doubles from MIN up to MAX,
	// each shortened by up to 20 % jitter. A single duration is a constant
	// wait.
	Backoff string `yaml:"backoff" json:"backoff,omitempty"`
}

// QueueSpec bounds an egress route's durable queue.
type QueueSpec struct {
	// MaxItems bounds the messages waiting; default [DefaultQueueMaxItems].
	MaxItems int `yaml:"max_items" json:"max_items,omitempty"`
	// MaxBytes bounds the payload bytes waiting, e.g. 64MiB; default
	// [DefaultQueueMaxBytes].
	MaxBytes ByteSize `yaml:"max_bytes" json:"max_bytes,omitempty"`
	// Overflow says what happens to a new message when the queue is full:
	// "drop_oldest" (default: the oldest waiting message is dropped) or
	// "refuse_new" (the new message is dropped). Both are counted.
	Overflow string `yaml:"overflow" json:"overflow,omitempty"`
}

// PSKSpec is a DTLS pre-shared key for coap_out and coaps:// sources.
// The key is given exactly one way: inline, from a file or from an
// environment variable.
type PSKSpec struct {
	// Identity is the PSK identity.
	Identity string `yaml:"identity" json:"identity"`
	// KeyHex is the key, hex-encoded.
	KeyHex string `yaml:"key_hex" json:"-"`
	// KeyHexFile names a file holding the hex key; the config loader
	// resolves and reads it ([Route] keeps the name).
	KeyHexFile string `yaml:"key_hex_file" json:"-"`
	// KeyHexEnv names an environment variable holding the hex key.
	KeyHexEnv string `yaml:"key_hex_env" json:"-"`
}

// SourceSpec is a source route's `source:` key: exactly one of
// CoAPObserve and HTTPPoll.
type SourceSpec struct {
	// CoAPObserve is a coap:// or coaps:// URL to observe (RFC 7641);
	// each notification is published.
	CoAPObserve string `yaml:"coap_observe" json:"coap_observe,omitempty"`
	// HTTPPoll is an http:// or https:// URL to GET every Interval; a body
	// that changed is published.
	HTTPPoll string `yaml:"http_poll" json:"http_poll,omitempty"`
	// Interval between polls (http_poll only); default
	// [DefaultPollInterval].
	Interval Duration `yaml:"interval" json:"interval,omitempty"`
	// PSK is the DTLS pre-shared key for a coaps:// CoAPObserve URL.
	PSK *PSKSpec `yaml:"psk" json:"psk,omitempty"`
}

// ByteSize is a byte count written as 1024, "256KiB", "64MiB" or "1GiB".
type ByteSize int64

// UnmarshalText parses a size with an optional B, KiB, MiB or GiB suffix.
func (s *ByteSize) UnmarshalText(b []byte) error {
	txt := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(txt, u.suffix) {
			txt, mult = strings.TrimSpace(strings.TrimSuffix(txt, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(txt, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q: want bytes, or a number with KiB, MiB or GiB", string(b))
	}
	*s = ByteSize(n * mult)
	return nil
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
