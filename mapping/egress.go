package mapping

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Defaults of egress and source routes.
const (
	// DefaultEgressTimeout bounds one delivery attempt when `timeout` is
	// not set.
	DefaultEgressTimeout = 10 * time.Second
	// DefaultMaxInFlight is how many deliveries of one route may be
	// outstanding when `max_in_flight` is not set.
	DefaultMaxInFlight = 4
	// DefaultBackoffMin and DefaultBackoffMax are the retry backoff when
	// `retry.backoff` is not set ("1s..1m").
	DefaultBackoffMin = time.Second
	// DefaultBackoffMax is the longest wait between retries by default.
	DefaultBackoffMax = time.Minute
	// DefaultQueueMaxItems bounds a route's queue when `queue.max_items`
	// is not set.
	DefaultQueueMaxItems = 10_000
	// DefaultQueueMaxBytes bounds a route's queue when `queue.max_bytes`
	// is not set.
	DefaultQueueMaxBytes = 64 << 20
	// DefaultPollInterval is how often an http_poll source polls when
	// `interval` is not set.
	DefaultPollInterval = 10 * time.Second
	// MinPollInterval is the shortest allowed polling interval.
	MinPollInterval = 100 * time.Millisecond
)

// Body modes of http_out.
const (
	// BodyRaw sends the payload as the body; the topic and MQTT 5
	// properties travel as headers.
	BodyRaw = "raw"
	// BodyEnvelope sends the JSON envelope of SPEC §8.
	BodyEnvelope = "envelope"
)

// Overflow policies of an egress queue.
const (
	// OverflowDropOldest drops the oldest waiting message to make room.
	OverflowDropOldest = "drop_oldest"
	// OverflowRefuseNew drops the new message.
	OverflowRefuseNew = "refuse_new"
)

var (
	httpOutMethods = []string{"POST", "PUT", "PATCH", "DELETE", "GET"}
	coapOutMethods = []string{"POST", "PUT", "DELETE", "GET"}
)

// HTTPOut is a compiled `http_out:`.
type HTTPOut struct {
	// URL is the endpoint template (http or https).
	URL *TextTemplate
	// Method is the HTTP method, upper case.
	Method string
	// Headers are added to each request, sorted by name.
	Headers []Header
	// Body is [BodyRaw] or [BodyEnvelope].
	Body string
}

// Header is one configured request header.
type Header struct {
	// Name is the header name as written.
	Name string
	// Value is the value template (environment variables already expanded).
	Value *TextTemplate
}

// CoAPOut is a compiled `coap_out:`.
type CoAPOut struct {
	// URL is the device URL template (coap or coaps).
	URL *TextTemplate
	// Method is the CoAP method, upper case.
	Method string
	// Confirmable sends CON requests; false sends NON.
	Confirmable bool
	// PSK is the DTLS key for coaps URLs, nil for coap.
	PSK *PSK
}

// PSK is a DTLS pre-shared key. Key is set when the key was given inline or
// by environment variable; KeyFile when it is to be read from a file, which
// the config loader resolves against the config file's folder.
type PSK struct {
	// Identity is the PSK identity.
	Identity string
	// Key is the decoded key.
	Key []byte
	// KeyFile names a file holding the hex key.
	KeyFile string
}

// Delivery is how an egress route delivers: attempts, timeouts,
// concurrency, order and queue bounds, all defaulted.
type Delivery struct {
	// Timeout bounds one attempt.
	Timeout time.Duration
	// MaxInFlight is how many attempts may be outstanding at once (1 when
	// Ordered).
	MaxInFlight int
	// Ordered delivers one at a time in arrival order.
	Ordered bool
	// MaxAttempts bounds the attempts per message; 0 means no bound.
	MaxAttempts int
	// BackoffMin is the first wait before a retry.
	BackoffMin time.Duration
	// BackoffMax is the longest wait before a retry.
	BackoffMax time.Duration
	// QueueMaxItems bounds the queued messages.
	QueueMaxItems int
	// QueueMaxBytes bounds the queued payload bytes.
	QueueMaxBytes int64
	// Overflow is [OverflowDropOldest] or [OverflowRefuseNew].
	Overflow string
}

// Source is a compiled `source:`; exactly one of CoAPObserve and HTTPPoll
// is set.
type Source struct {
	// CoAPObserve is the coap:// or coaps:// URL to observe.
	CoAPObserve string
	// HTTPPoll is the http:// or https:// URL to poll.
	HTTPPoll string
	// Interval between polls (HTTPPoll only).
	Interval time.Duration
	// PSK is the DTLS key for a coaps:// CoAPObserve URL.
	PSK *PSK
}

