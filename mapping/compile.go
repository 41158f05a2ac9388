package mapping

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultQoS is the QoS of a route that does not set `qos`.
const DefaultQoS = 1

// DefaultReplyTimeout is how long a request/response route waits for the
// reply when `reply.timeout` is not set.
const DefaultReplyTimeout = 5 * time.Second

// FieldError is one problem [Compile] found, located by a YAML path.
type FieldError struct {
	// Path is the YAML path of the offending key, e.g. "routes[3].coap.path"
	// (0-based index, key names as in YAML).
	Path string
	// Route is the name of the route, when it has one.
	Route string
	// Msg says what is wrong.
	Msg string
}

// Error returns e.g.
// `routes[3] "room-temp": coap.path: variable {room} used in topic "sensors/{room}/t" is not captured by path "/r/{id}"`.
func (e *FieldError) Error() string {
	if e.Route != "" && strings.HasPrefix(e.Path, "routes[") {
		if end := strings.IndexByte(e.Path, ']'); end > 0 {
			head, rest := e.Path[:end+1], strings.TrimPrefix(e.Path[end+1:], ".")
			if rest == "" {
				return fmt.Sprintf("%s %q: %s", head, e.Route, e.Msg)
			}
			return fmt.Sprintf("%s %q: %s: %s", head, e.Route, rest, e.Msg)
		}
	}
	return e.Path + ": " + e.Msg
}

// FieldPath returns Path, so that a config loader can find the key in its
// YAML document and print FILE:LINE:COL.
func (e *FieldError) FieldPath() string { return e.Path }

// Route is one compiled route. A Route is shared by the [Table] and its
// readers and must not be modified.
type Route struct {
	// fingerprint is the route's spec in a canonical form (Fingerprint).
	fingerprint string

	// Index is the route's position in the `routes:` list (0-based).
	Index int
	// Name is the route's unique name.
	Name string

	// HTTPPath is the HTTP path template, nil if the route has no `http:`.
	HTTPPath *Template
	// HTTPMethods are the allowed HTTP methods, upper case, in config order.
	HTTPMethods []string
	// CoAPPath is the CoAP path template, nil if the route has no `coap:`.
	CoAPPath *Template
	// CoAPMethods are the allowed CoAP methods, upper case, in config order.
	CoAPMethods []string

	// Topic is the topic template requests publish to.
	Topic *Template
	// QoS of publishes (0, 1 or 2).
	QoS byte
	// Retain marks publishes retained.
	Retain bool
	// ContentType of publishes ("" if not set and no transform).
	ContentType string
	// Transform is "", "cbor-to-json" or "json-to-cbor"; see [Transform].
	Transform string

	// Reply is true for request/response routes.
	Reply bool
	// ReplyTopic is the reply topic template; nil means a per-request reply
	// topic (or no reply at all when Reply is false).
	ReplyTopic *Template
	// ReplyTimeout is how long to wait for a reply (0 if Reply is false).
	ReplyTimeout time.Duration

	// Subscribe is the topic template of an egress route (nil for other
	// routes); the route subscribes to its Filter and its captured
	// variables fill HTTPOut or CoAPOut.
	Subscribe *Template
	// HTTPOut is the webhook of an egress route, or nil.
	HTTPOut *HTTPOut
	// CoAPOut is the CoAP request of an egress route, or nil.
	CoAPOut *CoAPOut
	// Delivery is the delivery policy of an egress route.
	Delivery Delivery
	// Source is set for source routes, which publish to Topic (with QoS,
	// Retain and ContentType) what they observe or poll.
	Source *Source
}

// Fingerprint identifies everything the route was written with: two
// routes with the same fingerprint behave the same. A reload compares them
// to keep the streams and observations of routes that did not change and to
// end those of routes that were removed or changed.
func (r *Route) Fingerprint() string { return r.fingerprint }

// fingerprint is the spec as JSON (its fields are plain values, so the
// encoding is canonical).
func fingerprint(s *RouteSpec) string {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Sprintf("%s|%p", s.Name, s) // cannot happen: plain data
	}
	return string(b)
}

