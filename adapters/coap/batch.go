package coapadapter

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
)

// Batched UDP I/O: under load the plain UDP transport reads up to batchSize
// datagrams per recvmmsg(2) and writes queued answers with one sendmmsg(2),
// instead of one system call per datagram; system calls were half of the
// CPU of a CoAP → MQTT request on our machines. With little traffic each
// call carries one datagram, as before. It is used on IPv4 sockets;
// others (dual-stack "::") keep one call per datagram.
const (
	batchSize   = 32
	batchBufLen = 8 << 10 // larger datagrams are dropped (go-coap's MTU is 1472)
	outQueueLen = 1024
)

// outDatagram is one answer waiting for the writer.
type outDatagram struct {
	buf *[]byte
	to  netip.AddrPort
}

var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1536); return &b }}

// batchIO is the batched reader and writer of one IPv4 UDP socket.
type batchIO struct {
	l   *udpListener
	pc  *ipv4.PacketConn
	out chan outDatagram
}

// newBatchIO returns nil when the socket is not IPv4.
func newBatchIO(l *udpListener) *batchIO {
	la, ok := l.conn.LocalAddr().(*net.UDPAddr)
	if !ok || la.IP.To4() == nil {
		return nil
	}
	return &batchIO{l: l, pc: ipv4.NewPacketConn(l.conn), out: make(chan outDatagram, outQueueLen)}
}

// read is the read loop: recvmmsg, then each datagram to its peer.
func (b *batchIO) read() {
	ms := make([]ipv4.Message, batchSize)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, batchBufLen)}
	}
	for {
		n, err := b.pc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !b.l.s.running() {
				return
			}
			b.l.s.log.Warn("coap udp read", "error", err)
			continue
		}
		for i := range ms[:n] {
			m := &ms[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N >= batchBufLen {
				continue // truncated: larger than we accept
			}
			b.l.handleDatagram(m.Buffers[0][:m.N], ua.AddrPort())
		}
	}
}

// send queues one datagram for the writer; data is copied.
func (b *batchIO) send(data []byte, to netip.AddrPort) error {
	bp := outBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	select {
	case b.out <- outDatagram{buf: bp, to: to}:
		return nil
	case <-b.l.s.ctx.Done():
		outBufs.Put(bp)
		return net.ErrClosed
	}
}

// write is the writer loop: it takes what is queued, up to batchSize, and
// sends it with sendmmsg.
func (b *batchIO) write() {
	ms := make([]ipv4.Message, batchSize)
	addrs := make([]net.UDPAddr, batchSize)
	batch := make([]outDatagram, 0, batchSize)
	for {
		batch = batch[:0]
		select {
		case d := <-b.out:
			batch = append(batch, d)
		case <-b.l.s.ctx.Done():
			return
		}
	fill:
		for len(batch) < batchSize {
			select {
			case d := <-b.out:
				batch = append(batch, d)
			default:
				break fill
			}
		}
		for i, d := range batch {
			a := d.to.Addr().As4()
			addrs[i].IP = append(addrs[i].IP[:0], a[:]...)
			addrs[i].Port = int(d.to.Port())
			ms[i].Buffers = [][]byte{*d.buf}
			ms[i].Addr = &addrs[i]
		}
		for sent := 0; sent < len(batch); {
			n, err := b.pc.WriteBatch(ms[sent:len(batch)], 0)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					b.l.s.coapErrors(err)
				}
				n = max(n, 1) // skip the datagram that failed
			}
			sent += n
		}
		for i, d := range batch {
			outBufs.Put(d.buf)
			ms[i].Buffers = nil
		}
	}
}