// EgressInfo describes an egress route's endpoint for GET /routes; header
// values are left out, they may hold secrets.
type EgressInfo struct {
	// URL is the URL template as written.
	URL string `json:"url"`
	// Method is the request method.
	Method string `json:"method"`
	// Headers are the names of the configured headers.
	Headers []string `json:"headers,omitempty"`
	// Body is raw or envelope (http_out only).
	Body string `json:"body,omitempty"`
	// Confirmable is set for CON requests (coap_out only).
	Confirmable bool `json:"confirmable,omitempty"`
	// Ordered is set for routes that deliver in order.
	Ordered bool `json:"ordered,omitempty"`
	// MaxInFlight is the route's concurrency.
	MaxInFlight int `json:"max_in_flight"`
}

// SourceInfo describes a source route for GET /routes.
type SourceInfo struct {
	// CoAPObserve is the observed URL.
	CoAPObserve string `json:"coap_observe,omitempty"`
	// HTTPPoll is the polled URL.
	HTTPPoll string `json:"http_poll,omitempty"`
	// Interval is the polling interval, a Go duration.
	Interval string `json:"interval,omitempty"`
}

// IsEgress reports whether r is an egress route (subscribe with http_out or
// coap_out).
func (r *Route) IsEgress() bool { return r.Subscribe != nil }

// IsSource reports whether r is a source route.
func (r *Route) IsSource() bool { return r.Source != nil }

// ingressKeys lists the keys an ingress route may have that egress and
// source routes must not, with whether the spec sets them.
func ingressKeys(s *RouteSpec) []struct {
	key string
	set bool
} {
	return []struct {
		key string
		set bool
	}{
		{"http", s.HTTP != nil}, {"coap", s.CoAP != nil}, {"reply", s.Reply != nil},
		{"transform", s.Transform != ""},
	}
}

// egress compiles a route with subscribe, http_out or coap_out.
func (c *compiler) egress(i int, p, name string, s *RouteSpec) *Route {
	nerr := len(c.errs)
	r := &Route{Index: i, Name: name, QoS: 1}
	for _, k := range ingressKeys(s) {
		if k.set {
			c.add(p+"."+k.key, name, "not used by egress routes (an egress route has subscribe and http_out or coap_out)")
		}
	}
	for _, k := range []struct {
		key string
		set bool
	}{{"topic", s.Topic != ""}, {"qos", s.QoS != nil}, {"retain", s.Retain}, {"content_type", s.ContentType != ""}, {"source", s.Source != nil}} {
		if k.set {
			c.add(p+"."+k.key, name, "not used by egress routes (an egress route has subscribe and http_out or coap_out)")
		}
	}
	if s.Subscribe == "" {
		c.add(p+".subscribe", name, "required: the topic template whose messages the route sends")
	} else {
		r.Subscribe = c.topic(p+".subscribe", name, "subscribe", s.Subscribe, true)
	}
	switch {
	case s.HTTPOut != nil && s.CoAPOut != nil:
		c.add(p+".coap_out", name, "an egress route has one of http_out and coap_out, not both")
	case s.HTTPOut == nil && s.CoAPOut == nil:
		c.add(p+".subscribe", name, "an egress route needs http_out or coap_out")
	case s.HTTPOut != nil:
		r.HTTPOut = c.httpOut(p+".http_out", name, r.Subscribe, s.HTTPOut)
		r.Delivery = c.delivery(p+".http_out", name, &s.HTTPOut.DeliverySpec)
	default:
		r.CoAPOut = c.coapOut(p+".coap_out", name, r.Subscribe, s.CoAPOut)
		r.Delivery = c.delivery(p+".coap_out", name, &s.CoAPOut.DeliverySpec)
	}
	if len(c.errs) > nerr {
		return nil
	}
	return r
}

