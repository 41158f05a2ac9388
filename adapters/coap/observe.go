package coapadapter

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"

	"github.com/edgebridge/gateway/bridge"
)

// observers is the registry of RFC 7641 observations. Observers of the same
// filter share one bridge subscription (queue 0: its handler runs on the
// publisher's goroutine and only appends to bounded per-observer queues), so
// a message reaches 10,000 observers with one broker delivery.
type observers struct {
	s      *Server
	mu     sync.Mutex
	groups map[string]*group
	count  int
}

// group is the observers of one filter and their shared subscription.
type group struct {
	filter  string
	sub     *bridge.Subscription
	members map[*observer]struct{} // guarded by observers.mu
	list    atomic.Pointer[[]*observer]
}

// observer is one observation: a (peer, token) pair and its filter.
type observer struct {
	s        *Server
	g        *group
	p        *peer
	token    []byte
	filter   string
	wildcard bool
	route    string // fingerprint of the mapping route it came through ("" for /ps)

	mu       sync.Mutex
	queue    []bridge.Message
	active   bool // the registration response has been written
	sending  bool // a sender runs or is scheduled
	ended    bool
	seq      uint32          // last Observe value sent (24 bits)
	lastBig  *bridge.Message // last notification larger than one block
	lastCON  time.Time       // registration or last CON notification
	inflight *pendingCON     // UDP fast path: the CON awaiting its ACK
	mids     [2]int32        // message IDs of the last notifications (RST matching)
	nmids    int
	// primed holds what registration sent (first response and retained
	// notifications) by topic, until primedUntil: the broker acknowledges a
	// publish before it fans it out, so a publish that raced with the
	// registration can arrive live after it; its first identical copy is
	// dropped.
	primed      map[string][]byte
	primedUntil time.Time
}

func newObservers(s *Server) *observers {
	return &observers{s: s, groups: make(map[string]*group)}
}

// primeWindow is how long after a registration a live copy of what it
// sent is taken for the same publish (see observer.primed).
const primeWindow = time.Second

// limitError is returned by register above Config.MaxObservers.
type limitError struct{ limit int }

func (e limitError) Error() string { return "too many observers" }

// register adds an observation of filter for (p, token), replacing one with
// the same token (RFC 7641 §4.1: a re-registration). It is not delivered to
// until activate.
func (os *observers) register(p *peer, token []byte, filter string) (*observer, error) {
	o := &observer{s: os.s, p: p, token: bytes.Clone(token), filter: filter,
		wildcard: strings.ContainsAny(filter, "+#"), seq: os.s.cfg.initialSeq, lastCON: time.Now()}
	key := string(o.token)
	p.mu.Lock()
	old := p.observers[key]
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, bridge.ErrClosed
	}
	if old != nil {
		old.end("re-registered")
	}

	os.mu.Lock()
	if os.count >= os.s.cfg.MaxObservers {
		os.mu.Unlock()
		return nil, limitError{os.s.cfg.MaxObservers}
	}
	g := os.groups[filter]
	if g == nil {
		g = &group{filter: filter, members: make(map[*observer]struct{})}
		sub, err := os.s.broker.Subscribe(filter, bridge.SubOptions{QoS: 2, NoRetained: true}, g.deliver)
		if err != nil {
			os.mu.Unlock()
			return nil, err
		}
		g.sub = sub
		os.groups[filter] = g
	}
	o.g = g
	g.members[o] = struct{}{}
	g.publish()
	os.count++
	os.mu.Unlock()

	p.mu.Lock()
	if p.observers == nil {
		p.observers = make(map[string]*observer)
	}
	p.observers[key] = o
	p.mu.Unlock()
	os.s.metrics.observers.Inc()
	return o, nil
}

// remove takes o out of its group, closing the group's subscription when it
// was the last.
func (os *observers) remove(o *observer) {
	os.mu.Lock()
	g := o.g
	if _, ok := g.members[o]; !ok {
		os.mu.Unlock()
		return
	}
	delete(g.members, o)
	os.count--
	var sub *bridge.Subscription
	if len(g.members) == 0 {
		delete(os.groups, g.filter)
		sub = g.sub
	}
	g.publish()
	os.mu.Unlock()
	os.s.metrics.observers.Dec()
	if sub != nil {
		sub.Close()
	}
}

