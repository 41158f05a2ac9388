// Package coaptest gives tests a real go-coap UDP client whose goroutines
// all end when the test does (go-coap's default periodic runner sleeps for
// seconds and outlives a test). Only _test.go files import it.
package coaptest

import (
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Runner is a go-coap periodic runner that ticks every 20 ms and stops at
// the end of the test.
func Runner(t testing.TB) periodic.Func {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	return func(f func(now time.Time) bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-tk.C:
					if !f(now) {
						return
					}
				}
			}
		}()
	}
}

// Conn is what every go-coap client connection offers for closing.
type Conn interface {
	Close() error
	Done() <-chan struct{}
}

// Keep fails the test if dialing failed (err), and otherwise closes cc when
// the test ends, waiting until its goroutines are done.
func Keep[C Conn](t testing.TB, cc C, err error) C {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		<-cc.Done()
	})
	return cc
}

// DialUDP connects a CoAP client over UDP to addr; it closes at the end of
// the test.
func DialUDP(t testing.TB, addr string, opts ...udp.Option) *udpClient.Conn {
	t.Helper()
	opts = append([]udp.Option{options.WithErrors(func(error) {}), options.WithPeriodicRunner(Runner(t))}, opts...)
	cc, err := udp.Dial(addr, opts...)
	return Keep(t, cc, err)
}
