package coapadapter

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/edgebridge/gateway/bridge"
)

// The notification fast path of plain UDP observers. go-coap writes a CON
// message synchronously (the writer waits for the ACK), so its path needs a
// goroutine per observer with a notification in flight: 10,000 runnable
// goroutines at a fan-out, competing with the read loop that must take the
// 10,000 ACKs coming back. Here a notification that fits one block is
// encoded by us and queued on the batched socket writer by a few notifier
// goroutines; the ACK or RST is matched by message ID in the peer's request
// monitor, and retransmissions (RFC 7252 §4.2: ACK_TIMEOUT × random factor,
// doubling, MAX_RETRANSMIT times) are driven by the janitor. DTLS and TCP
// observers, and notifications larger than a block, keep go-coap's path.

// pendingCON is the confirmable notification of an observer awaiting its
// ACK.
type pendingCON struct {
	mid      int32
	data     []byte
	next     time.Time     // when to retransmit or give up
	timeout  time.Duration // current timeout, doubled on each retransmission
	tries    int           // retransmissions so far
	budgeted bool          // holds one unit of the notifier's CON budget
}

// notifier runs the fast path's senders: observers with something to send
// wait in ready, each at most once.
//
// It also paces confirmable notifications: at most budget of them may await
// their first ACK at once. Every ACK of a fan-out comes back to our one
// socket at about the same time, and the kernel charges about 1 KiB of
// receive buffer per small datagram; with the Debian default of 208 KiB,
// 10,000 unpaced ACKs would mostly be dropped and their notifications
// retransmitted seconds later. The budget follows the socket's receive
// buffer. A CON that timed out once no longer counts (a dead observer must
// not hold up the others).
type notifier struct {
	s       *Server
	mu      sync.Mutex
	ready   []*observer
	wake    chan struct{}
	budget  int
	using   int         // budget units in use; guarded by mu
	waiting []*observer // have a CON to send but no budget; guarded by mu
}

func newNotifier(s *Server) *notifier {
	return &notifier{s: s, wake: make(chan struct{}, 1), budget: defaultCONBudget}
}

// defaultCONBudget is the CON budget when the socket's buffer is unknown.
const defaultCONBudget = 256

// setBudgetFor sizes the CON budget from a socket receive buffer of n bytes
// (as getsockopt reports it: twice what was set; about 1 KiB per datagram,
// half of the buffer for ACKs).
func (n *notifier) setBudgetFor(rcvbuf int) {
	if rcvbuf > 0 {
		n.budget = max(64, rcvbuf/4096)
	}
}

// takeOrWait takes one unit of the CON budget, or parks o until one is
// released. Lock order: observer.mu, then notifier.mu.
func (n *notifier) takeOrWait(o *observer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.using < n.budget {
		n.using++
		return true
	}
	n.waiting = append(n.waiting, o)
	return false
}

// release returns one unit and wakes a parked observer. It must be called
// without observer.mu held.
func (n *notifier) release() {
	n.mu.Lock()
	n.using--
	var o *observer
	if len(n.waiting) > 0 {
		o = n.waiting[0]
		n.waiting[0] = nil
		n.waiting = n.waiting[1:]
	}
	n.mu.Unlock()
	if o != nil {
		n.schedule(o)
	}
}