// urlTemplate parses a URL template and checks its scheme, host and that
// the subscribe template captures its variables.
func (c *compiler) urlTemplate(path, name string, sub *Template, raw string, schemes ...string) *TextTemplate {
	if raw == "" {
		c.add(path, name, "required")
		return nil
	}
	t, err := parseText(raw, true, c.lookup)
	if err != nil {
		c.add(path, name, "%v", err)
		return nil
	}
	// Fill every variable with a harmless value to check the shape.
	var probe Vars
	for _, v := range t.names {
		_ = probe.Set(v, "x")
	}
	s, err := t.Expand(probe)
	if err != nil {
		c.add(path, name, "%v", err)
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		c.add(path, name, "invalid URL %q: %v", raw, err)
		return nil
	case !slices.Contains(schemes, u.Scheme):
		c.add(path, name, "URL %q: scheme must be %s", raw, strings.Join(schemes, " or "))
		return nil
	case u.Host == "":
		c.add(path, name, "URL %q has no host", raw)
		return nil
	case u.User != nil:
		c.add(path, name, "URL %q: credentials in the URL are not allowed (use headers)", raw)
		return nil
	}
	c.captured(path, name, sub, t, "URL")
	return t
}

// captured checks that sub captures every variable of t.
func (c *compiler) captured(path, name string, sub *Template, t *TextTemplate, what string) {
	if sub == nil {
		return
	}
	for _, v := range t.names {
		if !sub.HasVar(v) {
			c.add(path, name, "variable {%s} used in %s %q is not captured by subscribe %q", v, what, t.raw, sub.raw)
		}
	}
}

func (c *compiler) method(path, name, m string, valid []string, proto string) string {
	switch {
	case m == "":
		return "POST"
	case slices.Contains(valid, m):
		return m
	case slices.Contains(valid, strings.ToUpper(m)):
		c.add(path, name, "method names are upper case: write %q", strings.ToUpper(m))
	default:
		c.add(path, name, "unknown %s method %q (want one of %s)", proto, m, strings.Join(valid, ", "))
	}
	return ""
}

func (c *compiler) httpOut(p, name string, sub *Template, s *HTTPOutSpec) *HTTPOut {
	o := &HTTPOut{
		URL:    c.urlTemplate(p+".url", name, sub, s.URL, "http", "https"),
		Method: c.method(p+".method", name, s.Method, httpOutMethods, "http"),
		Body:   s.Body,
	}
	switch s.Body {
	case "":
		o.Body = BodyRaw
	case BodyRaw, BodyEnvelope:
	default:
		c.add(p+".body", name, "unknown body %q (want raw or envelope)", s.Body)
	}
	keys := make([]string, 0, len(s.Headers))
	for k := range s.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hp := p + ".headers." + k
		if !validHeaderName(k) {
			c.add(hp, name, "invalid header name %q", k)
			continue
		}
		switch strings.ToLower(k) {
		case "host", "content-length", "transfer-encoding", "connection":
			c.add(hp, name, "header %s is set by the gateway and cannot be configured", k)
			continue
		}
		t, err := parseText(s.Headers[k], false, c.lookup)
		if err != nil {
			c.add(hp, name, "%v", err)
			continue
		}
		if strings.ContainsAny(strings.Join(litParts(t), ""), "\r\n\x00") {
			c.add(hp, name, "header value must not contain line breaks or NUL")
			continue
		}
		c.captured(hp, name, sub, t, "header")
		o.Headers = append(o.Headers, Header{Name: k, Value: t})
	}
	return o
}

func litParts(t *TextTemplate) []string {
	var out []string
	for _, p := range t.parts {
		if p.name == "" {
			out = append(out, p.lit)
		}
	}
	return out
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 §5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func (c *compiler) coapOut(p, name string, sub *Template, s *CoAPOutSpec) *CoAPOut {
	o := &CoAPOut{
		URL:         c.urlTemplate(p+".url", name, sub, s.URL, "coap", "coaps"),
		Method:      c.method(p+".method", name, s.Method, coapOutMethods, "coap"),
		Confirmable: s.Confirmable == nil || *s.Confirmable,
	}
	if o.URL != nil {
		o.PSK = c.pskFor(p, name, strings.HasPrefix(s.URL, "coaps:"), s.PSK)
	}
	return o
}

// pskFor checks a psk key against the URL scheme: coaps needs one, coap
// must not have one.
func (c *compiler) pskFor(p, name string, secure bool, s *PSKSpec) *PSK {
	switch {
	case secure && s == nil:
		c.add(p, name, "a coaps:// URL needs psk: {identity, key_hex | key_hex_file | key_hex_env}")
		return nil
	case !secure && s != nil:
		c.add(p+".psk", name, "psk applies to coaps:// URLs only")
		return nil
	case s == nil:
		return nil
	}
	pp := p + ".psk"
	k := &PSK{Identity: s.Identity}
	if s.Identity == "" {
		c.add(pp+".identity", name, "required")
	}
	n := 0
	for _, v := range []string{s.KeyHex, s.KeyHexFile, s.KeyHexEnv} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		c.add(pp, name, "give the key exactly one way: key_hex, key_hex_file or key_hex_env")
		return k
	}
	hexKey, keyPath := s.KeyHex, pp+".key_hex"
	switch {
	case s.KeyHexFile != "":
		k.KeyFile = s.KeyHexFile
		return k
	case s.KeyHexEnv != "":
		v, ok := c.lookup(s.KeyHexEnv)
		if !ok {
			c.add(pp+".key_hex_env", name, "environment variable %s is not set", s.KeyHexEnv)
			return k
		}
		hexKey, keyPath = v, pp+".key_hex_env"
	}
	key, err := hex.DecodeString(strings.TrimSpace(hexKey))
	switch {
	case err != nil:
		c.add(keyPath, name, "key is not valid hex: %v", err)
	case len(key) == 0:
		c.add(keyPath, name, "key is empty")
	default:
		k.Key = key
	}
	return k
}