// TopicFor returns the topic a request publishes to, filled with the
// variables its path captured. Errors wrap [ErrMissingVar] or
// [ErrInvalidValue]; the latter means the request is bad (400 / 4.00).
func (r *Route) TopicFor(vars Vars) (string, error) { return r.Topic.Expand(vars) }

// ReplyTopicFor returns the reply topic for a request, or "" if the route
// has no reply topic template.
func (r *Route) ReplyTopicFor(vars Vars) (string, error) {
	if r.ReplyTopic == nil {
		return "", nil
	}
	return r.ReplyTopic.Expand(vars)
}

// AllowsHTTP reports whether the route accepts the HTTP method.
func (r *Route) AllowsHTTP(method string) bool {
	return r.HTTPPath != nil && slices.Contains(r.HTTPMethods, method)
}

// AllowsCoAP reports whether the route accepts the CoAP method.
func (r *Route) AllowsCoAP(method string) bool {
	return r.CoAPPath != nil && slices.Contains(r.CoAPMethods, method)
}

// Table is the compiled, immutable set of routes. It is safe for concurrent
// use; a config reload builds a new Table and swaps it in. A nil *Table is
// an empty table.
type Table struct {
	routes []*Route
	byName map[string]*Route
	http   []*Route // routes with an HTTP path, most specific first
	coap   []*Route // routes with a CoAP path, most specific first
}

// Routes returns the routes in config order. The slice is a copy; the
// routes are shared and must not be modified.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// Len returns the number of routes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

// Route returns the route called name.
func (t *Table) Route(name string) (*Route, bool) {
	if t == nil {
		return nil, false
	}
	r, ok := t.byName[name]
	return r, ok
}

// MatchHTTP finds the route for an HTTP request, for adapters that do not
// register one handler per route. path is the decoded request path
// (url.URL.Path). Routes are tried most specific first: at the first segment
// where two path templates differ, a literal beats "{x}", which beats
// "{x...}" (the order chi uses); equally specific routes go in config order.
//
// ok is true if a route matches the path and allows the method. If routes
// match the path but none allows the method, MatchHTTP returns the first of
// them with ok false (answer 405; its HTTPMethods give Allow). If no route
// matches, the route is nil.
func (t *Table) MatchHTTP(method, path string) (*Route, Vars, bool) {
	if t == nil {
		return nil, Vars{}, false
	}
	return match(t.http, method, path, func(r *Route) (*Template, []string) { return r.HTTPPath, r.HTTPMethods })
}

// MatchCoAP is [Table.MatchHTTP] for CoAP: path is "/" followed by the
// Uri-Path options joined with "/", method is "GET", "POST", "PUT" or
// "DELETE".
func (t *Table) MatchCoAP(method, path string) (*Route, Vars, bool) {
	if t == nil {
		return nil, Vars{}, false
	}
	return match(t.coap, method, path, func(r *Route) (*Template, []string) { return r.CoAPPath, r.CoAPMethods })
}

func match(routes []*Route, method, path string, get func(*Route) (*Template, []string)) (*Route, Vars, bool) {
	var (
		vars     Vars
		fallback *Route
		fbVars   Vars
	)
	for _, r := range routes {
		tpl, methods := get(r)
		if !tpl.Match(path, &vars) {
			continue
		}
		if slices.Contains(methods, method) {
			return r, vars, true
		}
		if fallback == nil {
			fallback, fbVars = r, vars
		}
	}
	return fallback, fbVars, false
}

