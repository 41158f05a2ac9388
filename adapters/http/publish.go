package httpadapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// Request headers that carry MQTT 5 properties (SPEC §4), as written in
// messages, and their canonical forms for allocation-free map lookups.
const (
	headerUserProperty = "MQTT-User-Property"
	headerExpiry       = "MQTT-Message-Expiry"
	canonUserProperty  = "Mqtt-User-Property"
	canonExpiry        = "Mqtt-Message-Expiry"
)

// maxExpiry is the largest MQTT 5 message expiry interval, in seconds.
const maxExpiry = math.MaxUint32

// publishDefaults are what a route publishes with unless the request says
// otherwise. The generic routes use {qos 1, retain by method}; mapping
// routes fill them from their rule.
type publishDefaults struct {
	route       string // metrics label
	qos         byte
	retain      bool
	contentType string // used when the request has no Content-Type
	// fixed makes qos and retain fixed by the route: the qos and retain
	// query parameters are then refused.
	fixed bool
	// clear publishes an empty retained message whatever the body
	// (DELETE).
	clear bool
	// transform converts the body before it is published (mapping.Transform
	// names); a body that does not convert is a 400 and nothing is sent.
	transform string
	// request makes the publish a request: the first reply becomes the
	// response (mapping routes with reply:).
	request *requestSpec
}

func (s *Server) topicPost(w http.ResponseWriter, r *http.Request) {
	s.topicPublish(w, r, publishDefaults{route: routeTopics, qos: 1})
}

func (s *Server) topicPut(w http.ResponseWriter, r *http.Request) {
	s.topicPublish(w, r, publishDefaults{route: routeTopics, qos: 1, retain: true})
}

func (s *Server) topicDelete(w http.ResponseWriter, r *http.Request) {
	s.topicPublish(w, r, publishDefaults{route: routeTopics, qos: 1, retain: true, clear: true})
}

func (s *Server) topicPublish(w http.ResponseWriter, r *http.Request, d publishDefaults) {
	topic, err := topicFromPath(r, "/topics/")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.publish(w, r, topic, d)
}

// bufPool holds request body buffers; bridge.Publish copies the payload, so
// a buffer is reused as soon as Publish returns.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuf is the largest buffer returned to bufPool.
const maxPooledBuf = 64 << 10

// publish is the one publish path of the adapter: it reads the request body
// as the payload and publishes it to topic. Success is 204 once the broker
// has taken the message (for QoS ≥ 1 with storage on: on disk).
func (s *Server) publish(w http.ResponseWriter, r *http.Request, topic string, d publishDefaults) {
	if err := bridge.ValidateTopic(topic); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.b.Running() {
		s.writeError(w, r, bridge.ErrClosed)
		return
	}
	m := bridge.Message{Topic: topic, QoS: d.qos, Retain: d.retain}
	if err := s.publishParams(r, &m, d); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := publishHeaders(r.Header, &m); err != nil {
		s.writeError(w, r, err)
		return
	}
	if m.ContentType == "" {
		m.ContentType = d.contentType
	}

	var buf *bytes.Buffer
	if !d.clear {
		// 413 before reading anything when the length is declared; a
		// chunked body is cut off by MaxBytesReader at the limit.
		if r.ContentLength > s.cfg.MaxPayload {
			s.writeError(w, r, &tooLarge{limit: s.cfg.MaxPayload})
			return
		}
		buf = bufPool.Get().(*bytes.Buffer)
		defer func() {
			if buf.Cap() <= maxPooledBuf {
				buf.Reset()
				bufPool.Put(buf)
			}
		}()
		if r.ContentLength > 0 {
			buf.Grow(int(r.ContentLength))
		}
		// With a declared length (checked above) net/http already stops
		// the body there; only a chunked body needs MaxBytesReader.
		body := r.Body
		if r.ContentLength < 0 {
			body = http.MaxBytesReader(w, r.Body, s.cfg.MaxPayload)
		}
		if _, err := buf.ReadFrom(body); err != nil {
			var mbe *http.MaxBytesError
			if !errors.As(err, &mbe) {
				err = badRequest("could not read the request body: " + err.Error())
			}
			s.writeError(w, r, err)
			return
		}
		m.Payload = buf.Bytes()
	} else {
		m.ContentType = ""
	}

	if d.transform != "" && !d.clear {
		out, ct, err := mapping.Transform(d.transform, m.Payload)
		if err != nil {
			s.writeError(w, r, badRequest(err.Error()))
			return
		}
		m.Payload, m.ContentType = out, ct
	}
	if d.request != nil {
		s.answerRequest(w, r, m, d)
		return
	}

	start := time.Now()
	err := s.b.Publish(r.Context(), m)
	s.metrics.publishQoS[m.QoS].Observe(time.Since(start).Seconds())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.metrics.messagesIn(d.route)
	w.WriteHeader(http.StatusNoContent)
}

