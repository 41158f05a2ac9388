package coapadapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// psPrefix is the generic publish/subscribe resource (SPEC §5).
const psPrefix = "ps"

// request is one CoAP request as the handlers see it.
type request struct {
	w     mux.ResponseWriter
	r     *mux.Message
	p     *peer
	path  []string // Uri-Path options
	query []string // Uri-Query options
	route string   // fingerprint of the mapping route serving it ("" for /ps)
}

// serveCOAP is the one handler of every transport: it parses the path, checks
// access and rate and dispatches.
func (s *Server) serveCOAP(w mux.ResponseWriter, r *mux.Message) {
	if c := r.Code(); c < codes.GET || c >= 32 {
		// Empty ACK/RST and responses reach the handler after go-coap
		// matched them to our notifications: nothing to answer.
		return
	}
	p, _ := w.Conn().Context().Value(peerKey{}).(*peer)
	if p == nil {
		p = newPeer(s, "unknown", "") // cannot happen: every conn carries its peer
	}
	req := &request{w: w, r: r, p: p}
	for _, o := range r.Options() {
		switch o.ID {
		case message.URIPath:
			req.path = append(req.path, string(o.Value))
		case message.URIQuery:
			req.query = append(req.query, string(o.Value))
		}
	}
	defer func() {
		code := w.Message().Code()
		s.metrics.requests.WithLabelValues(p.transport, code.String()).Inc()
	}()

	if ok, wait := p.allow(time.Now()); !ok {
		s.fail(req, codes.TooManyRequests, "rate limit of %g requests/s exceeded", s.cfg.PeerRate).maxAge(wait)
		return
	}
	if len(req.path) == 2 && req.path[0] == ".well-known" && req.path[1] == "core" {
		s.wellKnownCore(req)
		return
	}
	if !s.cfg.AllowAnonymous && p.identity == "" {
		s.fail(req, codes.Unauthorized, "authentication required: use DTLS with a PSK or a client certificate")
		return
	}
	if len(req.path) > 0 && req.path[0] == psPrefix {
		s.servePS(req, req.path[1:])
		return
	}
	if s.serveTable(req) {
		return
	}
	s.fail(req, codes.NotFound, "no resource at /%s (topics are under /ps/)", strings.Join(req.path, "/"))
}

// pubDefaults are what a route publishes with unless the request overrides
// it with query options.
type pubDefaults struct {
	Retain      bool
	QoS         int    // -1: from the message type (CON 1, NON 0)
	ContentType string // used when the request has no Content-Format
	Transform   string // mapping.Transform name applied to the body ("" none)
	Fixed       bool   // qos and retain are the route's: query options refused
}

// servePS serves /ps/{topic...}.
func (s *Server) servePS(req *request, levels []string) {
	if len(levels) == 0 {
		s.fail(req, codes.BadRequest, "missing topic: use /ps/{topic}, one Uri-Path option per topic level")
		return
	}
	topic := strings.Join(levels, "/")
	switch req.r.Code() {
	case codes.POST:
		s.publish(req, topic, pubDefaults{QoS: -1})
	case codes.PUT:
		s.publish(req, topic, pubDefaults{QoS: -1, Retain: true})
	case codes.DELETE:
		s.clear(req, topic)
	case codes.GET:
		obs, err := req.r.Observe()
		switch {
		case err != nil:
			if s.continueNotification(req, topic) {
				return
			}
			s.read(req, topic)
		case obs == 0:
			s.observe(req, topic)
		case obs == 1:
			s.deregister(req)
			if strings.ContainsAny(topic, "+#") {
				if s.checkFilter(req, topic) {
					s.reply(req, codes.Content, nil, -1)
				}
				return
			}
			s.read(req, topic)
		default:
			s.fail(req, codes.BadRequest, "Observe must be 0 (register) or 1 (deregister), not %d", obs)
		}
	default:
		s.fail(req, codes.MethodNotAllowed, "method %v not allowed on /ps: use GET, POST, PUT or DELETE", req.r.Code())
	}
}