// schedule queues o for a notifier goroutine; o.sending is already set.
func (n *notifier) schedule(o *observer) {
	n.mu.Lock()
	n.ready = append(n.ready, o)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run is one notifier goroutine.
func (n *notifier) run() {
	var batch []*observer
	for {
		select {
		case <-n.s.ctx.Done():
			return
		case <-n.wake:
		}
		for {
			n.mu.Lock()
			batch, n.ready = n.ready, batch[:0]
			n.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if len(batch) > 1 {
				// Another notifier may help with the rest.
				select {
				case n.wake <- struct{}{}:
				default:
				}
			}
			for i, o := range batch {
				o.pump()
				batch[i] = nil
			}
		}
	}
}

// fast reports whether o's notifications take the fast path.
func (o *observer) fast() bool { return o.p.udp != nil }

// pump sends o's queued notifications until the queue is empty or a CON is
// in flight. It never waits for the network.
func (o *observer) pump() {
	for {
		o.mu.Lock()
		if o.ended || o.inflight != nil || len(o.queue) == 0 {
			o.sending = false
			o.mu.Unlock()
			return
		}
		m := o.queue[0]
		con := m.QoS > 0 || time.Since(o.lastCON) > o.s.cfg.conKeepalive
		if con && len(m.Payload) <= notifyBlockSize && !o.s.notify.takeOrWait(o) {
			o.mu.Unlock() // parked, still marked sending; release reschedules
			return
		}
		o.queue[0] = bridge.Message{}
		o.queue = o.queue[1:]
		if len(o.queue) == 0 {
			o.queue = nil
		}
		seq := o.nextSeqLocked()
		if len(m.Payload) > notifyBlockSize {
			// Block-wise: go-coap's path, on a goroutine of its own;
			// it reschedules the fast path when done.
			o.inflight = &pendingCON{mid: -1}
			o.mu.Unlock()
			if !o.s.goSender(func() { o.sendSlow(m, seq) }) {
				return
			}
			return
		}
		if con {
			o.lastCON = time.Now()
		}
		o.mu.Unlock()
		if !o.sendFast(m, seq, con) {
			return
		}
	}
}

// sendSlow sends one notification with go-coap (block-wise) and resumes the
// fast path.
func (o *observer) sendSlow(m bridge.Message, seq uint32) {
	if reason := o.send(m, seq); reason != "" {
		o.end(reason)
	}
	o.mu.Lock()
	o.inflight = nil
	resume := !o.ended && len(o.queue) > 0
	if !resume {
		o.sending = false
	}
	o.mu.Unlock()
	if resume {
		o.s.notify.schedule(o)
	}
}

// sendFast encodes and queues one notification; false if the observation
// ended. A CON holds one unit of the budget, which sendFast hands to the
// pendingCON or gives back.
func (o *observer) sendFast(m bridge.Message, seq uint32, con bool) bool {
	p := o.p
	typ, kind := message.NonConfirmable, "non"
	if con {
		typ, kind = message.Confirmable, "con"
	}
	mid := p.udp.cc.GetMessageID()
	data, err := encodeNotification(o.token, mid, typ, seq, m, o.wildcard)
	if err != nil {
		if con {
			o.s.notify.release()
		}
		o.end("encoding failed")
		return false
	}
	o.rememberMID(mid)
	if con {
		t := ackTimeout(o.s.cfg.AckTimeout)
		o.mu.Lock()
		if o.ended {
			o.mu.Unlock()
			o.s.notify.release()
			return true // nothing more to do; the budget is back
		}
		o.inflight = &pendingCON{mid: mid, data: data, timeout: t, next: time.Now().Add(t), budgeted: true}
		o.mu.Unlock()
	}
	if err := p.udp.write(data); err != nil {
		o.end("send failed")
		return false
	}
	o.s.metrics.notifications.WithLabelValues(kind).Inc()
	return true
}

// acked handles an ACK for message ID mid: the CON in flight is done and
// the next notification may go.
func (o *observer) acked(mid int32) {
	o.mu.Lock()
	if o.inflight == nil || o.inflight.mid != mid {
		o.mu.Unlock()
		return
	}
	budgeted := o.inflight.budgeted
	o.inflight = nil
	resume := !o.ended && len(o.queue) > 0 && !o.sending
	if resume {
		o.sending = true
	}
	o.mu.Unlock()
	if budgeted {
		o.s.notify.release()
	}
	if resume {
		o.s.notify.schedule(o)
	}
}

// retransmit resends the CON in flight when its timeout passed, or ends the
// observation after MaxRetransmit retransmissions (RFC 7641 §4.5).
func (o *observer) retransmit(now time.Time) {
	o.mu.Lock()
	pc := o.inflight
	if pc == nil || pc.mid < 0 || now.Before(pc.next) {
		o.mu.Unlock()
		return
	}
	if pc.tries >= o.s.cfg.MaxRetransmit {
		o.mu.Unlock()
		o.end("not acknowledged")
		return
	}
	pc.tries++
	pc.timeout *= 2
	pc.next = now.Add(pc.timeout)
	data := pc.data
	budgeted := pc.budgeted
	pc.budgeted = false
	o.mu.Unlock()
	if budgeted {
		o.s.notify.release()
	}
	_ = o.p.udp.write(data)
}

// ackTimeout is ACK_TIMEOUT times a random factor in [1, 1.5) (RFC 7252
// §4.8).
func ackTimeout(base time.Duration) time.Duration {
	return base + time.Duration(rand.Int64N(int64(base)/2+1))
}

// encUint is the minimal big-endian encoding of a uint option (RFC 7252
// §3.2).
func encUint(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	i := 0
	for i < 4 && b[i] == 0 {
		i++
	}
	return b[i:]
}

// encodeNotification builds the datagram of one notification: 2.05 with
// Observe, Content-Format, the topic as Location-Path for wildcard
// observations, Max-Age from the message expiry, and the payload.
func encodeNotification(token []byte, mid int32, typ message.Type, seq uint32, m bridge.Message, wildcard bool) ([]byte, error) {
	msg := message.Message{Token: token, Code: codes.Content, Type: typ, MessageID: mid, Payload: m.Payload}
	opts := make(message.Options, 0, 8)
	opts = opts.Add(message.Option{ID: message.Observe, Value: encUint(seq)})
	if cf, ok := contentFormat(m.ContentType); ok {
		opts = opts.Add(message.Option{ID: message.ContentFormat, Value: encUint(uint32(cf))})
	}
	if wildcard {
		opts = opts.Add(message.Option{ID: message.LocationPath, Value: []byte(psPrefix)})
		for _, l := range strings.Split(m.Topic, "/") {
			opts = opts.Add(message.Option{ID: message.LocationPath, Value: []byte(l)})
		}
	}
	if m.Expiry > 0 {
		opts = opts.Add(message.Option{ID: message.MaxAge, Value: encUint(uint32(min(m.Expiry/time.Second, 1<<32-1)))})
	}
	msg.Options = opts
	size, err := coder.DefaultCoder.Size(msg)
	if err != nil {
		return nil, err
	}
	data := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(msg, data); err != nil {
		return nil, err
	}
	return data, nil
}