// publishParams applies the qos and retain query parameters. It scans
// RawQuery itself: url.Values would allocate a map on every publish.
// Unknown parameters are ignored; the first qos or retain wins.
func (s *Server) publishParams(r *http.Request, m *bridge.Message, d publishDefaults) error {
	var qos, retain string
	var hasQoS, hasRetain bool
	for rest := r.URL.RawQuery; rest != ""; {
		var kv string
		kv, rest, _ = strings.Cut(rest, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			if uk, err := url.QueryUnescape(k); err == nil {
				k = uk
			}
		}
		switch {
		case k == "qos" && !hasQoS:
			qos, hasQoS = v, true
		case k == "retain" && !hasRetain:
			retain, hasRetain = v, true
		default:
			continue
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				return badRequest("query parameter " + k + " is not valid percent-encoding")
			}
			if k == "qos" {
				qos = uv
			} else {
				retain = uv
			}
		}
	}
	if hasQoS {
		if d.fixed {
			return badRequest("this route publishes at a fixed qos; remove the qos parameter")
		}
		switch qos {
		case "0", "1", "2":
			m.QoS = qos[0] - '0'
		default:
			return badRequest("qos must be 0, 1 or 2, not " + strconv.Quote(qos))
		}
	}
	if hasRetain {
		if d.fixed || d.clear {
			return badRequest("retain is fixed on this route; remove the retain parameter")
		}
		b, err := strconv.ParseBool(retain)
		if err != nil {
			return badRequest("retain must be true or false, not " + strconv.Quote(retain))
		}
		m.Retain = b
	}
	return nil
}

// publishHeaders applies Content-Type, MQTT-User-Property and
// MQTT-Message-Expiry. Each MQTT-User-Property header line is one property
// "name=value" (split at the first '='; the value may contain '=' and ',').
func publishHeaders(h http.Header, m *bridge.Message) error {
	if ct := headerValue(h, "Content-Type"); ct != "" {
		if !utf8.ValidString(ct) {
			return badRequest("Content-Type must be valid UTF-8")
		}
		m.ContentType = ct
	}
	if ups := h[canonUserProperty]; len(ups) > 0 {
		m.UserProperties = make(map[string]string, len(ups))
		for _, up := range ups {
			k, v, ok := strings.Cut(up, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return badRequest(headerUserProperty + " must be name=value, not " + strconv.Quote(up))
			}
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return badRequest(headerUserProperty + " must be valid UTF-8")
			}
			m.UserProperties[k] = strings.TrimSpace(v)
		}
	}
	if e := headerValue(h, canonExpiry); e != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(e), 10, 64)
		if err != nil || n < 1 || n > maxExpiry {
			return badRequest(headerExpiry + " must be a number of seconds between 1 and 4294967295, not " + strconv.Quote(e))
		}
		m.Expiry = time.Duration(n) * time.Second
	}
	return nil
}

// headerValue is h.Get for a key already in canonical form.
func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// batchResult is the outcome of one envelope of POST /publish: status 204
// on success, else the problem's status and title.
type batchResult struct {
	Index  int    `json:"index"`
	Topic  string `json:"topic,omitempty"`
	Status int    `json:"status"`
	Type   string `json:"type,omitempty"`
	Title  string `json:"title,omitempty"`
}

// publishBatch serves POST /publish: a JSON array of envelopes, published in
// order, one result per item. A bad item does not stop the others; the
// answer is 200 with every result (check each status), or a problem when the
// request as a whole is wrong.
func (s *Server) publishBatch(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		s.writeProblem(w, r, problem{Type: typeMediaType, Status: http.StatusUnsupportedMediaType,
			Title: "POST /publish takes Content-Type application/json (a JSON array of envelopes), not " + strconv.Quote(ct)})
		return
	}
	if !s.b.Running() {
		s.writeError(w, r, bridge.ErrClosed)
		return
	}
	limit := max(4*s.cfg.MaxPayload, 1<<20)
	if r.ContentLength > limit {
		s.writeError(w, r, &tooLarge{limit: limit})
		return
	}
	var raws []json.RawMessage
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = badRequest("could not read the request body: " + err.Error())
		}
		s.writeError(w, r, err)
		return
	}
	if err := json.Unmarshal(body, &raws); err != nil {
		s.writeError(w, r, badRequest("body must be a JSON array of envelopes: "+err.Error()))
		return
	}
	if len(raws) > maxBatchItems {
		s.writeError(w, r, badRequest("a batch may hold at most "+strconv.Itoa(maxBatchItems)+" envelopes, not "+strconv.Itoa(len(raws))))
		return
	}
	results := make([]batchResult, len(raws))
	for i, raw := range raws {
		res := &results[i]
		res.Index = i
		err := func() error {
			e, err := decodeEnvelope(raw)
			res.Topic = e.Topic
			if err != nil {
				return err
			}
			m, err := e.toMessage(s.cfg.MaxPayload)
			if err != nil {
				return err
			}
			start := time.Now()
			err = s.b.Publish(r.Context(), m)
			s.metrics.publishQoS[m.QoS].Observe(time.Since(start).Seconds())
			return err
		}()
		if err != nil {
			p := problemFor(err)
			res.Status, res.Type, res.Title = p.Status, p.Type, p.Title
			continue
		}
		res.Status = http.StatusNoContent
		s.metrics.messagesIn(routePublish)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(results)
}