// ParseBackoff parses a retry backoff: "MIN..MAX" (e.g. "1s..1m") or one
// duration for a constant wait.
func ParseBackoff(s string) (lo, hi time.Duration, err error) {
	a, b, ok := strings.Cut(s, "..")
	if !ok {
		b = a
	}
	lo, err1 := time.ParseDuration(strings.TrimSpace(a))
	hi, err2 := time.ParseDuration(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("invalid backoff %q: want MIN..MAX with Go durations, e.g. \"1s..1m\"", s)
	case lo <= 0 || hi <= 0:
		return 0, 0, fmt.Errorf("invalid backoff %q: durations must be positive", s)
	case lo > hi:
		return 0, 0, fmt.Errorf("invalid backoff %q: %s is longer than %s", s, lo, hi)
	}
	return lo, hi, nil
}

func (c *compiler) delivery(p, name string, s *DeliverySpec) Delivery {
	d := Delivery{
		Timeout:       s.Timeout.Std(),
		MaxInFlight:   s.MaxInFlight,
		Ordered:       s.Ordered,
		BackoffMin:    DefaultBackoffMin,
		BackoffMax:    DefaultBackoffMax,
		QueueMaxItems: DefaultQueueMaxItems,
		QueueMaxBytes: DefaultQueueMaxBytes,
		Overflow:      OverflowDropOldest,
	}
	switch {
	case d.Timeout < 0:
		c.add(p+".timeout", name, "must be positive, got %s", d.Timeout)
	case d.Timeout == 0:
		d.Timeout = DefaultEgressTimeout
	}
	switch {
	case d.MaxInFlight < 0:
		c.add(p+".max_in_flight", name, "must be at least 1, got %d", d.MaxInFlight)
	case d.Ordered && d.MaxInFlight > 1:
		c.add(p+".max_in_flight", name, "ordered delivery sends one message at a time: leave max_in_flight out or set it to 1")
	case d.Ordered || d.MaxInFlight == 1:
		d.MaxInFlight = 1
	case d.MaxInFlight == 0:
		d.MaxInFlight = DefaultMaxInFlight
	case d.MaxInFlight > 1024:
		c.add(p+".max_in_flight", name, "must be at most 1024, got %d", d.MaxInFlight)
	}
	if r := s.Retry; r != nil {
		if r.MaxAttempts < 0 {
			c.add(p+".retry.max_attempts", name, "must not be negative (0 or unset: no bound), got %d", r.MaxAttempts)
		}
		d.MaxAttempts = r.MaxAttempts
		if r.Backoff != "" {
			lo, hi, err := ParseBackoff(r.Backoff)
			if err != nil {
				c.add(p+".retry.backoff", name, "%v", err)
			} else {
				d.BackoffMin, d.BackoffMax = lo, hi
			}
		}
	}
	if q := s.Queue; q != nil {
		switch {
		case q.MaxItems < 0:
			c.add(p+".queue.max_items", name, "must be positive, got %d", q.MaxItems)
		case q.MaxItems > 0:
			d.QueueMaxItems = q.MaxItems
		}
		if q.MaxBytes > 0 {
			d.QueueMaxBytes = int64(q.MaxBytes)
		}
		switch q.Overflow {
		case "":
		case OverflowDropOldest, OverflowRefuseNew:
			d.Overflow = q.Overflow
		default:
			c.add(p+".queue.overflow", name, "unknown overflow policy %q (want drop_oldest or refuse_new)", q.Overflow)
		}
	}
	return d
}