// closeAll ends every observation (Shutdown).
func (os *observers) closeAll() {
	os.mu.Lock()
	var all []*observer
	for _, g := range os.groups {
		for o := range g.members {
			all = append(all, o)
		}
	}
	os.mu.Unlock()
	for _, o := range all {
		o.end("shutdown")
	}
}

// publish refreshes the copy-on-write member list read by deliver;
// observers.mu is held.
func (g *group) publish() {
	l := make([]*observer, 0, len(g.members))
	for o := range g.members {
		l = append(l, o)
	}
	g.list.Store(&l)
}

// deliver is the shared subscription's handler. It runs on the publisher's
// goroutine: it never blocks, only queues.
func (g *group) deliver(m bridge.Message) {
	l := g.list.Load()
	if l == nil {
		return
	}
	for _, o := range *l {
		o.enqueue(m)
	}
}

// enqueue adds m to o's bounded queue, dropping the oldest when full (an
// observer wants the freshest state; RFC 7641 §4.5.2 lets a server skip
// intermediate states), and starts the sender if needed.
func (o *observer) enqueue(m bridge.Message) {
	if len(m.Payload) > o.s.cfg.MaxPayload {
		o.s.metrics.dropped.Inc()
		return
	}
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	if o.primed != nil {
		if time.Now().After(o.primedUntil) {
			o.primed = nil
		} else if p, ok := o.primed[m.Topic]; ok && bytes.Equal(p, m.Payload) {
			delete(o.primed, m.Topic)
			o.mu.Unlock()
			return
		}
	}
	if len(o.queue) >= o.s.cfg.ObserverQueue {
		o.queue[0] = bridge.Message{}
		o.queue = o.queue[1:]
		o.s.metrics.dropped.Inc()
	}
	o.queue = append(o.queue, m)
	start := o.active && !o.sending
	if start {
		o.sending = true
	}
	o.mu.Unlock()
	if start {
		o.startSending()
	}
}

// prime puts retained messages ahead of anything queued meanwhile; first is
// what the registration response carried.
func (o *observer) prime(retained, first []bridge.Message) {
	if len(retained) == 0 && len(first) == 0 {
		return
	}
	known := append(slices.Clip(retained), first...)
	o.mu.Lock()
	o.primed = make(map[string][]byte, len(known))
	for _, m := range known {
		o.primed[m.Topic] = m.Payload
	}
	o.primedUntil = time.Now().Add(primeWindow)
	// A publish racing with the registration can be both retained and
	// delivered live (the broker acknowledges before it fans out): keep
	// one copy.
	live := o.queue[:0:0]
	for _, m := range o.queue {
		if !slices.ContainsFunc(known, func(r bridge.Message) bool {
			return r.Topic == m.Topic && bytes.Equal(r.Payload, m.Payload)
		}) {
			live = append(live, m)
		}
	}
	o.queue = append(retained, live...)
	if n := len(o.queue) - o.s.cfg.ObserverQueue; n > 0 {
		o.queue = o.queue[n:]
		o.s.metrics.dropped.Add(float64(n))
	}
	o.mu.Unlock()
}

// startSending hands the queue to a sender: the UDP fast path, or a
// goroutine of its own. The caller has set o.sending.
func (o *observer) startSending() {
	if o.fast() {
		o.s.notify.schedule(o)
		return
	}
	if !o.s.goSender(o.run) {
		o.mu.Lock()
		o.sending = false
		o.mu.Unlock()
	}
}

// activate starts delivery once the registration response is on the wire,
// so no notification overtakes it.
func (o *observer) activate() {
	o.mu.Lock()
	if o.ended || o.active {
		o.mu.Unlock()
		return
	}
	o.active = true
	start := len(o.queue) > 0 && !o.sending
	if start {
		o.sending = true
	}
	o.mu.Unlock()
	if start {
		o.startSending()
	}
}

// nextSeq returns the next Observe value. Values are 24 bits and wrap
// around; RFC 7641 §3.4 orders them modulo 2^24, so a client sees
// 0xFFFFFF → 0 → 1 as fresh.
func (o *observer) nextSeq() uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nextSeqLocked()
}