// RouteInfo describes a route for GET /routes.
type RouteInfo struct {
	// Name is the route's name.
	Name string `json:"name"`
	// HTTP is the HTTP side, if any.
	HTTP *EndpointInfo `json:"http,omitempty"`
	// CoAP is the CoAP side, if any.
	CoAP *EndpointInfo `json:"coap,omitempty"`
	// Topic is the topic template (ingress and source routes).
	Topic string `json:"topic,omitempty"`
	// Subscribe is the subscribe template (egress routes).
	Subscribe string `json:"subscribe,omitempty"`
	// Filter is the MQTT filter of the topic template (ingress and source
	// routes) or of the subscribe template (egress routes).
	Filter string `json:"filter"`
	// QoS of publishes.
	QoS int `json:"qos"`
	// Retain of publishes.
	Retain bool `json:"retain"`
	// ContentType of publishes.
	ContentType string `json:"content_type,omitempty"`
	// Transform applied to request payloads.
	Transform string `json:"transform,omitempty"`
	// Reply is set for request/response routes.
	Reply *ReplyInfo `json:"reply,omitempty"`
	// HTTPOut is set for webhook egress routes.
	HTTPOut *EgressInfo `json:"http_out,omitempty"`
	// CoAPOut is set for CoAP egress routes.
	CoAPOut *EgressInfo `json:"coap_out,omitempty"`
	// Source is set for source routes.
	Source *SourceInfo `json:"source,omitempty"`
}

// EndpointInfo describes a route's HTTP or CoAP side.
type EndpointInfo struct {
	// Path is the path template.
	Path string `json:"path"`
	// Methods are the allowed methods.
	Methods []string `json:"methods"`
}

// ReplyInfo describes a request/response route's reply side.
type ReplyInfo struct {
	// Topic is the reply topic template; empty means per-request.
	Topic string `json:"topic,omitempty"`
	// Timeout is a Go duration, e.g. "5s".
	Timeout string `json:"timeout"`
}

// Describe returns a JSON-friendly description of the table, in config
// order.
func (t *Table) Describe() []RouteInfo {
	out := make([]RouteInfo, 0, t.Len())
	for _, r := range t.Routes() {
		ri := RouteInfo{
			Name:        r.Name,
			QoS:         int(r.QoS),
			Retain:      r.Retain,
			ContentType: r.ContentType,
			Transform:   r.Transform,
		}
		if r.Topic != nil {
			ri.Topic, ri.Filter = r.Topic.String(), r.Topic.Filter()
		}
		describeEgress(r, &ri)
		if r.HTTPPath != nil {
			ri.HTTP = &EndpointInfo{Path: r.HTTPPath.String(), Methods: slices.Clone(r.HTTPMethods)}
		}
		if r.CoAPPath != nil {
			ri.CoAP = &EndpointInfo{Path: r.CoAPPath.String(), Methods: slices.Clone(r.CoAPMethods)}
		}
		if r.Reply {
			ri.Reply = &ReplyInfo{Timeout: r.ReplyTimeout.String()}
			if r.ReplyTopic != nil {
				ri.Reply.Topic = r.ReplyTopic.String()
			}
		}
		out = append(out, ri)
	}
	return out
}

// protocol describes what differs between the HTTP and CoAP sides.
type protocol struct {
	key      string   // YAML key: "http" or "coap"
	methods  []string // valid methods
	reserved map[string]string
}

var (
	httpProto = protocol{
		key:     "http",
		methods: []string{"GET", "POST", "PUT", "DELETE", "PATCH"},
		reserved: map[string]string{
			"topics": "/topics/", "publish": "/publish", "healthz": "/healthz",
			"readyz": "/readyz", "metrics": "/metrics", "routes": "/routes",
			"openapi.json": "/openapi.json",
		},
	}
	coapProto = protocol{
		key:      "coap",
		methods:  []string{"GET", "POST", "PUT", "DELETE"},
		reserved: map[string]string{"ps": "/ps/", ".well-known": "/.well-known/core"},
	}
	defaultMethods      = []string{"GET", "POST", "PUT", "DELETE"}
	defaultReplyMethods = []string{"POST"}
)

// claim remembers which route took a (path shape, method) pair.
type claim struct {
	route *Route
	path  string
}

type compiler struct {
	lookup func(string) (string, bool)
	errs   []error
	names  map[string]int
	claims map[string]map[string]claim // protocol key -> shape+" "+method -> claim
}