// queryOptions parses the qos= and retain= query options.
func (s *Server) queryOptions(req *request, d *pubDefaults) bool {
	if d.Fixed && len(req.query) > 0 {
		s.fail(req, codes.BadRequest, "this route fixes qos and retain: remove the query options")
		return false
	}
	for _, q := range req.query {
		k, v, _ := strings.Cut(q, "=")
		switch k {
		case "qos":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 2 {
				s.fail(req, codes.BadRequest, "query option qos=%s: must be 0, 1 or 2", v)
				return false
			}
			d.QoS = n
		case "retain":
			b, err := strconv.ParseBool(v)
			if err != nil {
				s.fail(req, codes.BadRequest, "query option retain=%s: must be true or false", v)
				return false
			}
			d.Retain = b
		default:
			s.fail(req, codes.BadRequest, "unknown query option %q (known: qos, retain)", k)
			return false
		}
	}
	return true
}

// publish publishes the request body to topic: the ingress flow of /ps and of
// mapped routes. The response is sent only after the broker holds the
// message (with storage on, on disk), so a 2.04 to a CON means QoS 1 is kept.
func (s *Server) publish(req *request, topic string, d pubDefaults) {
	if !s.queryOptions(req, &d) {
		return
	}
	if !s.authorized(req, "publish", topic) {
		return
	}
	if err := bridge.ValidateTopic(topic); err != nil {
		s.failErr(req, err)
		return
	}
	qos := d.QoS
	if qos < 0 {
		qos = 1
		if req.r.Type() == message.NonConfirmable {
			qos = 0
		}
	}
	body, ct, ok := s.payload(req, d)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(req.r.Context(), s.cfg.PublishTimeout)
	defer cancel()
	err := s.broker.Publish(ctx, bridge.Message{Topic: topic, Payload: body, QoS: byte(qos), Retain: d.Retain, ContentType: ct})
	if err != nil {
		s.failErr(req, err)
		return
	}
	s.metrics.published.WithLabelValues(strconv.Itoa(qos)).Inc()
	s.reply(req, codes.Changed, nil, -1)
}

// payload reads the request's body and content type (its Content-Format,
// else the route's), applying the route's transform; on failure the
// request has been answered (4.00, 4.13, 4.15) and ok is false.
func (s *Server) payload(req *request, d pubDefaults) (body []byte, ct string, ok bool) {
	ct = d.ContentType
	if cf, err := req.r.ContentFormat(); err == nil {
		t, known := contentTypeOf(cf)
		if !known {
			s.fail(req, codes.UnsupportedMediaType, "unsupported Content-Format %d", cf)
			return nil, "", false
		}
		ct = t
	}
	if body, ok = s.readBody(req); !ok {
		return nil, "", false
	}
	if d.Transform != "" {
		out, t, err := mapping.Transform(d.Transform, body)
		if err != nil {
			s.fail(req, codes.BadRequest, "%v", err)
			return nil, "", false
		}
		body, ct = out, t
	}
	return body, ct, true
}

// clear removes the retained message of topic (DELETE).
func (s *Server) clear(req *request, topic string) {
	d := pubDefaults{QoS: 1, Retain: true}
	if !s.queryOptions(req, &d) {
		return
	}
	if !s.authorized(req, "publish", topic) {
		return
	}
	ctx, cancel := context.WithTimeout(req.r.Context(), s.cfg.PublishTimeout)
	defer cancel()
	// An empty retained message clears the topic [MQTT-3.3.1-6].
	if err := s.broker.Publish(ctx, bridge.Message{Topic: topic, QoS: byte(d.QoS), Retain: true}); err != nil {
		s.failErr(req, err)
		return
	}
	s.reply(req, codes.Deleted, nil, -1)
}

