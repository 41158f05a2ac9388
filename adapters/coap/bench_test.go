package coapadapter

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgebridge/gateway/bridge"
)

// BenchmarkDedupCacheStore is the per-response cost of RFC 7252 §4.5
// de-duplication (go-coap's default cache scans every entry instead).
func BenchmarkDedupCacheStore(b *testing.B) {
	c := newDedupCache(udpClient.ExchangeLifetime, dedupMaxEntries)
	msg := pool.NewMessage(b.Context())
	msg.SetCode(codes.Changed)
	msg.SetToken([]byte{1, 2, 3, 4})
	msg.SetType(message.Acknowledgement)
	keys := make([]string, 65536)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		msg.SetMessageID(int32(i & 0xffff))
		if err := c.Store(keys[i&0xffff], msg); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 0 {
			c.CheckExpirations(now)
		}
	}
}

// BenchmarkCONPublish is one CON POST through the adapter into the broker
// and back to its 2.04, over loopback with a raw socket, one in flight.
func BenchmarkCONPublish(b *testing.B) {
	e := start(b, Config{})
	c := dialRaw(b, e.udp)
	req := c.request(message.Confirmable, codes.POST, "tok1", -1, "ps", "bench", "x")
	req.Payload = make([]byte, 64)
	d := encode(b, req)
	buf := make([]byte, 1500)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(d[2:], uint16(i))
		binary.BigEndian.PutUint32(d[4:], uint32(i))
		if _, err := c.conn.Write(d); err != nil {
			b.Fatal(err)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.conn.Read(buf)
		if err != nil || n < 2 || buf[1] != byte(codes.Changed) {
			b.Fatalf("answer %x %v", buf[:n], err)
		}
	}
}

// BenchmarkEncodeNotification is building one notification datagram on the
// UDP fast path.
func BenchmarkEncodeNotification(b *testing.B) {
	m := bridge.Message{Topic: "sensors/17/t", Payload: make([]byte, 64), ContentType: "application/json"}
	tok := []byte{1, 2, 3, 4}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := encodeNotification(tok, int32(i&0xffff), message.Confirmable, uint32(i), m, true); err != nil {
			b.Fatal(err)
		}
	}
}