func (c *compiler) add(path, route, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Route: route, Msg: fmt.Sprintf(format, args...)})
}

// Compile validates specs and builds a [Table]. It reports every problem at
// once: the error is an errors.Join of [*FieldError] values, in config order.
// On error the Table is nil.
//
// Rules: a route needs a unique name of letters, digits, '.', '_' and '-'; at
// least one of http and coap; a valid topic template without wildcards and
// not starting with '$'; every variable of topic and reply.topic captured by
// each path (path variables the topic does not use are allowed); qos 0 to 2
// (default 1); a known transform; methods from the protocol's set (default
// GET, POST, PUT, DELETE; POST for reply routes); no two routes with the same
// path shape and method on one protocol; no path under the gateway's generic
// endpoints.
//
// Egress routes (subscribe with exactly one of http_out and coap_out): a
// valid subscribe template; a URL template of scheme http/https (http_out)
// or coap/coaps (coap_out, coaps needs psk) whose variables subscribe
// captures; ${NAME} in URLs and header values names an environment variable
// that must be set; a known method (default POST), body (raw or envelope),
// retry backoff ("MIN..MAX"), overflow policy; max_in_flight at most 1 with
// ordered. Source routes (source and topic): exactly one of coap_observe and
// http_poll with a URL of the right scheme, a topic without variables, an
// interval of at least [MinPollInterval] for http_poll only. Egress and
// source routes must not carry the keys of other route kinds.
//
// Environment variables are read with os.LookupEnv; see [CompileEnv].
func Compile(specs []RouteSpec) (*Table, error) {
	return CompileEnv(specs, os.LookupEnv)
}