// source compiles a route with source.
func (c *compiler) source(i int, p, name string, s *RouteSpec) *Route {
	nerr := len(c.errs)
	r := &Route{Index: i, Name: name, Retain: s.Retain, ContentType: s.ContentType, QoS: DefaultQoS}
	for _, k := range ingressKeys(s) {
		if k.set {
			c.add(p+"."+k.key, name, "not used by source routes (a source route has source and topic)")
		}
	}
	r.Topic = c.topic(p+".topic", name, "topic", s.Topic, true)
	if r.Topic != nil && len(r.Topic.names) > 0 {
		c.add(p+".topic", name, "a source route's topic %q cannot have variables: nothing captures them", s.Topic)
	}
	if s.QoS != nil {
		if *s.QoS < 0 || *s.QoS > 2 {
			c.add(p+".qos", name, "must be 0, 1 or 2, got %d", *s.QoS)
		} else {
			r.QoS = byte(*s.QoS)
		}
	}
	c.contentType(p, name, s.ContentType, "", "")
	sp := p + ".source"
	src := &Source{Interval: s.Source.Interval.Std()}
	switch {
	case s.Source.CoAPObserve != "" && s.Source.HTTPPoll != "":
		c.add(sp, name, "give one of coap_observe and http_poll, not both")
	case s.Source.CoAPObserve != "":
		src.CoAPObserve = c.plainURL(sp+".coap_observe", name, s.Source.CoAPObserve, "coap", "coaps")
		if src.Interval != 0 {
			c.add(sp+".interval", name, "interval applies to http_poll only (an observation is pushed by the device)")
		}
		if src.CoAPObserve != "" {
			src.PSK = c.pskFor(sp, name, strings.HasPrefix(src.CoAPObserve, "coaps:"), s.Source.PSK)
		}
	case s.Source.HTTPPoll != "":
		src.HTTPPoll = c.plainURL(sp+".http_poll", name, s.Source.HTTPPoll, "http", "https")
		switch {
		case src.Interval == 0:
			src.Interval = DefaultPollInterval
		case src.Interval < MinPollInterval:
			c.add(sp+".interval", name, "must be at least %s, got %s", MinPollInterval, src.Interval)
		}
		if s.Source.PSK != nil {
			c.add(sp+".psk", name, "psk applies to coaps:// coap_observe URLs only")
		}
	default:
		c.add(sp, name, "needs coap_observe: URL or http_poll: URL")
	}
	r.Source = src
	if len(c.errs) > nerr {
		return nil
	}
	return r
}

// plainURL checks a source URL (no variables; ${NAME} is expanded).
func (c *compiler) plainURL(path, name, raw string, schemes ...string) string {
	t := c.urlTemplate(path, name, nil, raw, schemes...)
	if t == nil {
		return ""
	}
	if len(t.names) > 0 {
		c.add(path, name, "URL %q cannot have variables: a source has no topic to capture them from", raw)
		return ""
	}
	s, _ := t.Expand(Vars{})
	return s
}

// describeEgress fills the egress and source parts of a RouteInfo.
func describeEgress(r *Route, ri *RouteInfo) {
	switch {
	case r.HTTPOut != nil:
		ri.Subscribe, ri.Filter = r.Subscribe.String(), r.Subscribe.Filter()
		ri.HTTPOut = &EgressInfo{URL: r.HTTPOut.URL.String(), Method: r.HTTPOut.Method, Body: r.HTTPOut.Body,
			Ordered: r.Delivery.Ordered, MaxInFlight: r.Delivery.MaxInFlight}
		for _, h := range r.HTTPOut.Headers {
			ri.HTTPOut.Headers = append(ri.HTTPOut.Headers, h.Name)
		}
	case r.CoAPOut != nil:
		ri.Subscribe, ri.Filter = r.Subscribe.String(), r.Subscribe.Filter()
		ri.CoAPOut = &EgressInfo{URL: r.CoAPOut.URL.String(), Method: r.CoAPOut.Method, Confirmable: r.CoAPOut.Confirmable,
			Ordered: r.Delivery.Ordered, MaxInFlight: r.Delivery.MaxInFlight}
	case r.Source != nil:
		ri.Source = &SourceInfo{CoAPObserve: r.Source.CoAPObserve, HTTPPoll: r.Source.HTTPPoll}
		if r.Source.HTTPPoll != "" {
			ri.Source.Interval = r.Source.Interval.String()
		}
	}
}
