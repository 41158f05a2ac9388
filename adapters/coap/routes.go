package coapadapter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// SetTable serves the CoAP routes of table from now on (nil serves none).
// The swap is atomic; observations made through a route that table keeps
// unchanged go on, those of routes it removes or changes end.
func (s *Server) SetTable(table *mapping.Table) {
	old := s.table.Swap(table)
	if old == nil {
		return
	}
	kept := map[string]bool{}
	if table != nil {
		for _, rt := range table.Routes() {
			kept[rt.Fingerprint()] = true
		}
	}
	s.obs.mu.Lock()
	var ending []*observer
	for _, g := range s.obs.groups {
		for o := range g.members {
			if o.route != "" && !kept[o.route] {
				ending = append(ending, o)
			}
		}
	}
	s.obs.mu.Unlock()
	for _, o := range ending {
		o.end("route removed")
	}
}

// coapMethod names a request code as the mapping's method lists do.
func coapMethod(c codes.Code) string {
	switch c {
	case codes.GET:
		return "GET"
	case codes.POST:
		return "POST"
	case codes.PUT:
		return "PUT"
	case codes.DELETE:
		return "DELETE"
	}
	return c.String()
}

// serveTable serves req if a mapping route claims its path; it reports
// whether one did.
func (s *Server) serveTable(req *request) bool {
	table := s.table.Load()
	if table == nil {
		return false
	}
	path := "/" + strings.Join(req.path, "/")
	rt, vars, ok := table.MatchCoAP(coapMethod(req.r.Code()), path)
	if rt == nil {
		return false
	}
	if !ok {
		s.fail(req, codes.MethodNotAllowed, "method %v not allowed on %s: use %s", req.r.Code(), path, strings.Join(rt.CoAPMethods, ", "))
		return true
	}
	topic, err := rt.TopicFor(vars)
	if err != nil {
		s.fail(req, codes.BadRequest, "route %q: %v", rt.Name, err)
		return true
	}
	req.route = rt.Fingerprint()
	d := pubDefaults{QoS: int(rt.QoS), Retain: rt.Retain, ContentType: rt.ContentType, Transform: rt.Transform, Fixed: true}
	if rt.Reply {
		replyTopic := ""
		if rt.ReplyTopic != nil {
			if replyTopic, err = rt.ReplyTopicFor(vars); err != nil {
				s.fail(req, codes.BadRequest, "route %q: reply topic: %v", rt.Name, err)
				return true
			}
		}
		s.request(req, topic, replyTopic, rt, d)
		return true
	}
	switch req.r.Code() {
	case codes.GET:
		obs, err := req.r.Observe()
		switch {
		case err != nil:
			if !s.continueNotification(req, path) {
				s.read(req, topic)
			}
		case obs == 0:
			s.observe(req, topic)
		case obs == 1:
			s.deregister(req)
			s.read(req, topic)
		default:
			s.fail(req, codes.BadRequest, "Observe must be 0 (register) or 1 (deregister), not %d", obs)
		}
	case codes.DELETE:
		s.clear(req, topic)
	default:
		s.publish(req, topic, d)
	}
	return true
}

// request publishes the body as an MQTT 5 request and answers the first
// reply (2.05 with its payload and Content-Format); 5.04 when none comes
// within the route's timeout.
func (s *Server) request(req *request, topic, replyTopic string, rt *mapping.Route, d pubDefaults) {
	if len(req.query) > 0 {
		s.fail(req, codes.BadRequest, "this route fixes qos and retain: remove the query options")
		return
	}
	if !s.authorized(req, "publish", topic) {
		return
	}
	body, ct, ok := s.payload(req, d)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(req.r.Context(), rt.ReplyTimeout)
	defer cancel()
	reply, err := s.broker.Request(ctx, bridge.Message{Topic: topic, Payload: body, QoS: byte(d.QoS), ContentType: ct}, replyTopic)
	if err != nil {
		if errors.Is(err, bridge.ErrNoReply) {
			s.fail(req, codes.GatewayTimeout, "no reply to %s within %v", topic, rt.ReplyTimeout)
			return
		}
		s.failErr(req, err)
		return
	}
	s.replyMessage(req, reply, -1)
}

// tableLinks are the /.well-known/core entries of the mapping's CoAP
// routes (RFC 6690): path templates as written, observable unless they are
// request/response routes.
func (s *Server) tableLinks() []string {
	table := s.table.Load()
	if table == nil {
		return nil
	}
	var links []string
	for _, rt := range table.Routes() {
		if rt.CoAPPath == nil {
			continue
		}
		l := fmt.Sprintf("<%s>;rt=%q", rt.CoAPPath.String(), rt.Name)
		if cf, ok := contentFormat(rt.ContentType); ok {
			l += fmt.Sprintf(";ct=%d", cf)
		}
		if !rt.Reply {
			l += ";obs"
		}
		links = append(links, l)
	}
	return links
}