// CompileEnv is [Compile] with the environment given by lookup, for tests
// and for loaders that keep their own environment.
func CompileEnv(specs []RouteSpec, lookup func(string) (string, bool)) (*Table, error) {
	c := &compiler{
		lookup: lookup,
		names:  map[string]int{},
		claims: map[string]map[string]claim{"http": {}, "coap": {}},
	}
	t := &Table{byName: map[string]*Route{}}
	for i := range specs {
		if r := c.route(i, &specs[i]); r != nil {
			t.routes = append(t.routes, r)
		}
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	for _, r := range t.routes {
		t.byName[r.Name] = r
		if r.HTTPPath != nil {
			t.http = append(t.http, r)
		}
		if r.CoAPPath != nil {
			t.coap = append(t.coap, r)
		}
	}
	slices.SortStableFunc(t.http, func(a, b *Route) int { return specificity(a.HTTPPath, b.HTTPPath) })
	slices.SortStableFunc(t.coap, func(a, b *Route) int { return specificity(a.CoAPPath, b.CoAPPath) })
	return t, nil
}

// specificity orders path templates most specific first: by the kinds of
// their segments (literal < {x} < {x...}) compared left to right, shorter
// first on a tie. Templates it calls equal have identical kind sequences.
func specificity(a, b *Template) int {
	for i := 0; i < len(a.segs) && i < len(b.segs); i++ {
		if d := cmp.Compare(a.segs[i].kind, b.segs[i].kind); d != 0 {
			return d
		}
	}
	return cmp.Compare(len(a.segs), len(b.segs))
}

// shape is a template with variable names erased: two paths with the same
// shape match exactly the same requests.
func shape(t *Template) string {
	var b strings.Builder
	for _, sg := range t.segs {
		b.WriteByte('/')
		switch sg.kind {
		case segLiteral:
			b.WriteString(sg.text)
		case segOne:
			b.WriteString("{}")
		case segRest:
			b.WriteString("{...}")
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (c *compiler) route(i int, s *RouteSpec) *Route {
	p := "routes[" + strconv.Itoa(i) + "]"
	name := s.Name
	nerr := len(c.errs)
	switch {
	case name == "":
		c.add(p+".name", "", "required")
	case len(name) > 64 || !validName(name):
		c.add(p+".name", "", "invalid route name %q: use 1 to 64 letters, digits, '.', '_' or '-'", name)
		name = ""
	default:
		if j, dup := c.names[name]; dup {
			c.add(p+".name", name, "duplicate route name, also used by routes[%d]", j)
		} else {
			c.names[name] = i
		}
	}

	switch {
	case s.Subscribe != "" || s.HTTPOut != nil || s.CoAPOut != nil:
		if r := c.egress(i, p, name, s); r != nil && len(c.errs) == nerr {
			return r
		}
		return nil
	case s.Source != nil:
		if r := c.source(i, p, name, s); r != nil && len(c.errs) == nerr {
			return r
		}
		return nil
	}

	r := &Route{Index: i, Name: name, Retain: s.Retain, Transform: s.Transform, Reply: s.Reply != nil, fingerprint: fingerprint(s)}
	if s.HTTP == nil && s.CoAP == nil {
		c.add(p, name, "needs http or coap (or both): a route binds a request path to a topic")
	}

	r.Topic = c.topic(p+".topic", name, "topic", s.Topic, true)

	if s.Reply != nil {
		if s.Reply.Topic != "" {
			r.ReplyTopic = c.topic(p+".reply.topic", name, "reply.topic", s.Reply.Topic, false)
			if r.ReplyTopic != nil && s.Reply.Topic == s.Topic {
				c.add(p+".reply.topic", name, "must differ from topic %q, or the request would be taken for its own reply", s.Topic)
			}
		}
		r.ReplyTimeout = s.Reply.Timeout.Std()
		switch {
		case r.ReplyTimeout < 0:
			c.add(p+".reply.timeout", name, "must be positive, got %s", r.ReplyTimeout)
		case r.ReplyTimeout == 0:
			r.ReplyTimeout = DefaultReplyTimeout
		}
		if s.Retain {
			c.add(p+".retain", name, "a request/response route must not retain its requests (each new subscriber would get the last request again)")
		}
	}

	r.QoS = DefaultQoS
	if s.QoS != nil {
		if *s.QoS < 0 || *s.QoS > 2 {
			c.add(p+".qos", name, "must be 0, 1 or 2, got %d", *s.QoS)
		} else {
			r.QoS = byte(*s.QoS)
		}
	}

	outType := ""
	switch s.Transform {
	case "":
	case TransformCBORToJSON:
		outType = "application/json"
	case TransformJSONToCBOR:
		outType = "application/cbor"
	default:
		c.add(p+".transform", name, "unknown transform %q (want %s or %s)", s.Transform, TransformCBORToJSON, TransformJSONToCBOR)
	}
	r.ContentType = s.ContentType
	if s.ContentType == "" {
		r.ContentType = outType
	}
	c.contentType(p, name, s.ContentType, s.Transform, outType)

	if s.HTTP != nil {
		r.HTTPPath, r.HTTPMethods = c.endpoint(p, r, httpProto, s.HTTP.Path, s.HTTP.Methods)
	}
	if s.CoAP != nil {
		r.CoAPPath, r.CoAPMethods = c.endpoint(p, r, coapProto, s.CoAP.Path, s.CoAP.Methods)
	}
	if len(c.errs) > nerr {
		return nil
	}
	return r
}

// contentType checks a content_type against the output type of a
// transform ("" if none).
func (c *compiler) contentType(p, name, ct, transform, outType string) {
	if ct == "" {
		return
	}
	mt, _, err := mime.ParseMediaType(ct)
	typ, sub, _ := strings.Cut(mt, "/")
	switch {
	case err != nil:
		c.add(p+".content_type", name, "invalid media type %q: %v", ct, err)
	case typ == "" || sub == "":
		c.add(p+".content_type", name, "invalid media type %q: want type/subtype, e.g. application/json", ct)
	case outType != "" && mt != outType:
		c.add(p+".content_type", name, "%q contradicts transform %s, which produces %s", ct, transform, outType)
	}
}

// topic parses a topic or reply.topic template.
func (c *compiler) topic(path, name, key, s string, required bool) *Template {
	if s == "" {
		if required {
			c.add(path, name, "required")
		}
		return nil
	}
	t, err := ParseTopicTemplate(s)
	if err != nil {
		c.add(path, name, "%s", err.(*TemplateError).Msg)
		return nil
	}
	if t.segs[0].kind == segLiteral && strings.HasPrefix(t.segs[0].text, "$") {
		c.add(path, name, "%s %q starts with '$': $-topics are reserved for the broker [MQTT-4.7.2]", key, s)
		return nil
	}
	return t
}

// endpoint checks one protocol side of a route and claims its path and
// methods.
func (c *compiler) endpoint(p string, r *Route, pr protocol, path string, methods []string) (*Template, []string) {
	key := p + "." + pr.key
	name := r.Name
	var tpl *Template
	if path == "" {
		c.add(key+".path", name, "required")
	} else if t, err := ParsePathTemplate(path); err != nil {
		c.add(key+".path", name, "%s", err.(*TemplateError).Msg)
	} else {
		tpl = t
		if len(t.segs) > 0 && t.segs[0].kind == segLiteral {
			if ep, ok := pr.reserved[t.segs[0].text]; ok {
				c.add(key+".path", name, "path %q collides with the gateway's generic endpoint %s", path, ep)
			}
		}
		for _, tt := range []struct {
			key string
			t   *Template
		}{{"topic", r.Topic}, {"reply.topic", r.ReplyTopic}} {
			if tt.t == nil {
				continue
			}
			for _, sg := range tt.t.segs {
				switch {
				case sg.kind == segLiteral:
				case !t.HasVar(sg.text):
					c.add(key+".path", name, "variable {%s} used in %s %q is not captured by path %q", sg.text, tt.key, tt.t.raw, path)
				case sg.kind == segOne && t.IsRest(sg.text):
					c.add(key+".path", name, "{%s...} in path %q can hold several segments, but %s %q takes {%s} as one level (write {%s...} there)", sg.text, path, tt.key, tt.t.raw, sg.text, sg.text)
				}
			}
		}
	}

	var ms []string
	switch {
	case methods == nil && r.Reply:
		ms = slices.Clone(defaultReplyMethods)
	case methods == nil:
		ms = slices.Clone(defaultMethods)
	case len(methods) == 0:
		c.add(key+".methods", name, "must list at least one method (or leave methods out for the default)")
	default:
		for j, m := range methods {
			mk := key + ".methods[" + strconv.Itoa(j) + "]"
			switch {
			case slices.Contains(ms, m):
				c.add(mk, name, "method %s is listed twice", m)
			case slices.Contains(pr.methods, m):
				ms = append(ms, m)
			case slices.Contains(pr.methods, strings.ToUpper(m)):
				c.add(mk, name, "method names are upper case: write %q", strings.ToUpper(m))
			default:
				c.add(mk, name, "unknown %s method %q (want one of %s)", pr.key, m, strings.Join(pr.methods, ", "))
			}
		}
	}

	if tpl != nil {
		sh := shape(tpl)
		claims := c.claims[pr.key]
		var others []claim // other routes this one clashes with, first clash first
		clash := map[*Route][]string{}
		for _, m := range ms {
			k := m + " " + sh
			prev, ok := claims[k]
			if !ok {
				claims[k] = claim{route: r, path: path}
				continue
			}
			if clash[prev.route] == nil {
				others = append(others, prev)
			}
			clash[prev.route] = append(clash[prev.route], m)
		}
		for _, o := range others {
			who := "routes[" + strconv.Itoa(o.route.Index) + "]"
			if o.route.Name != "" {
				who += " " + strconv.Quote(o.route.Name)
			}
			c.add(key+".path", name, "%s %s is also claimed by %s (%s.path %q)",
				strings.Join(clash[o.route], ", "), path, who, pr.key, o.path)
		}
	}
	return tpl, ms
}