// read answers with the retained message of topic (GET).
func (s *Server) read(req *request, topic string) {
	if len(req.query) > 0 {
		s.fail(req, codes.BadRequest, "GET takes no query options")
		return
	}
	if !s.authorized(req, "read", topic) {
		return
	}
	if strings.ContainsAny(topic, "+#") {
		if s.checkFilter(req, topic) {
			s.fail(req, codes.BadRequest, "GET of a wildcard filter needs Observe: 0: %s", topic)
		}
		return
	}
	ms, err := s.broker.Retained(topic)
	if err != nil {
		s.failErr(req, err)
		return
	}
	if len(ms) == 0 {
		s.fail(req, codes.NotFound, "no retained message on %s", topic)
		return
	}
	m := ms[0]
	if !s.acceptable(req, m) {
		return
	}
	s.replyMessage(req, m, -1)
}

// acceptable checks the Accept option against m's content type (4.06).
func (s *Server) acceptable(req *request, m bridge.Message) bool {
	acc, err := req.r.Accept()
	if err != nil {
		return true
	}
	if cf, ok := contentFormat(m.ContentType); ok && cf == acc {
		return true
	}
	s.fail(req, codes.NotAcceptable, "the message on %s is %q, not Content-Format %d", m.Topic, m.ContentType, acc)
	return false
}

// readBody reads the (reassembled) request body, enforcing MaxPayload.
func (s *Server) readBody(req *request) ([]byte, bool) {
	b := req.r.Body()
	if b == nil {
		return nil, true
	}
	size, err := b.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = b.Seek(0, io.SeekStart)
	}
	if err != nil {
		s.fail(req, codes.BadRequest, "cannot read payload: %v", err)
		return nil, false
	}
	if size > int64(s.cfg.MaxPayload) {
		s.tooLarge(req, size)
		return nil, false
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(b, body); err != nil {
		s.fail(req, codes.BadRequest, "cannot read payload: %v", err)
		return nil, false
	}
	return body, true
}

// tooLarge answers 4.13 with Size1 = MaxPayload (RFC 7959 §2.9.3).
func (s *Server) tooLarge(req *request, size int64) {
	s.fail(req, codes.RequestEntityTooLarge, "payload of %d bytes is over the limit of %d bytes", size, s.cfg.MaxPayload)
	req.w.Message().SetOptionUint32(message.Size1, uint32(min(s.cfg.MaxPayload, math.MaxUint32)))
}

// checkFilter validates a subscription filter, answering 4.00 if bad.
func (s *Server) checkFilter(req *request, filter string) bool {
	if err := bridge.ValidateFilter(filter); err != nil {
		s.failErr(req, err)
		return false
	}
	return true
}

// authorized asks Config.Authorize, answering 4.03 if denied.
func (s *Server) authorized(req *request, action, topic string) bool {
	if s.cfg.Authorize == nil || s.cfg.Authorize(req.p.identity, action, topic) {
		return true
	}
	who := req.p.identity
	if who == "" {
		who = "anonymous"
	}
	s.fail(req, codes.Forbidden, "%s may not %s %s", who, action, topic)
	return false
}

// reply sets a response with body and Content-Format cf (-1: none).
func (s *Server) reply(req *request, code codes.Code, body []byte, cf int) {
	msg := req.w.Message()
	msg.SetCode(code)
	msg.ResetOptionsTo(nil)
	if cf >= 0 {
		msg.SetContentFormat(message.MediaType(cf))
	}
	if body != nil {
		msg.SetBody(bytes.NewReader(body))
	}
}

// replyMessage answers 2.05 with m; observe >= 0 adds the Observe option.
func (s *Server) replyMessage(req *request, m bridge.Message, observe int64) {
	cf := -1
	if f, ok := contentFormat(m.ContentType); ok {
		cf = int(f)
	}
	s.reply(req, codes.Content, m.Payload, cf)
	if observe >= 0 {
		req.w.Message().SetObserve(uint32(observe))
	}
	if m.Expiry > 0 {
		req.w.Message().SetOptionUint32(message.MaxAge, uint32(min(m.Expiry/time.Second, math.MaxUint32)))
	}
}

// failure lets callers add Max-Age to an error response.
type failure struct{ req *request }

