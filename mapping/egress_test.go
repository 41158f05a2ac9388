package mapping

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func hook(name, sub, url string) RouteSpec {
	return RouteSpec{Name: name, Subscribe: sub, HTTPOut: &HTTPOutSpec{URL: url}}
}

func coapHook(name, sub, url string) RouteSpec {
	return RouteSpec{Name: name, Subscribe: sub, CoAPOut: &CoAPOutSpec{URL: url}}
}

func TestCompileEgressErrors(t *testing.T) {
	tests := []struct {
		name  string
		specs []RouteSpec
		want  []string
	}{
		{"ok", []RouteSpec{
			hook("a", "alerts/{site}/{kind...}", "https://ops.example/hooks/{site}?kind={kind}"),
			coapHook("b", "act/{dev}/set", "coap://{dev}.lan:5683/valve"),
		}, nil},
		{"subscribe required", []RouteSpec{{Name: "a", HTTPOut: &HTTPOutSpec{URL: "http://x/"}}}, []string{
			`routes[0].subscribe | routes[0] "a": subscribe: required: the topic template whose messages the route sends`,
		}},
		{"subscribe invalid", []RouteSpec{hook("a", "alerts/+", "http://x/"), hook("b", "$SYS/x", "http://x/")}, []string{
			`routes[0].subscribe | routes[0] "a": subscribe: level 2 "+": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`,
			`routes[1].subscribe | routes[1] "b": subscribe: subscribe "$SYS/x" starts with '$': $-topics are reserved for the broker [MQTT-4.7.2]`,
		}},
		{"no output", []RouteSpec{{Name: "a", Subscribe: "x"}}, []string{
			`routes[0].subscribe | routes[0] "a": subscribe: an egress route needs http_out or coap_out`,
		}},
		{"both outputs", []RouteSpec{{Name: "a", Subscribe: "x", HTTPOut: &HTTPOutSpec{URL: "http://x/"}, CoAPOut: &CoAPOutSpec{URL: "coap://x/"}}}, []string{
			`routes[0].coap_out | routes[0] "a": coap_out: an egress route has one of http_out and coap_out, not both`,
		}},
		{"ingress keys on egress", []RouteSpec{with(hook("a", "x", "http://x/"), func(s *RouteSpec) {
			s.HTTP, s.Topic, s.QoS, s.Retain, s.ContentType, s.Transform = &HTTPSpec{Path: "/a"}, "t", intp(1), true, "text/plain", "cbor-to-json"
			s.Reply = &ReplySpec{}
		})}, []string{
			`routes[0].http | routes[0] "a": http: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].reply | routes[0] "a": reply: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].transform | routes[0] "a": transform: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].topic | routes[0] "a": topic: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].qos | routes[0] "a": qos: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].retain | routes[0] "a": retain: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[0].content_type | routes[0] "a": content_type: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
		}},
		{"url", []RouteSpec{
			hook("a", "x", ""),
			hook("b", "x", "ftp://x/"),
			hook("c", "x", "coap://x/"),
			hook("d", "x", "http:///path"),
			hook("e", "x/{y}", "http://h/{z}"),
			hook("f", "x/{y}", "{y}://h/"),
			hook("g", "x/{y}", "http://h/{y"),
			hook("h", "x/{y}", "http://h/{1y}"),
			hook("i", "x", "http://user:pw@h/"),
			coapHook("j", "x", "http://x/"),
			hook("k", "x", "http://h/}"),
		}, []string{
			`routes[0].http_out.url | routes[0] "a": http_out.url: required`,
			`routes[1].http_out.url | routes[1] "b": http_out.url: URL "ftp://x/": scheme must be http or https`,
			`routes[2].http_out.url | routes[2] "c": http_out.url: URL "coap://x/": scheme must be http or https`,
			`routes[3].http_out.url | routes[3] "d": http_out.url: URL "http:///path" has no host`,
			`routes[4].http_out.url | routes[4] "e": http_out.url: variable {z} used in URL "http://h/{z}" is not captured by subscribe "x/{y}"`,
			`routes[5].http_out.url | routes[5] "f": http_out.url: {y}: a variable cannot be part of the URL scheme`,
			`routes[6].http_out.url | routes[6] "g": http_out.url: unclosed "{" at byte 10`,
			`routes[7].http_out.url | routes[7] "h": http_out.url: {1y}: invalid variable name "1y" (want letters, digits and '_', not starting with a digit)`,
			`routes[8].http_out.url | routes[8] "i": http_out.url: URL "http://user:pw@h/": credentials in the URL are not allowed (use headers)`,
			`routes[9].coap_out.url | routes[9] "j": coap_out.url: URL "http://x/": scheme must be coap or coaps`,
			`routes[10].http_out.url | routes[10] "k": http_out.url: unmatched "}" at byte 10`,
		}},
		{"method and body", []RouteSpec{
			with(hook("a", "x", "http://h/"), func(s *RouteSpec) { s.HTTPOut.Method, s.HTTPOut.Body = "post", "json" }),
			with(hook("b", "x", "http://h/"), func(s *RouteSpec) { s.HTTPOut.Method = "FETCH" }),
			with(coapHook("c", "x", "coap://h/"), func(s *RouteSpec) { s.CoAPOut.Method = "PATCH" }),
		}, []string{
			`routes[0].http_out.method | routes[0] "a": http_out.method: method names are upper case: write "POST"`,
			`routes[0].http_out.body | routes[0] "a": http_out.body: unknown body "json" (want raw or envelope)`,
			`routes[1].http_out.method | routes[1] "b": http_out.method: unknown http method "FETCH" (want one of POST, PUT, PATCH, DELETE, GET)`,
			`routes[2].coap_out.method | routes[2] "c": coap_out.method: unknown coap method "PATCH" (want one of POST, PUT, DELETE, GET)`,
		}},
		{"headers", []RouteSpec{with(hook("a", "x/{y}", "http://h/"), func(s *RouteSpec) {
			s.HTTPOut.Headers = map[string]string{
				"Authorization":  "Bearer ${NOPE}",
				"Bad Name":       "v",
				"Content-Length": "3",
				"X-Dev":          "{z}",
				"X-Env":          "${1X}",
				"X-Ok":           "{y} ${TOKEN}",
				"X-Br":           "${NL}",
			}
		})}, []string{
			`routes[0].http_out.headers.Authorization | routes[0] "a": http_out.headers.Authorization: environment variable NOPE is not set (used as ${NOPE})`,
			`routes[0].http_out.headers.Bad Name | routes[0] "a": http_out.headers.Bad Name: invalid header name "Bad Name"`,
			`routes[0].http_out.headers.Content-Length | routes[0] "a": http_out.headers.Content-Length: header Content-Length is set by the gateway and cannot be configured`,
			`routes[0].http_out.headers.X-Br | routes[0] "a": http_out.headers.X-Br: header value must not contain line breaks or NUL`,
			`routes[0].http_out.headers.X-Dev | routes[0] "a": http_out.headers.X-Dev: variable {z} used in header "{z}" is not captured by subscribe "x/{y}"`,
			`routes[0].http_out.headers.X-Env | routes[0] "a": http_out.headers.X-Env: ${1X}: invalid environment variable name "1X" (want letters, digits and '_', not starting with a digit)`,
		}},
		{"delivery", []RouteSpec{
			with(hook("a", "x", "http://h/"), func(s *RouteSpec) {
				s.HTTPOut.Timeout = Duration(-time.Second)
				s.HTTPOut.MaxInFlight = -1
				s.HTTPOut.Retry = &RetrySpec{MaxAttempts: -2, Backoff: "1m..1s"}
				s.HTTPOut.Queue = &QueueSpec{MaxItems: -1, Overflow: "drop_newest"}
			}),
			with(coapHook("b", "x", "coap://h/"), func(s *RouteSpec) {
				s.CoAPOut.Ordered, s.CoAPOut.MaxInFlight = true, 4
				s.CoAPOut.Retry = &RetrySpec{Backoff: "soon"}
			}),
			with(hook("c", "x", "http://h/"), func(s *RouteSpec) {
				s.HTTPOut.MaxInFlight = 5000
				s.HTTPOut.Retry = &RetrySpec{Backoff: "0s..1s"}
			}),
		}, []string{
			`routes[0].http_out.timeout | routes[0] "a": http_out.timeout: must be positive, got -1s`,
			`routes[0].http_out.max_in_flight | routes[0] "a": http_out.max_in_flight: must be at least 1, got -1`,
			`routes[0].http_out.retry.max_attempts | routes[0] "a": http_out.retry.max_attempts: must not be negative (0 or unset: no bound), got -2`,
			`routes[0].http_out.retry.backoff | routes[0] "a": http_out.retry.backoff: invalid backoff "1m..1s": 1m0s is longer than 1s`,
			`routes[0].http_out.queue.max_items | routes[0] "a": http_out.queue.max_items: must be positive, got -1`,
			`routes[0].http_out.queue.overflow | routes[0] "a": http_out.queue.overflow: unknown overflow policy "drop_newest" (want drop_oldest or refuse_new)`,
			`routes[1].coap_out.max_in_flight | routes[1] "b": coap_out.max_in_flight: ordered delivery sends one message at a time: leave max_in_flight out or set it to 1`,
			`routes[1].coap_out.retry.backoff | routes[1] "b": coap_out.retry.backoff: invalid backoff "soon": want MIN..MAX with Go durations, e.g. "1s..1m"`,
			`routes[2].http_out.max_in_flight | routes[2] "c": http_out.max_in_flight: must be at most 1024, got 5000`,
			`routes[2].http_out.retry.backoff | routes[2] "c": http_out.retry.backoff: invalid backoff "0s..1s": durations must be positive`,
		}},
		{"psk", []RouteSpec{
			coapHook("a", "x", "coaps://h/"),
			with(coapHook("b", "x", "coap://h/"), func(s *RouteSpec) { s.CoAPOut.PSK = &PSKSpec{Identity: "gw", KeyHex: "00"} }),
			with(coapHook("c", "x", "coaps://h/"), func(s *RouteSpec) { s.CoAPOut.PSK = &PSKSpec{KeyHex: "zz"} }),
			with(coapHook("d", "x", "coaps://h/"), func(s *RouteSpec) {
				s.CoAPOut.PSK = &PSKSpec{Identity: "gw", KeyHex: "00", KeyHexEnv: "K"}
			}),
			with(coapHook("e", "x", "coaps://h/"), func(s *RouteSpec) { s.CoAPOut.PSK = &PSKSpec{Identity: "gw", KeyHexEnv: "UNSET"} }),
			with(coapHook("f", "x", "coaps://h/"), func(s *RouteSpec) { s.CoAPOut.PSK = &PSKSpec{Identity: "gw", KeyHexEnv: "EMPTY"} }),
		}, []string{
			`routes[0].coap_out | routes[0] "a": coap_out: a coaps:// URL needs psk: {identity, key_hex | key_hex_file | key_hex_env}`,
			`routes[1].coap_out.psk | routes[1] "b": coap_out.psk: psk applies to coaps:// URLs only`,
			`routes[2].coap_out.psk.identity | routes[2] "c": coap_out.psk.identity: required`,
			`routes[2].coap_out.psk.key_hex | routes[2] "c": coap_out.psk.key_hex: key is not valid hex: encoding/hex: invalid byte: U+007A 'z'`,
			`routes[3].coap_out.psk | routes[3] "d": coap_out.psk: give the key exactly one way: key_hex, key_hex_file or key_hex_env`,
			`routes[4].coap_out.psk.key_hex_env | routes[4] "e": coap_out.psk.key_hex_env: environment variable UNSET is not set`,
			`routes[5].coap_out.psk.key_hex_env | routes[5] "f": coap_out.psk.key_hex_env: key is empty`,
		}},
		{"source", []RouteSpec{
			{Name: "a", Source: &SourceSpec{}, Topic: "t"},
			{Name: "b", Source: &SourceSpec{CoAPObserve: "coap://h/x", HTTPPoll: "http://h/"}, Topic: "t"},
			{Name: "c", Source: &SourceSpec{CoAPObserve: "http://h/x"}, Topic: "t"},
			{Name: "d", Source: &SourceSpec{HTTPPoll: "coap://h/x"}, Topic: "t"},
			{Name: "e", Source: &SourceSpec{HTTPPoll: "http://h/", Interval: Duration(time.Millisecond)}, Topic: "t"},
			{Name: "f", Source: &SourceSpec{CoAPObserve: "coap://h/", Interval: Duration(time.Second)}, Topic: "t/{x}"},
			{Name: "g", Source: &SourceSpec{HTTPPoll: "http://h/{x}"}},
			{Name: "h", Source: &SourceSpec{CoAPObserve: "coaps://h/"}, Topic: "t", HTTP: &HTTPSpec{Path: "/a"}, QoS: intp(5)},
			{Name: "i", Source: &SourceSpec{HTTPPoll: "http://h/", PSK: &PSKSpec{Identity: "a", KeyHex: "00"}}, Topic: "t", ContentType: "json"},
			{Name: "j", Source: &SourceSpec{HTTPPoll: "http://h/"}, Topic: "t", Subscribe: "x"},
		}, []string{
			`routes[0].source | routes[0] "a": source: needs coap_observe: URL or http_poll: URL`,
			`routes[1].source | routes[1] "b": source: give one of coap_observe and http_poll, not both`,
			`routes[2].source.coap_observe | routes[2] "c": source.coap_observe: URL "http://h/x": scheme must be coap or coaps`,
			`routes[3].source.http_poll | routes[3] "d": source.http_poll: URL "coap://h/x": scheme must be http or https`,
			`routes[4].source.interval | routes[4] "e": source.interval: must be at least 100ms, got 1ms`,
			`routes[5].topic | routes[5] "f": topic: a source route's topic "t/{x}" cannot have variables: nothing captures them`,
			`routes[5].source.interval | routes[5] "f": source.interval: interval applies to http_poll only (an observation is pushed by the device)`,
			`routes[6].topic | routes[6] "g": topic: required`,
			`routes[6].source.http_poll | routes[6] "g": source.http_poll: URL "http://h/{x}" cannot have variables: a source has no topic to capture them from`,
			`routes[7].http | routes[7] "h": http: not used by source routes (a source route has source and topic)`,
			`routes[7].qos | routes[7] "h": qos: must be 0, 1 or 2, got 5`,
			`routes[7].source | routes[7] "h": source: a coaps:// URL needs psk: {identity, key_hex | key_hex_file | key_hex_env}`,
			`routes[8].content_type | routes[8] "i": content_type: invalid media type "json": want type/subtype, e.g. application/json`,
			`routes[8].source.psk | routes[8] "i": source.psk: psk applies to coaps:// coap_observe URLs only`,
			`routes[9].topic | routes[9] "j": topic: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[9].source | routes[9] "j": source: not used by egress routes (an egress route has subscribe and http_out or coap_out)`,
			`routes[9].subscribe | routes[9] "j": subscribe: an egress route needs http_out or coap_out`,
		}},
	}
	lookup := env("TOKEN", "t0k", "K", "00ff", "EMPTY", "", "NL", "a\nb")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := CompileEnv(tt.specs, lookup)
			got := compileErrors(t, err)
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if (err == nil) != (tab != nil) {
				t.Errorf("table %v with error %v", tab, err)
			}
		})
	}
}

