package httpadapter

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// requestSpec is a mapping route's request/response settings, resolved for
// one request.
type requestSpec struct {
	replyTopic string // "" for a per-request reply topic
	timeout    time.Duration
}

// routeLife ends the SSE streams of a mapping route when a reload removes
// or changes that route; streams of routes that stay keep running.
type routeLife struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// mappedRoutes remembers, per route definition, the context its streams
// run under, across reloads.
type mappedRoutes struct {
	mu    sync.Mutex
	lives map[string]routeLife // key: route fingerprint
}

// MountTable serves the HTTP routes of table in place of the ones mounted
// before, atomically: requests in flight finish on the old routes, SSE
// streams of routes that table keeps go on, and streams of routes it drops
// or changes end. On error (a pattern chi refuses) nothing changes.
func (s *Server) MountTable(table *mapping.Table) error {
	s.mapped.mu.Lock()
	defer s.mapped.mu.Unlock()
	if s.mapped.lives == nil {
		s.mapped.lives = map[string]routeLife{}
	}
	next := map[string]routeLife{}
	var routes []*mapping.Route
	if table != nil {
		for _, rt := range table.Routes() {
			if rt.HTTPPath == nil {
				continue
			}
			fp := rt.Fingerprint()
			life, ok := s.mapped.lives[fp]
			if !ok {
				ctx, cancel := context.WithCancel(context.Background())
				life = routeLife{ctx, cancel}
			}
			next[fp] = life
			routes = append(routes, rt)
		}
	}
	err := s.Remount(func(r chi.Router) {
		for _, rt := range routes {
			h := s.mappedHandler(rt, next[rt.Fingerprint()].ctx)
			pattern := chiPattern(rt.HTTPPath)
			for _, m := range rt.HTTPMethods {
				r.Method(m, pattern, h)
				if m == http.MethodGet {
					r.Method(http.MethodHead, pattern, h)
				}
			}
		}
	})
	if err != nil {
		for fp, life := range next {
			if _, old := s.mapped.lives[fp]; !old {
				life.cancel()
			}
		}
		return err
	}
	for fp, life := range s.mapped.lives {
		if _, kept := next[fp]; !kept {
			life.cancel()
		}
	}
	s.mapped.lives = next
	return nil
}

// endMappedStreams ends every mapping-route stream (Shutdown).
func (s *Server) endMappedStreams() {
	s.mapped.mu.Lock()
	defer s.mapped.mu.Unlock()
	for _, life := range s.mapped.lives {
		life.cancel()
	}
}

// chiPattern turns a path template into a chi pattern: {x} stays, {x...}
// becomes the catch-all. chi's patterns are looser (a catch-all matches
// nothing too), so the handler matches the template again.
func chiPattern(t *mapping.Template) string {
	var b strings.Builder
	for _, seg := range t.Segments() {
		b.WriteByte('/')
		switch {
		case seg.Rest:
			b.WriteByte('*')
		case seg.Var != "":
			b.WriteString("{" + seg.Var + "}")
		default:
			b.WriteString(seg.Literal)
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// mappedHandler serves one mapping route: POST/PUT publish to the route's
// topic (or, for reply routes, make a request and answer its reply), GET
// reads the retained message or streams the topic, DELETE clears it.
func (s *Server) mappedHandler(rt *mapping.Route, life context.Context) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var vars mapping.Vars
		if !rt.HTTPPath.Match(r.URL.Path, &vars) {
			s.writeProblem(w, r, problem{Type: typeNotFound, Status: http.StatusNotFound,
				Title: "no route for " + r.URL.EscapedPath() + "; see /routes"})
			return
		}
		topic, err := rt.TopicFor(vars)
		if err != nil {
			s.writeError(w, r, badRequest(fmt.Sprintf("route %q: %v", rt.Name, err)))
			return
		}
		d := publishDefaults{route: rt.Name, qos: rt.QoS, retain: rt.Retain, contentType: rt.ContentType,
			fixed: true, transform: rt.Transform}
		if rt.Reply {
			spec := &requestSpec{timeout: rt.ReplyTimeout}
			if rt.ReplyTopic != nil {
				if spec.replyTopic, err = rt.ReplyTopicFor(vars); err != nil {
					s.writeError(w, r, badRequest(fmt.Sprintf("route %q: reply topic: %v", rt.Name, err)))
					return
				}
			}
			d.request, d.retain = spec, false
			s.publish(w, r, topic, d)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			if r.Method == http.MethodGet && wantsEventStream(r) {
				ctx, cancel := context.WithCancel(r.Context())
				defer cancel()
				stop := context.AfterFunc(life, cancel)
				defer stop()
				s.stream(w, r.WithContext(ctx), topic, rt.Name)
				return
			}
			s.readRetained(w, r, topic, rt.Name)
		case http.MethodDelete:
			d.retain, d.clear = true, true
			s.publish(w, r, topic, d)
		default:
			s.publish(w, r, topic, d)
		}
	}
}

// answerRequest publishes m as a request and answers the first reply: 200
// (or the reply's user property "status" when it is an HTTP status) with
// the reply's payload and content type; 504 when no reply comes in time.
func (s *Server) answerRequest(w http.ResponseWriter, r *http.Request, m bridge.Message, d publishDefaults) {
	ctx, cancel := context.WithTimeout(r.Context(), d.request.timeout)
	defer cancel()
	start := time.Now()
	reply, err := s.b.Request(ctx, m, d.request.replyTopic)
	s.metrics.publishQoS[m.QoS].Observe(time.Since(start).Seconds())
	if err != nil {
		if r.Context().Err() == nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: no reply to %s within %v", bridge.ErrNoReply, m.Topic, d.request.timeout)
		}
		s.writeError(w, r, err)
		return
	}
	s.metrics.messagesIn(d.route)
	s.metrics.messagesOut(d.route, 1)
	h := w.Header()
	ct := reply.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	status := http.StatusOK
	for k, v := range reply.UserProperties {
		if k == "status" {
			if n, err := strconv.Atoi(v); err == nil && n >= 200 && n <= 599 {
				status = n
				continue
			}
		}
		h.Add(headerUserProperty, k+"="+v)
	}
	h.Set("Content-Length", strconv.Itoa(len(reply.Payload)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(reply.Payload)
	}
}
