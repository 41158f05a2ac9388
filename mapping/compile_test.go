package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func intp(i int) *int { return &i }

// ingress returns a valid route: HTTP and CoAP path, topic.
func ingress(name, httpPath, coapPath, topic string) RouteSpec {
	s := RouteSpec{Name: name, Topic: topic}
	if httpPath != "" {
		s.HTTP = &HTTPSpec{Path: httpPath}
	}
	if coapPath != "" {
		s.CoAP = &CoAPSpec{Path: coapPath}
	}
	return s
}

// with returns a changed copy of s; the endpoint specs are copied too, so
// that f does not change s.
func with(s RouteSpec, f func(*RouteSpec)) RouteSpec {
	if s.HTTP != nil {
		h := *s.HTTP
		s.HTTP = &h
	}
	if s.CoAP != nil {
		c := *s.CoAP
		s.CoAP = &c
	}
	f(&s)
	return s
}

// compileErrors returns the FieldErrors of err as "PATH | Error()" lines.
func compileErrors(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Compile error is not a join: %T %v", err, err)
	}
	var out []string
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("not a *FieldError: %T %v", e, e)
		}
		out = append(out, fe.FieldPath()+" | "+fe.Error())
	}
	return out
}

func TestCompileErrors(t *testing.T) {
	temp := ingress("temp", "/sensors/{id}/temperature", "/s/{id}/t", "sensors/{id}/temperature")
	tests := []struct {
		name  string
		specs []RouteSpec
		want  []string // "FieldPath | Error()"
	}{
		{"ok", []RouteSpec{temp}, nil},
		{"empty", nil, nil},
		{"name required", []RouteSpec{with(temp, func(s *RouteSpec) { s.Name = "" })}, []string{
			`routes[0].name | routes[0].name: required`,
		}},
		{"name invalid", []RouteSpec{with(temp, func(s *RouteSpec) { s.Name = "room temp" })}, []string{
			`routes[0].name | routes[0].name: invalid route name "room temp": use 1 to 64 letters, digits, '.', '_' or '-'`,
		}},
		{"name duplicate", []RouteSpec{temp, ingress("temp", "/x/{id}", "", "x/{id}")}, []string{
			`routes[1].name | routes[1] "temp": name: duplicate route name, also used by routes[0]`,
		}},
		{"no endpoint", []RouteSpec{{Name: "t", Topic: "a"}}, []string{
			`routes[0] | routes[0] "t": needs http or coap (or both): a route binds a request path to a topic`,
		}},
		{"topic required", []RouteSpec{ingress("t", "/a", "", "")}, []string{
			`routes[0].topic | routes[0] "t": topic: required`,
		}},
		{"topic wildcard", []RouteSpec{ingress("t", "/a", "", "sensors/+/t")}, []string{
			`routes[0].topic | routes[0] "t": topic: level 2 "+": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`,
		}},
		{"topic hash", []RouteSpec{ingress("t", "/a", "", "sensors/#")}, []string{
			`routes[0].topic | routes[0] "t": topic: level 2 "#": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`,
		}},
		{"topic rest not last", []RouteSpec{ingress("t", "/a/{x...}", "", "a/{x...}/b")}, []string{
			`routes[0].topic | routes[0] "t": topic: level 2: {x...} must be the last level`,
		}},
		{"topic dollar", []RouteSpec{ingress("t", "/a", "", "$SYS/a")}, []string{
			`routes[0].topic | routes[0] "t": topic: topic "$SYS/a" starts with '$': $-topics are reserved for the broker [MQTT-4.7.2]`,
		}},
		{"variable not captured (STYLE §3.4 example)", []RouteSpec{ingress("room-temp", "/rooms/{room}/t", "/r/{id}", "sensors/{room}/t")}, []string{
			`routes[0].coap.path | routes[0] "room-temp": coap.path: variable {room} used in topic "sensors/{room}/t" is not captured by path "/r/{id}"`,
		}},
		{"variables not captured by either path", []RouteSpec{ingress("t", "/a", "/b/{y}", "t/{x}/{y}")}, []string{
			`routes[0].http.path | routes[0] "t": http.path: variable {x} used in topic "t/{x}/{y}" is not captured by path "/a"`,
			`routes[0].http.path | routes[0] "t": http.path: variable {y} used in topic "t/{x}/{y}" is not captured by path "/a"`,
			`routes[0].coap.path | routes[0] "t": coap.path: variable {x} used in topic "t/{x}/{y}" is not captured by path "/b/{y}"`,
		}},
		{"path variable unused in topic is fine", []RouteSpec{ingress("t", "/a/{x}/{y}", "", "t/{y}")}, nil},
		{"rest path into one level", []RouteSpec{ingress("t", "/f/{p...}", "", "files/{p}")}, []string{
			`routes[0].http.path | routes[0] "t": http.path: {p...} in path "/f/{p...}" can hold several segments, but topic "files/{p}" takes {p} as one level (write {p...} there)`,
		}},
		{"one path segment into rest is fine", []RouteSpec{ingress("t", "/f/{p}", "", "files/{p...}")}, nil},
		{"path required", []RouteSpec{{Name: "t", Topic: "a", HTTP: &HTTPSpec{}}}, []string{
			`routes[0].http.path | routes[0] "t": http.path: required`,
		}},
		{"path invalid", []RouteSpec{ingress("t", "a/{x}", "/b/{x...}/c", "a")}, []string{
			`routes[0].http.path | routes[0] "t": http.path: must start with "/"`,
			`routes[0].coap.path | routes[0] "t": coap.path: segment 2: {x...} must be the last segment`,
		}},
		{"reserved http prefixes", []RouteSpec{
			ingress("a", "/topics/x", "", "a"),
			ingress("b", "/healthz", "", "b"),
			ingress("c", "/openapi.json", "", "c"),
			ingress("d", "/publish/{x}", "", "d/{x}"),
		}, []string{
			`routes[0].http.path | routes[0] "a": http.path: path "/topics/x" collides with the gateway's generic endpoint /topics/`,
			`routes[1].http.path | routes[1] "b": http.path: path "/healthz" collides with the gateway's generic endpoint /healthz`,
			`routes[2].http.path | routes[2] "c": http.path: path "/openapi.json" collides with the gateway's generic endpoint /openapi.json`,
			`routes[3].http.path | routes[3] "d": http.path: path "/publish/{x}" collides with the gateway's generic endpoint /publish`,
		}},
		{"reserved coap prefixes", []RouteSpec{
			ingress("a", "", "/ps/{x}", "a/{x}"),
			ingress("b", "", "/.well-known/core", "b"),
			ingress("c", "/ps/{x}", "", "c/{x}"),     // /ps is free on HTTP
			ingress("d", "", "/topics/{x}", "d/{x}"), // and /topics on CoAP
		}, []string{
			`routes[0].coap.path | routes[0] "a": coap.path: path "/ps/{x}" collides with the gateway's generic endpoint /ps/`,
			`routes[1].coap.path | routes[1] "b": coap.path: path "/.well-known/core" collides with the gateway's generic endpoint /.well-known/core`,
		}},
		{"qos", []RouteSpec{
			with(temp, func(s *RouteSpec) { s.QoS = intp(3) }),
			with(ingress("b", "/b", "", "b"), func(s *RouteSpec) { s.QoS = intp(-1) }),
		}, []string{
			`routes[0].qos | routes[0] "temp": qos: must be 0, 1 or 2, got 3`,
			`routes[1].qos | routes[1] "b": qos: must be 0, 1 or 2, got -1`,
		}},
		{"transform", []RouteSpec{with(temp, func(s *RouteSpec) { s.Transform = "xml-to-json" })}, []string{
			`routes[0].transform | routes[0] "temp": transform: unknown transform "xml-to-json" (want cbor-to-json or json-to-cbor)`,
		}},
		{"content type", []RouteSpec{
			with(temp, func(s *RouteSpec) { s.ContentType = "json" }),
			with(ingress("b", "/b", "", "b"), func(s *RouteSpec) { s.Transform, s.ContentType = "cbor-to-json", "text/plain" }),
			with(ingress("c", "/c", "", "c"), func(s *RouteSpec) {
				s.Transform, s.ContentType = "cbor-to-json", "application/JSON; charset=utf-8"
			}),
		}, []string{
			`routes[0].content_type | routes[0] "temp": content_type: invalid media type "json": want type/subtype, e.g. application/json`,
			`routes[1].content_type | routes[1] "b": content_type: "text/plain" contradicts transform cbor-to-json, which produces application/json`,
		}},
		{"methods", []RouteSpec{
			with(temp, func(s *RouteSpec) {
				s.HTTP.Methods = []string{"GET", "get", "FETCH", "GET"}
				s.CoAP.Methods = []string{"PATCH"}
			}),
			with(ingress("b", "/b", "", "b"), func(s *RouteSpec) { s.HTTP.Methods = []string{} }),
		}, []string{
			`routes[0].http.methods[1] | routes[0] "temp": http.methods[1]: method names are upper case: write "GET"`,
			`routes[0].http.methods[2] | routes[0] "temp": http.methods[2]: unknown http method "FETCH" (want one of GET, POST, PUT, DELETE, PATCH)`,
			`routes[0].http.methods[3] | routes[0] "temp": http.methods[3]: method GET is listed twice`,
			`routes[0].coap.methods[0] | routes[0] "temp": coap.methods[0]: unknown coap method "PATCH" (want one of GET, POST, PUT, DELETE)`,
			`routes[1].http.methods | routes[1] "b": http.methods: must list at least one method (or leave methods out for the default)`,
		}},
		{"same path and method", []RouteSpec{
			temp,
			ingress("other", "/sensors/{x}/temperature", "/s/{x}/h", "other/{x}"),
		}, []string{
			`routes[1].http.path | routes[1] "other": http.path: GET, POST, PUT, DELETE /sensors/{x}/temperature is also claimed by routes[0] "temp" (http.path "/sensors/{id}/temperature")`,
		}},
		{"same path, different methods is fine", []RouteSpec{
			with(ingress("read", "/a/{x}", "/a/{x}", "a/{x}"), func(s *RouteSpec) {
				s.HTTP.Methods, s.CoAP.Methods = []string{"GET"}, []string{"GET"}
			}),
			with(ingress("write", "/a/{y}", "/a/{y}", "b/{y}"), func(s *RouteSpec) {
				s.HTTP.Methods, s.CoAP.Methods = []string{"PUT", "PATCH"}, []string{"PUT"}
			}),
		}, nil},
		{"overlapping but different shapes is fine", []RouteSpec{
			ingress("a", "/a/{x}", "", "a/{x}"),
			ingress("b", "/a/b", "", "b"),
			ingress("c", "/a/{x...}", "", "c/{x...}"),
			ingress("d", "/{y}/b", "", "d/{y}"),
		}, nil},
		{"clash with two routes", []RouteSpec{
			with(ingress("g", "/a/{x}", "", "g"), func(s *RouteSpec) { s.HTTP.Methods = []string{"GET"} }),
			with(ingress("p", "/a/{y}", "", "p"), func(s *RouteSpec) { s.HTTP.Methods = []string{"POST"} }),
			with(ingress("both", "/a/{z}", "", "z"), func(s *RouteSpec) { s.HTTP.Methods = []string{"POST", "GET"} }),
		}, []string{
			`routes[2].http.path | routes[2] "both": http.path: POST /a/{z} is also claimed by routes[1] "p" (http.path "/a/{y}")`,
			`routes[2].http.path | routes[2] "both": http.path: GET /a/{z} is also claimed by routes[0] "g" (http.path "/a/{x}")`,
		}},
		{"reply", []RouteSpec{
			with(ingress("cmd", "/d/{id}/{cmd}", "", "devices/{id}/commands/{cmd}"), func(s *RouteSpec) {
				s.Reply = &ReplySpec{Topic: "devices/{id}/replies/{req}", Timeout: Duration(-time.Second)}
				s.Retain = true
			}),
			with(ingress("same", "/e/{id}", "", "e/{id}"), func(s *RouteSpec) {
				s.Reply = &ReplySpec{Topic: "e/{id}"}
			}),
			with(ingress("bad", "/f/{id}", "", "f/{id}"), func(s *RouteSpec) {
				s.Reply = &ReplySpec{Topic: "f/+/reply"}
			}),
		}, []string{
			`routes[0].reply.timeout | routes[0] "cmd": reply.timeout: must be positive, got -1s`,
			`routes[0].retain | routes[0] "cmd": retain: a request/response route must not retain its requests (each new subscriber would get the last request again)`,
			`routes[0].http.path | routes[0] "cmd": http.path: variable {req} used in reply.topic "devices/{id}/replies/{req}" is not captured by path "/d/{id}/{cmd}"`,
			`routes[1].reply.topic | routes[1] "same": reply.topic: must differ from topic "e/{id}", or the request would be taken for its own reply`,
			`routes[2].reply.topic | routes[2] "bad": reply.topic: level 2 "+": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`,
		}},
		{"reply default methods do not clash with GET", []RouteSpec{
			with(ingress("read", "/a/{x}", "", "a/{x}"), func(s *RouteSpec) { s.HTTP.Methods = []string{"GET"} }),
			with(ingress("call", "/a/{x}", "", "call/{x}"), func(s *RouteSpec) { s.Reply = &ReplySpec{} }),
		}, nil},
		{"egress and source", []RouteSpec{
			{Name: "alerts", Subscribe: "alerts/{site}", HTTPOut: &HTTPOutSpec{URL: "https://ops.example/{site}"}},
			{Name: "valve", Subscribe: "actuators/{dev}/set", CoAPOut: &CoAPOutSpec{URL: "coap://{dev}.lan/valve"}},
			{Name: "legacy", Source: &SourceSpec{CoAPObserve: "coap://10.0.0.7/temp"}, Topic: "sensors/legacy"},
			{Name: "sub", Subscribe: "x/{y}"},
		}, []string{
			`routes[3].subscribe | routes[3] "sub": subscribe: an egress route needs http_out or coap_out`,
		}},
		{"every problem at once, in order", []RouteSpec{
			{Name: "", Topic: "a/{x}", HTTP: &HTTPSpec{Path: "/topics/{y}"}, QoS: intp(7)},
			temp,
			with(temp, func(s *RouteSpec) { s.Transform = "gzip" }),
		}, []string{
			`routes[0].name | routes[0].name: required`,
			`routes[0].qos | routes[0].qos: must be 0, 1 or 2, got 7`,
			`routes[0].http.path | routes[0].http.path: path "/topics/{y}" collides with the gateway's generic endpoint /topics/`,
			`routes[0].http.path | routes[0].http.path: variable {x} used in topic "a/{x}" is not captured by path "/topics/{y}"`,
			`routes[2].name | routes[2] "temp": name: duplicate route name, also used by routes[1]`,
			`routes[2].transform | routes[2] "temp": transform: unknown transform "gzip" (want cbor-to-json or json-to-cbor)`,
			`routes[2].http.path | routes[2] "temp": http.path: GET, POST, PUT, DELETE /sensors/{id}/temperature is also claimed by routes[1] "temp" (http.path "/sensors/{id}/temperature")`,
			`routes[2].coap.path | routes[2] "temp": coap.path: GET, POST, PUT, DELETE /s/{id}/t is also claimed by routes[1] "temp" (coap.path "/s/{id}/t")`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Compile(tt.specs)
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

func TestCompileDefaults(t *testing.T) {
	tab, err := Compile([]RouteSpec{
		ingress("temp", "/sensors/{id}/temperature", "/s/{id}/t", "sensors/{id}/temperature"),
		with(ingress("cmd", "/devices/{id}/commands/{cmd}", "/d/{id}/{cmd}", "devices/{id}/commands/{cmd}"), func(s *RouteSpec) {
			s.Reply = &ReplySpec{}
			s.QoS = intp(0)
		}),
		with(ingress("conv", "/c", "", "c"), func(s *RouteSpec) { s.Transform = TransformJSONToCBOR }),
	})
	if err != nil {
		t.Fatal(err)
	}
	rs := tab.Routes()
	if len(rs) != 3 || tab.Len() != 3 {
		t.Fatalf("%d routes", len(rs))
	}
	temp, cmd, conv := rs[0], rs[1], rs[2]
	if temp.QoS != 1 || temp.Reply || temp.ReplyTimeout != 0 || temp.ReplyTopic != nil {
		t.Errorf("temp: %+v", temp)
	}
	if !slices.Equal(temp.HTTPMethods, []string{"GET", "POST", "PUT", "DELETE"}) || !slices.Equal(temp.CoAPMethods, temp.HTTPMethods) {
		t.Errorf("temp methods: %v %v", temp.HTTPMethods, temp.CoAPMethods)
	}
	if cmd.QoS != 0 || !cmd.Reply || cmd.ReplyTimeout != DefaultReplyTimeout || cmd.ReplyTopic != nil {
		t.Errorf("cmd: %+v", cmd)
	}
	if !slices.Equal(cmd.HTTPMethods, []string{"POST"}) || !slices.Equal(cmd.CoAPMethods, []string{"POST"}) {
		t.Errorf("cmd methods: %v %v", cmd.HTTPMethods, cmd.CoAPMethods)
	}
	if conv.ContentType != "application/cbor" || conv.CoAPPath != nil || conv.AllowsCoAP("GET") {
		t.Errorf("conv: %+v", conv)
	}
	if r, ok := tab.Route("cmd"); !ok || r != cmd {
		t.Error("Route(cmd)")
	}
	var vars Vars
	if !cmd.HTTPPath.Match("/devices/7/commands/reboot", &vars) {
		t.Fatal("no match")
	}
	if topic, err := cmd.TopicFor(vars); err != nil || topic != "devices/7/commands/reboot" {
		t.Errorf("TopicFor = %q, %v", topic, err)
	}
	if rt, err := cmd.ReplyTopicFor(vars); err != nil || rt != "" {
		t.Errorf("ReplyTopicFor = %q, %v", rt, err)
	}
	// Routes returns a copy.
	rs[0] = nil
	if tab.Routes()[0] == nil {
		t.Error("Routes is not a copy")
	}
	// A nil table is empty.
	var nilTab *Table
	if nilTab.Len() != 0 || nilTab.Routes() != nil || len(nilTab.Describe()) != 0 {
		t.Error("nil table")
	}
	if r, _, ok := nilTab.MatchHTTP("GET", "/"); r != nil || ok {
		t.Error("nil table matched")
	}
}

func TestTableMatch(t *testing.T) {
	tab, err := Compile([]RouteSpec{
		ingress("catchall", "/{x...}", "", "all/{x...}"),
		ingress("param", "/a/{x}", "/a/{x}", "param/{x}"),
		with(ingress("static-post", "/a/b", "", "static"), func(s *RouteSpec) { s.HTTP.Methods = []string{"POST"} }),
		ingress("rest", "/a/{x...}", "", "rest/{x...}"),
		ingress("first-var", "/{y}/c", "", "fv/{y}"),
		with(ingress("put-only", "/p/{id}", "/p/{id}", "p/{id}"), func(s *RouteSpec) {
			s.HTTP.Methods, s.CoAP.Methods = []string{"PUT"}, []string{"PUT"}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		proto, method, path string
		route               string // "" = nil
		ok                  bool
		vars                map[string]string
	}{
		{"http", "POST", "/a/b", "static-post", true, map[string]string{}},
		{"http", "GET", "/a/b", "param", true, map[string]string{"x": "b"}}, // static has no GET: next most specific
		{"http", "GET", "/a/z", "param", true, map[string]string{"x": "z"}},
		{"http", "GET", "/a/z/y", "rest", true, map[string]string{"x": "z/y"}},
		{"http", "GET", "/a/c", "param", true, map[string]string{"x": "c"}}, // literal "a" beats {y}
		{"http", "GET", "/b/c", "first-var", true, map[string]string{"y": "b"}},
		{"http", "GET", "/q/r/s", "catchall", true, map[string]string{"x": "q/r/s"}},
		{"http", "GET", "/p/1", "put-only", false, map[string]string{"id": "1"}}, // catchall needs 1+ segments: "/p/1" → catchall!
		{"coap", "GET", "/a/1", "param", true, map[string]string{"x": "1"}},
		{"coap", "GET", "/p/1", "put-only", false, map[string]string{"id": "1"}},
		{"coap", "PUT", "/p/1", "put-only", true, map[string]string{"id": "1"}},
		{"coap", "GET", "/nope", "", false, map[string]string{}},
		{"http", "GET", "/", "", false, map[string]string{}},
	}
	for _, tt := range tests {
		var (
			r    *Route
			vars Vars
			ok   bool
		)
		if tt.proto == "http" {
			r, vars, ok = tab.MatchHTTP(tt.method, tt.path)
		} else {
			r, vars, ok = tab.MatchCoAP(tt.method, tt.path)
		}
		name := ""
		if r != nil {
			name = r.Name
		}
		if tt.path == "/p/1" && tt.proto == "http" {
			// The catch-all route allows GET, so it serves GET /p/1.
			tt.route, tt.ok, tt.vars = "catchall", true, map[string]string{"x": "p/1"}
		}
		if name != tt.route || ok != tt.ok || !mapsEqual(vars.Map(), tt.vars) {
			t.Errorf("%s %s %s = %q %v %v, want %q %v %v", tt.proto, tt.method, tt.path, name, ok, vars.Map(), tt.route, tt.ok, tt.vars)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// specExample is the ingress and request/response part of SPEC §6, plus the
// egress and source routes, as a user would write them.
const specExample = `routes:
  # Ingress: HTTP and/or CoAP request -> MQTT publish (and GET/Observe/SSE)
  - name: temperature
    http: {path: "/sensors/{id}/temperature"}
    coap: {path: "/s/{id}/t"}
    topic: sensors/{id}/temperature
    qos: 1
    retain: true
    content_type: application/json
    transform: cbor-to-json          # optional payload conversion

  # Request/response over MQTT: the device answers on a reply topic
  - name: device-command
    http: {path: "/devices/{id}/commands/{cmd}", methods: [POST]}
    coap: {path: "/d/{id}/{cmd}"}
    topic: devices/{id}/commands/{cmd}
    reply: {topic: "devices/{id}/replies/{cmd}", timeout: 5s}

  - name: alerts-to-ops
    subscribe: alerts/{site}/{kind...}
    http_out:
      url: https://ops.example/hooks/{site}
      method: POST
      headers: {Authorization: "Bearer ${OPS_TOKEN}"}
      body: raw            # or: envelope
      retry: {max_attempts: 10, backoff: 1s..1m}

  - name: valve-actuator
    subscribe: actuators/{dev}/set
    coap_out: {url: "coaps://{dev}.lan:5684/valve", method: PUT, confirmable: true, psk: {identity: gw, key_hex: "00ff"}}

  - name: legacy-sensor
    source: {coap_observe: "coap://10.0.0.7/temp"}     # or {http_poll: URL, interval: 10s}
    topic: sensors/legacy-7/temp
`

type routesDoc struct {
	Routes []RouteSpec `yaml:"routes"`
}

// TestSpecExampleYAML decodes SPEC §6 strictly with goccy/go-yaml, compiles
// it, and turns each FieldPath into a line and column, as the config loader
// will.
func TestSpecExampleYAML(t *testing.T) {
	var doc routesDoc
	if err := yaml.UnmarshalWithOptions([]byte(specExample), &doc, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	if len(doc.Routes) != 5 {
		t.Fatalf("%d routes", len(doc.Routes))
	}
	if got := doc.Routes[1].Reply.Timeout.Std(); got != 5*time.Second {
		t.Errorf("timeout = %v", got)
	}
	if r := doc.Routes[2].HTTPOut.Retry; r == nil || r.MaxAttempts != 10 || r.Backoff != "1s..1m" {
		t.Errorf("retry = %+v", r)
	}
	// OPS_TOKEN unset: the header is an error, located like every other.
	_, cerr := CompileEnv(doc.Routes, env())
	got := compileErrors(t, cerr)
	want := []string{
		`routes[2].http_out.headers.Authorization | routes[2] "alerts-to-ops": http_out.headers.Authorization: environment variable OPS_TOKEN is not set (used as ${OPS_TOKEN})`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	file, err := parser.ParseBytes([]byte(specExample), 0)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range cerr.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		errors.As(e, &fe)
		p, err := yaml.PathString("$." + fe.FieldPath())
		if err != nil {
			t.Fatalf("%s: %v", fe.FieldPath(), err)
		}
		n, err := p.FilterFile(file)
		if err != nil {
			t.Fatalf("%s: %v", fe.FieldPath(), err)
		}
		pos := n.GetToken().Position
		lines = append(lines, fmt.Sprintf("gateway.yaml:%d:%d: %s", pos.Line, pos.Column, fe.Error()))
	}
	wantLines := []string{
		`gateway.yaml:24:32: routes[2] "alerts-to-ops": http_out.headers.Authorization: environment variable OPS_TOKEN is not set (used as ${OPS_TOKEN})`,
	}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("positions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
	}

	// With the token set, every route of the example compiles.
	tab, err := CompileEnv(doc.Routes, env("OPS_TOKEN", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := tab.Route("alerts-to-ops")
	if h := r.HTTPOut.Headers[0]; h.Name != "Authorization" || mustExpand(t, h.Value, Vars{}) != "Bearer s3cret" {
		t.Errorf("header = %+v", h)
	}
	checkGolden(t, "spec_example_routes.json", tab.Describe())
}

// TestFieldPathToPosition shows the FieldPath contract with the YAML library
// the config loader uses: each path finds the key's value in the document.
func TestFieldPathToPosition(t *testing.T) {
	src := `routes:
  - name: ok
    http: {path: "/a"}
    topic: a
  - name: room-temp
    http: {path: "/rooms/{room}/t"}
    coap:
      path: /r/{id}
    topic: sensors/{room}/t
`
	var doc routesDoc
	if err := yaml.UnmarshalWithOptions([]byte(src), &doc, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	_, err := Compile(doc.Routes)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v", err)
	}
	file, err := parser.ParseBytes([]byte(src), 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := yaml.PathString("$." + fe.FieldPath())
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.FilterFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pos := n.GetToken().Position
	got := fmt.Sprintf("gateway.yaml:%d:%d: %s", pos.Line, pos.Column, fe.Error())
	want := `gateway.yaml:8:13: routes[1] "room-temp": coap.path: variable {room} used in topic "sensors/{room}/t" is not captured by path "/r/{id}"`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestStrictYAMLRejectsUnknownKeys(t *testing.T) {
	for _, src := range []string{
		"routes: [{name: a, topik: a}]",
		"routes: [{name: a, http: {path: /a, method: [GET]}}]",
		"routes: [{name: a, reply: {timeout: 5}}]",
		"routes: [{name: a, reply: {timeout: soon}}]",
		"routes: [{name: a, http_out: {url: x, retries: 3}}]",
	} {
		var doc routesDoc
		if err := yaml.UnmarshalWithOptions([]byte(src), &doc, yaml.Strict()); err == nil {
			t.Errorf("%s: decoded without error: %+v", src, doc)
		}
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Std() != 90*time.Second || d.String() != "1m30s" {
		t.Fatalf("%v %v", d, err)
	}
	err := d.UnmarshalText([]byte("5"))
	if err == nil || err.Error() != `invalid duration "5": want a Go duration such as "5s" or "1m30s"` {
		t.Fatalf("err = %v", err)
	}
	b, _ := json.Marshal(struct{ T Duration }{Duration(5 * time.Second)})
	if string(b) != `{"T":"5s"}` {
		t.Fatalf("json = %s", b)
	}
}

// env returns a lookup over name, value pairs.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustExpand(t *testing.T, tpl *TextTemplate, vars Vars) string {
	t.Helper()
	s, err := tpl.Expand(vars)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkGolden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}