func TestCompileEgressDefaults(t *testing.T) {
	src := `routes:
  - name: hook
    subscribe: alerts/{site}/{kind...}
    http_out:
      url: "https://ops.example/hooks/{site}?k={kind}"
      headers: {X-Site: "{site}", Authorization: "Bearer ${TOKEN}"}
  - name: valve
    subscribe: act/{dev}/set
    coap_out:
      url: "coaps://{dev}.lan:5684/valve"
      method: PUT
      confirmable: false
      psk: {identity: gw, key_hex_file: keys/gw.hex}
      ordered: true
      timeout: 3s
      retry: {max_attempts: 5, backoff: 2s}
      queue: {max_items: 100, max_bytes: 1MiB, overflow: refuse_new}
  - name: poll
    source: {http_poll: "http://legacy/${PATHX}"}
    topic: legacy/x
    retain: true
`
	var doc routesDoc
	if err := yaml.UnmarshalWithOptions([]byte(src), &doc, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	tab, err := CompileEnv(doc.Routes, env("TOKEN", "t", "PATHX", "v1/state"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := tab.Route("hook")
	if !h.IsEgress() || h.IsSource() || h.HTTPOut.Method != "POST" || h.HTTPOut.Body != BodyRaw {
		t.Errorf("hook = %+v", h.HTTPOut)
	}
	want := Delivery{Timeout: DefaultEgressTimeout, MaxInFlight: DefaultMaxInFlight, BackoffMin: time.Second,
		BackoffMax: time.Minute, QueueMaxItems: DefaultQueueMaxItems, QueueMaxBytes: DefaultQueueMaxBytes, Overflow: OverflowDropOldest}
	if h.Delivery != want {
		t.Errorf("delivery = %+v\nwant %+v", h.Delivery, want)
	}
	vars := VarsOf("site", "north pole", "kind", "fire/big")
	if !h.Subscribe.Match("alerts/north pole/fire/big", &vars) {
		t.Fatal("no match")
	}
	// The host cannot take "north pole", but path and query escape.
	if u := mustExpand(t, h.HTTPOut.URL, vars); u != "https://ops.example/hooks/north%20pole?k=fire%2Fbig" {
		t.Errorf("url = %s", u)
	}
	if len(h.HTTPOut.Headers) != 2 || h.HTTPOut.Headers[0].Name != "Authorization" || mustExpand(t, h.HTTPOut.Headers[1].Value, vars) != "north pole" {
		t.Errorf("headers = %+v", h.HTTPOut.Headers)
	}

	v, _ := tab.Route("valve")
	if v.CoAPOut.Confirmable || v.CoAPOut.Method != "PUT" || v.CoAPOut.PSK.KeyFile != "keys/gw.hex" || v.CoAPOut.PSK.Identity != "gw" {
		t.Errorf("valve = %+v %+v", v.CoAPOut, v.CoAPOut.PSK)
	}
	want = Delivery{Timeout: 3 * time.Second, MaxInFlight: 1, Ordered: true, MaxAttempts: 5, BackoffMin: 2 * time.Second,
		BackoffMax: 2 * time.Second, QueueMaxItems: 100, QueueMaxBytes: 1 << 20, Overflow: OverflowRefuseNew}
	if v.Delivery != want {
		t.Errorf("delivery = %+v\nwant %+v", v.Delivery, want)
	}
	_, err = v.CoAPOut.URL.Expand(VarsOf("dev", "a b"))
	if !errors.Is(err, ErrInvalidValue) {
		t.Errorf("host with space: %v", err)
	}
	if _, err := v.CoAPOut.URL.Expand(Vars{}); !errors.Is(err, ErrMissingVar) {
		t.Errorf("missing: %v", err)
	}

	p, _ := tab.Route("poll")
	if !p.IsSource() || p.Source.HTTPPoll != "http://legacy/v1/state" || p.Source.Interval != DefaultPollInterval || !p.Retain || p.QoS != 1 {
		t.Errorf("poll = %+v %+v", p, p.Source)
	}
	d := tab.Describe()
	if d[0].HTTPOut == nil || d[0].Filter != "alerts/+/#" || d[2].Source.Interval != "10s" {
		t.Errorf("describe = %+v", d)
	}
}

func TestTextTemplateHeaderValue(t *testing.T) {
	tpl, err := parseText("id={id}", false, env())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Expand(VarsOf("id", "a\r\nX-Evil: 1")); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("CRLF accepted: %v", err)
	}
	if got := tpl.Vars(); !slices.Equal(got, []string{"id"}) || tpl.String() != "id={id}" {
		t.Errorf("vars %v, string %s", got, tpl)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1024": 1024, "64MiB": 64 << 20, "1 KiB": 1024, "3B": 3} {
		var s ByteSize
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%s = %d, %v", in, s, err)
		}
	}
	var s ByteSize
	if err := s.UnmarshalText([]byte("lots")); err == nil {
		t.Error("lots accepted")
	}
}
