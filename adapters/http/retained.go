package httpadapter

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgebridge/gateway/bridge"
)

// topicGet serves GET/HEAD /topics/{topic}: a stream when the client accepts
// text/event-stream, else the retained message.
func (s *Server) topicGet(w http.ResponseWriter, r *http.Request) {
	topic, err := topicFromPath(r, "/topics/")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.Method == http.MethodGet && wantsEventStream(r) {
		s.stream(w, r, topic, routeTopics)
		return
	}
	s.readRetained(w, r, topic, routeTopics)
}

// wantsEventStream reports whether the request's Accept header asks for
// Server-Sent Events.
func wantsEventStream(r *http.Request) bool {
	for _, a := range r.Header.Values("Accept") {
		if strings.Contains(a, "text/event-stream") {
			return true
		}
	}
	return false
}

// readRetained answers the retained message of topic: the payload as
// published with its Content-Type (application/octet-stream when it had
// none), MQTT-User-Property and MQTT-Message-Expiry headers, and
// Last-Modified; with ?envelope=true the §8 JSON envelope instead. A filter
// with wildcards is only readable as envelopes (a JSON array, possibly
// empty). 404 when the topic has no retained message.
func (s *Server) readRetained(w http.ResponseWriter, r *http.Request, topic, route string) {
	if err := bridge.ValidateFilter(topic); err != nil {
		s.writeError(w, r, err)
		return
	}
	asEnvelope := false
	if v := r.URL.Query().Get("envelope"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.writeError(w, r, badRequest("envelope must be true or false, not "+strconv.Quote(v)))
			return
		}
		asEnvelope = b
	}
	wildcard := strings.ContainsAny(topic, "+#")
	if wildcard && !asEnvelope {
		s.writeError(w, r, badRequest("a filter with wildcards can only be read with ?envelope=true (a JSON array) or streamed with Accept: text/event-stream: "+topic))
		return
	}
	ms, err := s.b.Retained(topic)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if wildcard {
		buf := make([]byte, 0, 256*len(ms)+2)
		buf = append(buf, '[')
		for i := range ms {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendEnvelope(buf, &ms[i])
		}
		buf = append(buf, "]\n"...)
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(buf)))
		_, _ = w.Write(buf)
		s.metrics.messagesOut(route, len(ms))
		return
	}
	if len(ms) == 0 {
		s.writeProblem(w, r, problem{Type: typeNoRetained, Status: http.StatusNotFound,
			Title: "no retained message on topic " + topic})
		return
	}
	m := &ms[0]
	if !m.Time.IsZero() {
		h.Set("Last-Modified", m.Time.UTC().Format(http.TimeFormat))
	}
	if asEnvelope {
		buf := appendEnvelope(make([]byte, 0, 256+len(m.Payload)), m)
		buf = append(buf, '\n')
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(buf)))
		_, _ = w.Write(buf)
		s.metrics.messagesOut(route, 1)
		return
	}
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("X-Content-Type-Options", "nosniff")
	for k, v := range m.UserProperties {
		h.Add(headerUserProperty, k+"="+v)
	}
	if m.Expiry > 0 {
		h.Set(headerExpiry, strconv.FormatInt(int64(m.Expiry/time.Second), 10))
	}
	h.Set("Content-Length", strconv.Itoa(len(m.Payload)))
	_, _ = w.Write(m.Payload)
	s.metrics.messagesOut(route, 1)
}