func (o *observer) nextSeqLocked() uint32 {
	o.seq = (o.seq + 1) & 0xFFFFFF
	return o.seq
}

// run sends queued notifications one at a time until the queue is empty.
// One confirmable notification is in flight per observer (RFC 7641
// §4.5.1); one never acknowledged ends the observation (§4.5).
func (o *observer) run() {
	for {
		o.mu.Lock()
		if o.ended || len(o.queue) == 0 {
			o.sending = false
			o.mu.Unlock()
			return
		}
		m := o.queue[0]
		o.queue[0] = bridge.Message{}
		o.queue = o.queue[1:]
		if len(o.queue) == 0 {
			o.queue = nil // release the backing array between bursts
		}
		seq := o.nextSeqLocked()
		o.mu.Unlock()
		if reason := o.send(m, seq); reason != "" {
			o.end(reason)
			o.mu.Lock()
			o.sending = false
			o.mu.Unlock()
			return
		}
	}
}

// send writes one notification; it returns why the observation must end,
// or "".
func (o *observer) send(m bridge.Message, seq uint32) string {
	p := o.p
	conn := p.conn
	ctx, cancel := context.WithTimeout(conn.Context(), o.s.cfg.maxTransmitWait())
	defer cancel()
	msg := conn.AcquireMessage(ctx)
	defer conn.ReleaseMessage(msg)
	msg.SetCode(codes.Content)
	msg.SetToken(o.token)
	msg.SetObserve(seq)
	if cf, ok := contentFormat(m.ContentType); ok {
		msg.SetContentFormat(cf)
	}
	if o.wildcard {
		// Which topic matched the filter: Location-Path options
		// ("ps", then one per level), elective, so clients may ignore it.
		msg.AddOptionString(message.LocationPath, psPrefix)
		for _, l := range strings.Split(m.Topic, "/") {
			msg.AddOptionString(message.LocationPath, l)
		}
	}
	if m.Expiry > 0 {
		msg.SetOptionUint32(message.MaxAge, uint32(min(m.Expiry/time.Second, 1<<32-1)))
	}
	msg.SetBody(bytes.NewReader(m.Payload))
	if len(m.Payload) > notifyBlockSize {
		o.mu.Lock()
		o.lastBig = &m
		o.mu.Unlock()
	}
	kind := "tcp"
	if !p.reliable {
		typ := message.NonConfirmable
		kind = "non"
		o.mu.Lock()
		if m.QoS > 0 || time.Since(o.lastCON) > o.s.cfg.conKeepalive {
			// RFC 7641 §4.5: a CON at least every 24 hours tells us
			// whether a NON-only observer is still there.
			typ, kind = message.Confirmable, "con"
			o.lastCON = time.Now()
		}
		o.mu.Unlock()
		msg.SetType(typ) // the session records the message ID (peer.sent)
	}
	err := conn.WriteMessage(msg)
	o.mu.Lock()
	ended := o.ended
	o.mu.Unlock()
	switch {
	case ended:
		return "" // ended meanwhile (RST, deregistration): already counted
	case err != nil && conn.Context().Err() != nil:
		return "connection closed"
	case err != nil && kind == "con":
		return "not acknowledged"
	case err != nil:
		return "send failed"
	}
	o.s.metrics.notifications.WithLabelValues(kind).Inc()
	return ""
}

// rememberMID records mid so that an RST for it ends o; it keeps the last
// two per observer.
func (o *observer) rememberMID(mid int32) {
	p := o.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mids == nil {
		p.mids = make(map[int32]*observer)
	}
	slot := o.nmids % len(o.mids)
	if o.nmids >= len(o.mids) {
		if old := o.mids[slot]; p.mids[old] == o {
			delete(p.mids, old)
		}
	}
	o.mids[slot] = mid
	o.nmids++
	p.mids[mid] = o
}

