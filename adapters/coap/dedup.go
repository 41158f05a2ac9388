package coapadapter

import (
	"bytes"
	"strconv"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// dedupCache is the response cache of one UDP or DTLS peer that makes CON
// and NON retransmissions get the same answer without running the handler
// again (RFC 7252 §4.5). It implements udpClient.MessageCache.
//
// go-coap's default cache scans every entry in CheckExpirations, and its UDP
// server runs that on each datagram: O(entries) per request. Here entries are
// grouped in time buckets of lifetime/8: Store is O(1), CheckExpirations
// drops whole buckets, so each entry costs O(1) over its life. Entries live
// between lifetime and lifetime+width. A peer is capped at maxEntries; past
// it the oldest bucket goes early (a very late retransmission is then
// processed twice, which QoS 1 — at least once — allows).
type dedupCache struct {
	mu         sync.Mutex
	lifetime   time.Duration
	width      time.Duration
	maxEntries int
	entries    map[string]dedupEntry
	buckets    []dedupBucket // oldest first; the last one is current
	nextGen    uint64
}

type dedupEntry struct {
	data []byte // the marshalled response
	gen  uint64 // bucket it was stored in
}

type dedupBucket struct {
	start time.Time
	gen   uint64
	keys  []string
}

// Compile-time check that dedupCache fits go-coap's interface.
var _ udpClient.MessageCache = (*dedupCache)(nil)

func newDedupCache(lifetime time.Duration, maxEntries int) *dedupCache {
	return &dedupCache{
		lifetime:   lifetime,
		width:      lifetime / 8,
		maxEntries: maxEntries,
		entries:    make(map[string]dedupEntry),
	}
}

// Load fills msg with the cached response for key (a message ID).
func (c *dedupCache) Load(key string, msg *pool.Message) (bool, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, e.data); err != nil {
		return false, err
	}
	return true, nil
}

// Store remembers the response msg under key (a message ID); a later
// response for the same ID replaces it.
func (c *dedupCache) Store(key string, msg *pool.Message) error {
	raw, err := msg.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return err
	}
	data := bytes.Clone(raw)
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.buckets); n == 0 || now.Sub(c.buckets[n-1].start) >= c.width {
		c.nextGen++
		c.buckets = append(c.buckets, dedupBucket{start: now, gen: c.nextGen})
	}
	b := &c.buckets[len(c.buckets)-1]
	b.keys = append(b.keys, key)
	c.entries[key] = dedupEntry{data: data, gen: b.gen}
	for len(c.entries) > c.maxEntries && len(c.buckets) > 1 {
		c.dropOldest()
	}
	return nil
}

// CheckExpirations drops the buckets older than the lifetime.
func (c *dedupCache) CheckExpirations(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.buckets) > 0 && now.Sub(c.buckets[0].start) >= c.lifetime+c.width {
		c.dropOldest()
	}
}

// dropOldest removes the oldest bucket; c.mu is held.
func (c *dedupCache) dropOldest() {
	b := c.buckets[0]
	for _, k := range b.keys {
		if e, ok := c.entries[k]; ok && e.gen == b.gen {
			delete(c.entries, k)
		}
	}
	c.buckets[0] = dedupBucket{}
	c.buckets = c.buckets[1:]
	if len(c.buckets) == 0 {
		c.buckets = nil // let the backing array go
	}
}

// forgetIfReused drops the entry of message ID mid when its response carries
// a token other than token: the peer reused the message ID for a new
// request (a rebooted device, or a sender faster than 65536 messages per
// EXCHANGE_LIFETIME), which must run the handler rather than get a stale
// answer. A retransmission is byte-identical, so its token always matches.
func (c *dedupCache) forgetIfReused(mid int32, token []byte) {
	key := strconv.Itoa(int(mid))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || len(e.data) < 4 {
		return
	}
	tkl := int(e.data[0] & 0x0f)
	if tkl == 0 || len(e.data) < 4+tkl {
		return // an empty ACK carries no token: keep it
	}
	if !bytes.Equal(e.data[4:4+tkl], token) {
		delete(c.entries, key)
	}
}

// len is the number of cached responses.
func (c *dedupCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
