// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]packets.Packet // internal contains the inflight packets
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota

	// gateway patch: outbound flow control [MQTT-4.9]. Packet ids of
	// in-flight PUBLISHes waiting for send quota, oldest first; parkedSeq
	// holds the id's current entry so an entry left behind by a Delete
	// (acknowledged, expired, cleared) is skipped even if the id is reused.
	// The packets themselves stay in internal until acknowledged. Guarded
	// by the write lock; parkedLen mirrors len(parked) for lock-free checks.
	parked    []parkedID
	parkedSeq map[uint16]uint64
	seq       uint64
	parkedLen int32
}

// parkedID is an entry of Inflight.parked (gateway patch).
type parkedID struct {
	id  uint16
	seq uint64
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]packets.Packet{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	return !ok
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || (immediate && v.Expiry < 0) {
			m = append(m, v)
		}
	}

	// gateway patch: oldest first by Created, ties by packet id, as in
	// NextImmediate; upstream compared uint16(Created), i.e. seconds modulo
	// 65536, and left the packets of one second in map order, so sessions
	// were resumed out of order [MQTT-4.6.0-1].
	sort.Slice(m, func(i, j int) bool {
		if m[i].Created != m[j].Created {
			return m[i].Created < m[j].Created
		}
		return m[i].PacketID < m[j].PacketID
	})

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	// gateway patch: one pass under one read lock, oldest first. Upstream
	// took the read lock and then called GetAll, which takes it again:
	// when a publisher's Set (write lock) queued in between, both waited
	// forever (sync.RWMutex blocks new readers once a writer waits). GetAll
	// also copied and sorted every in-flight message on each call, which
	// capped a flow-controlled QoS 1 subscriber at a few thousand
	// messages/s, and sorted by uint16(Created) seconds, so messages of the
	// same second left in random order. Ties are broken by packet id.
	i.RLock()
	defer i.RUnlock()
	var best packets.Packet
	found := false
	for _, v := range i.internal {
		if v.Expiry >= 0 {
			continue
		}
		if !found || v.Created < best.Created || (v.Created == best.Created && v.PacketID < best.PacketID) {
			best, found = v, true
		}
	}
	return best, found
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[id]
	delete(i.internal, id)
	delete(i.parkedSeq, id) // gateway patch: no longer waiting to be sent

	return ok
}

// Park queues the in-flight packet id to be sent, after every packet parked
// before it, once send quota is available; see SendParked. gateway patch:
// replaces upstream's marking of packets with Expiry -1, which lost the
// message expiry and needed a scan of all in-flight packets to find them.
func (i *Inflight) Park(id uint16) {
	i.Lock()
	defer i.Unlock()
	if _, ok := i.internal[id]; !ok {
		return
	}
	if i.parkedSeq == nil {
		i.parkedSeq = map[uint16]uint64{}
	}
	i.seq++
	i.parkedSeq[id] = i.seq
	i.parked = append(i.parked, parkedID{id, i.seq})
	atomic.StoreInt32(&i.parkedLen, int32(len(i.parked)))
}

// SendParked hands parked packets, oldest first, to send while send quota is
// left, taking one quota for each; it stops when send returns false (the
// packet stays parked). The packets stay in flight until acknowledged.
// send must not block or take the Inflight lock: it runs under the write
// lock, which keeps the packets handed over in parking order however many
// goroutines call SendParked. gateway patch.
func (i *Inflight) SendParked(send func(pk packets.Packet) bool) {
	if atomic.LoadInt32(&i.parkedLen) == 0 || atomic.LoadInt32(&i.sendQuota) <= 0 {
		return
	}
	i.Lock()
	defer i.Unlock()
	for len(i.parked) > 0 && atomic.LoadInt32(&i.sendQuota) > 0 {
		p := i.parked[0]
		pk, ok := i.internal[p.id]
		if ok && i.parkedSeq[p.id] == p.seq && pk.FixedHeader.Type == packets.Publish {
			if !send(pk) {
				break
			}
			delete(i.parkedSeq, p.id)
			atomic.AddInt32(&i.sendQuota, -1) // > 0 still: other goroutines decrease it only under the lock
		}
		i.parked = i.parked[1:]
	}
	if len(i.parked) == 0 {
		i.parked = nil // let append start afresh instead of creeping along the array
	}
	atomic.StoreInt32(&i.parkedLen, int32(len(i.parked)))
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