// maxAge sets Max-Age to d rounded up to whole seconds (at least 1).
func (f failure) maxAge(d time.Duration) {
	secs := max(1, int64(math.Ceil(d.Seconds())))
	f.req.w.Message().SetOptionUint32(message.MaxAge, uint32(min(secs, math.MaxUint32)))
}

// fail answers code with a diagnostic payload (RFC 7252 §5.5.2: no
// Content-Format).
func (s *Server) fail(req *request, code codes.Code, format string, args ...any) failure {
	s.reply(req, code, []byte(fmt.Sprintf(format, args...)), -1)
	return failure{req}
}

// retryAfter is the Max-Age of 5.03 answers.
const retryAfter = 5 * time.Second

// failErr maps a bridge error to its CoAP code: the adapter's one error →
// status table (STYLE §3.9).
func (s *Server) failErr(req *request, err error) {
	var te *bridge.TopicError
	switch {
	case errors.As(err, &te):
		s.fail(req, codes.BadRequest, "%s", te.Error())
	case errors.Is(err, bridge.ErrInvalidTopic), errors.Is(err, bridge.ErrInvalidQoS):
		s.fail(req, codes.BadRequest, "%v", err)
	case errors.Is(err, bridge.ErrClosed):
		s.fail(req, codes.ServiceUnavailable, "broker is not running").maxAge(retryAfter)
	case errors.Is(err, bridge.ErrOverloaded):
		s.fail(req, codes.ServiceUnavailable, "broker overloaded: %v", err).maxAge(retryAfter)
	case errors.Is(err, context.DeadlineExceeded):
		s.fail(req, codes.GatewayTimeout, "broker did not take the message within %v", s.cfg.PublishTimeout)
	case errors.Is(err, context.Canceled):
		s.fail(req, codes.ServiceUnavailable, "shutting down").maxAge(retryAfter)
	default:
		s.log.Warn("coap request failed", "error", err)
		s.fail(req, codes.InternalServerError, "internal error: %v", err)
	}
}

// wellKnownCore answers RFC 6690 resource discovery. The broker resource
// follows draft-ietf-core-coap-pubsub: rt=core.ps on the collection;
// topics are reachable below it and observable.
func (s *Server) wellKnownCore(req *request) {
	if req.r.Code() != codes.GET {
		s.fail(req, codes.MethodNotAllowed, "/.well-known/core is read-only: use GET")
		return
	}
	links := []string{
		`</ps>;rt="core.ps";ct=40;title="MQTT topics: /ps/{topic}"`,
		`</ps/{topic}>;rt="core.ps.data";obs;ct="0 42 50 60"`,
	}
	links = append(links, s.tableLinks()...)
	if s.cfg.ExtraLinks != nil {
		links = append(links, s.cfg.ExtraLinks()...)
	}
	links = filterLinks(links, req.query)
	s.reply(req, codes.Content, []byte(strings.Join(links, ",")), int(message.AppLinkFormat))
}

// filterLinks applies RFC 6690 §4.1 query filtering (attr=value, with a
// trailing '*' as prefix match) to link-values.
func filterLinks(links, query []string) []string {
	if len(query) == 0 {
		return links
	}
	out := links[:0:0]
next:
	for _, l := range links {
		for _, q := range query {
			k, v, _ := strings.Cut(q, "=")
			if !linkMatches(l, k, v) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func linkMatches(link, attr, want string) bool {
	target, params, _ := strings.Cut(link, ">")
	target = strings.TrimPrefix(target, "<")
	match := func(got string) bool {
		if p, ok := strings.CutSuffix(want, "*"); ok {
			return strings.HasPrefix(got, p)
		}
		return got == want
	}
	if attr == "href" {
		return match(target)
	}
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(p, "=")
		if k != attr {
			continue
		}
		if !ok {
			return want == ""
		}
		for _, one := range strings.Fields(strings.Trim(v, `"`)) {
			if match(one) {
				return true
			}
		}
	}
	return false
}
