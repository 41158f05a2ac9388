package httpadapter

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgebridge/gateway/bridge"
)

// sseQueue is the bounded queue between the broker (which must never wait
// for an HTTP client) and one SSE stream's writer. The broker side appends
// without blocking and counts what does not fit; the writer takes everything
// queued at once. Memory grows with the backlog only, up to max messages.
type sseQueue struct {
	mu      sync.Mutex
	items   []bridge.Message
	max     int
	dropped int64
	notify  chan struct{} // capacity 1: "something happened"
}

// push is the subscription handler: it runs on the publisher's goroutine.
func (q *sseQueue) push(m bridge.Message) bool {
	q.mu.Lock()
	ok := len(q.items) < q.max
	if ok {
		q.items = append(q.items, m)
	} else {
		q.dropped++
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return ok
}

// take swaps the queued messages out (reusing spare's storage) and returns
// them with the total dropped so far.
func (q *sseQueue) take(spare []bridge.Message) ([]bridge.Message, int64) {
	clear(spare)
	q.mu.Lock()
	items := q.items
	q.items = spare[:0]
	d := q.dropped
	q.mu.Unlock()
	return items, d
}

// stream serves filter as Server-Sent Events (SPEC §4, §8):
//
//   - Each message is one event: "id: N", "data: <JSON envelope>". Retained
//     messages come first (retain true), read after subscribing so nothing
//     published meanwhile is lost (one published in that instant may come
//     twice: as retained and as live).
//   - Ids increase by one per event on a stream. With a Last-Event-ID
//     header (a number), ids continue after it, so a reconnecting
//     EventSource sees ids keep increasing; the gateway keeps no history,
//     so nothing missed while disconnected is replayed, but the retained
//     messages (the current state) are sent again. A Last-Event-ID that is
//     not a number is ignored.
//   - A comment line ": heartbeat" is written every SSEHeartbeat so idle
//     streams survive proxies, and the stream ends soon after the broker
//     stops.
//   - Overflow: each stream queues at most SSEQueue messages for its
//     client. The broker never waits: what does not fit is dropped,
//     counted (gateway_http_sse_dropped_total) and reported to the client
//     as "event: dropped" with data {"dropped": N, "total": T} (N since the
//     last such event, T on this stream), written where the gap is: after
//     the messages that were queued before it, before the next ones.
//   - A client that stops reading for sseWriteWait is disconnected.
//   - When the client goes away, the subscription is closed and the
//     request goroutine (the only one the stream uses) returns.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, filter, route string) {
	if err := bridge.ValidateFilter(filter); err != nil {
		s.writeError(w, r, err)
		return
	}
	select {
	case <-s.closing:
		s.writeError(w, r, bridge.ErrClosed)
		return
	default:
	}
	if !s.b.Running() {
		s.writeError(w, r, bridge.ErrClosed)
		return
	}
	if n := s.sseOpen.Add(1); n > int64(s.cfg.MaxSSEStreams) {
		s.sseOpen.Add(-1)
		s.writeProblem(w, r, problem{Type: typeTooManyStreams, Status: http.StatusServiceUnavailable,
			Title: "too many open event streams (limit " + strconv.Itoa(s.cfg.MaxSSEStreams) + "); retry later"})
		return
	}
	defer s.sseOpen.Add(-1)

	var id int64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			id = n
		}
	}

	q := &sseQueue{max: s.cfg.SSEQueue, notify: make(chan struct{}, 1)}
	dropMetric := s.metrics.sseDropped
	// Retained messages come back to be written first; one that is still
	// being fanned out is not queued again.
	sub, retained, err := s.b.SubscribeWithRetained(filter, bridge.SubOptions{QoS: 2}, func(m bridge.Message) {
		if !q.push(m) {
			dropMetric.Inc()
		}
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer sub.Close()

	s.metrics.sseStreams.Inc()
	defer s.metrics.sseStreams.Dec()

	rc := http.NewResponseController(w)
	// The stream outlives the server's read and write timeouts: no read
	// deadline (the body is empty), a write deadline per write instead.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	buf := make([]byte, 0, 512)
	var reported int64
	write := func() bool {
		if len(buf) == 0 {
			return true
		}
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteWait))
		_, err := w.Write(buf)
		if err == nil {
			err = rc.Flush()
		}
		// No deadline while idle: HTTP/2 resets a stream whose write
		// deadline passes even when nothing is being written.
		_ = rc.SetWriteDeadline(time.Time{})
		buf = buf[:0]
		return err == nil
	}
	appendEvent := func(m *bridge.Message) {
		id++
		buf = append(buf, "id: "...)
		buf = strconv.AppendInt(buf, id, 10)
		buf = append(buf, "\ndata: "...)
		buf = appendEnvelope(buf, m)
		buf = append(buf, "\n\n"...)
	}

	buf = append(buf, ": stream "...)
	buf = append(buf, strings.ReplaceAll(filter, "\n", " ")...)
	buf = append(buf, '\n', '\n')
	for i := range retained {
		appendEvent(&retained[i])
		if len(buf) > 32<<10 && !write() {
			return
		}
	}
	if !write() {
		return
	}
	s.metrics.messagesOut(route, len(retained))
	retained = nil

	heartbeat := time.NewTicker(s.cfg.SSEHeartbeat)
	defer heartbeat.Stop()
	var items []bridge.Message
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-heartbeat.C:
			if !s.b.Running() {
				return
			}
			buf = append(buf, ": heartbeat\n\n"...)
			if !write() {
				return
			}
		case <-q.notify:
			var dropped int64
			items, dropped = q.take(items)
			for i := range items {
				appendEvent(&items[i])
				if len(buf) > 32<<10 && !write() {
					return
				}
			}
			if dropped > reported {
				// The gap is after the messages that were queued.
				buf = append(buf, "event: dropped\ndata: {\"dropped\":"...)
				buf = strconv.AppendInt(buf, dropped-reported, 10)
				buf = append(buf, ",\"total\":"...)
				buf = strconv.AppendInt(buf, dropped, 10)
				buf = append(buf, "}\n\n"...)
				reported = dropped
			}
			if !write() {
				return
			}
			s.metrics.messagesOut(route, len(items))
		}
	}
}