// end ends the observation once, for reason.
func (o *observer) end(reason string) {
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	o.ended = true
	o.queue = nil
	budgeted := o.inflight != nil && o.inflight.budgeted
	o.inflight = nil
	n := min(o.nmids, len(o.mids))
	mids := o.mids
	o.mu.Unlock()
	if budgeted {
		o.s.notify.release()
	}

	p := o.p
	p.mu.Lock()
	if p.observers[string(o.token)] == o {
		delete(p.observers, string(o.token))
	}
	for _, mid := range mids[:n] {
		if p.mids[mid] == o {
			delete(p.mids, mid)
		}
	}
	p.mu.Unlock()
	o.s.obs.remove(o)
	o.s.metrics.ended.WithLabelValues(reason).Inc()
	o.s.log.Debug("coap observation ended", "filter", o.filter, "peer", p.conn.RemoteAddr(), "reason", reason)
}

// observe registers an observation of filter (GET with Observe: 0). The
// first response carries the retained message of a plain topic, or is empty
// for a wildcard filter or a topic without one; retained messages of a
// wildcard filter follow as notifications.
func (s *Server) observe(req *request, filter string) {
	if len(req.query) > 0 {
		s.fail(req, codes.BadRequest, "GET takes no query options")
		return
	}
	if !s.authorized(req, "subscribe", filter) || !s.checkFilter(req, filter) {
		return
	}
	o, err := s.obs.register(req.p, req.r.Token(), filter)
	if err == nil && req.route != "" {
		s.obs.mu.Lock() // endRoutes reads it under this lock
		o.route = req.route
		s.obs.mu.Unlock()
	}
	if err != nil {
		if le, ok := err.(limitError); ok {
			s.fail(req, codes.ServiceUnavailable, "too many observers (limit %d)", le.limit).maxAge(retryAfter)
			return
		}
		s.failErr(req, err)
		return
	}
	retained, err := s.broker.Retained(filter)
	if err != nil {
		o.end("broker error")
		s.failErr(req, err)
		return
	}
	seq := int64(o.nextSeq())
	var first []bridge.Message
	if !o.wildcard && len(retained) > 0 {
		s.replyMessage(req, retained[0], seq)
		first, retained = retained[:1], nil
	} else {
		s.reply(req, codes.Content, nil, -1)
		req.w.Message().SetObserve(uint32(seq))
	}
	o.prime(retained, first)
	if req.p.reliable {
		// go-coap's TCP connection has no post-write callbacks (and
		// ignores Config.ProcessReceivedMessage): write the first
		// response ourselves so no notification can overtake it.
		s.writeNow(req)
		o.activate()
		return
	}
	if !responsewriter.AfterWrite(req.r.Context(), o.activate) {
		o.activate()
	}
}

// deregister ends the observation of the request's token (Observe: 1).
func (s *Server) deregister(req *request) {
	p := req.p
	p.mu.Lock()
	o := p.observers[string(req.r.Token())]
	p.mu.Unlock()
	if o != nil {
		o.end("deregistered")
	}
}

// writeNow sends the response prepared in req.w at once and leaves the
// writer unmodified, so go-coap sends nothing more.
func (s *Server) writeNow(req *request) {
	conn := req.w.Conn()
	msg := conn.AcquireMessage(req.r.Context())
	defer conn.ReleaseMessage(msg)
	if err := req.w.Message().Clone(msg); err != nil {
		s.coapErrors(err)
		return
	}
	msg.SetToken(req.r.Token())
	if err := conn.WriteMessage(msg); err != nil {
		s.coapErrors(err)
	}
	req.w.Message().SetModified(false)
}

// notifyBlockSize is the block size of notifications (SZX 1024).
const notifyBlockSize = 1024

// continueNotification serves a GET with Block2 that fetches the rest of a
// block-wise notification (RFC 7959 §3.4): the client asks the observed
// path (topic or filter) for the current representation, which for a
// publish/subscribe topic is the message just notified, retained or not.
func (s *Server) continueNotification(req *request, path string) bool {
	if !req.r.HasOption(message.Block2) {
		return false
	}
	p := req.p
	p.mu.Lock()
	var m *bridge.Message
	for _, o := range p.observers {
		if o.filter != path {
			continue
		}
		o.mu.Lock()
		m = o.lastBig
		o.mu.Unlock()
		if m != nil {
			break
		}
	}
	p.mu.Unlock()
	if m == nil {
		return false
	}
	s.replyMessage(req, *m, -1)
	return true
}
