package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/eclipse/paho.golang/paho"

	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

func init() {
	register("egress", "MQTT publish → egress queue → webhook answering 204: durable queue vs memory-only queue", runEgress)
}

// egressLoad holds the flags of the egress scenario.
type egressLoad struct {
	n, pubs, inflight, payload, rounds int
	dir                                string
}

func runEgress(args []string) error {
	var o egressLoad
	fs := flag.NewFlagSet("egress", flag.ContinueOnError)
	fs.IntVar(&o.n, "n", 20000, "messages per run")
	fs.IntVar(&o.pubs, "p", 16, "MQTT 5 publishers (QoS 1, each waits for its PUBACK)")
	fs.IntVar(&o.inflight, "inflight", 16, "max_in_flight of the webhook route")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes (at least 8)")
	fs.IntVar(&o.rounds, "rounds", 2, "runs per mode, alternating; the best is kept")
	fs.StringVar(&o.dir, "dir", "", "folder for the durable queue (default: a temporary folder)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.payload = max(o.payload, 8)
	if o.dir == "" {
		d, err := os.MkdirTemp("", "gwload-egress")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(d) }()
		o.dir = d
	}
	best := map[string]egressResult{}
	for round := range o.rounds {
		for _, mode := range []string{"memory", "durable"} {
			dir := ""
			if mode == "durable" {
				dir = fmt.Sprintf("%s/r%d", o.dir, round)
			}
			r, err := egressRun(o, dir)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			if r.rate > best[mode].rate {
				best[mode] = r
			}
		}
	}
	fmt.Printf("egress: %d msgs of %d bytes, %d QoS 1 publishers, max_in_flight %d, best of %d\n", o.n, o.payload, o.pubs, o.inflight, o.rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\tmsgs/s\tp50\tp99\tpublish p50\tratio\t")
	for _, mode := range []string{"memory", "durable"} {
		r := best[mode]
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%.2f\t\n", mode, r.rate, fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.pub50), r.rate/best["memory"].rate)
	}
	return tw.Flush()
}

type egressResult struct {
	rate            float64
	p50, p99, pub50 time.Duration
}

// egressRun publishes o.n messages through one webhook route and waits
// until the endpoint has them all. Latency is publish → endpoint receipt.
func egressRun(o egressLoad, dir string) (egressResult, error) {
	var res egressResult
	// The endpoint: 204 for everything, records latency from the payload.
	var (
		mu    sync.Mutex
		lats  = make([]time.Duration, 0, o.n)
		seen  = make([]bool, o.n)
		count atomic.Int64
	)
	all := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
		if len(b) < 12 {
			return
		}
		sent := int64(binary.BigEndian.Uint64(b))
		id := int(binary.BigEndian.Uint32(b[8:]))
		mu.Lock()
		if id < len(seen) && !seen[id] {
			seen[id] = true
			lats = append(lats, time.Duration(time.Now().UnixNano()-sent))
			if count.Add(1) == int64(o.n) {
				close(all)
			}
		}
		mu.Unlock()
	})}
	go func() { _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close() }()

	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		return res, err
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		return res, err
	}
	defer func() { _ = b.Shutdown(ctx) }()
	tab, err := mapping.Compile([]mapping.RouteSpec{{Name: "load", Subscribe: "load/{pub}",
		HTTPOut: &mapping.HTTPOutSpec{URL: "http://" + ln.Addr().String() + "/hook/{pub}", DeliverySpec: mapping.DeliverySpec{
			MaxInFlight: o.inflight, Queue: &mapping.QueueSpec{MaxItems: o.n * 2, MaxBytes: mapping.ByteSize(o.n * (o.payload + 256))},
		}}}})
	if err != nil {
		return res, err
	}
	r := tab.Routes()[0]
	d, err := httpadapter.EgressWebhook(r, httpadapter.EgressOptions{})
	if err != nil {
		return res, err
	}
	e, err := egress.New(egress.Config{Broker: b, Dir: dir, Routes: []egress.Route{{Name: r.Name, Subscribe: r.Subscribe, Delivery: r.Delivery, Deliverer: d}}})
	if err != nil {
		return res, err
	}
	if err := e.Start(ctx); err != nil {
		return res, err
	}
	defer func() { _ = e.Shutdown(ctx) }()

	addr := b.Addrs()[0].Address
	clients := make([]*paho.Client, o.pubs)
	for i := range clients {
		c, err := dialMQTT(addr, fmt.Sprintf("pub%d", i), 0)
		if err != nil {
			return res, err
		}
		clients[i] = c
		defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	}
	var (
		wg      sync.WaitGroup
		next    atomic.Int64
		pubErr  atomic.Value
		pubLats = make([][]time.Duration, o.pubs)
	)
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, o.payload)
			topic := fmt.Sprintf("load/%d", i)
			for {
				id := next.Add(1) - 1
				if id >= int64(o.n) {
					return
				}
				t0 := time.Now()
				binary.BigEndian.PutUint64(payload, uint64(t0.UnixNano()))
				binary.BigEndian.PutUint32(payload[8:], uint32(id))
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
				cancel()
				if err != nil {
					pubErr.Store(err)
					return
				}
				pubLats[i] = append(pubLats[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if err, _ := pubErr.Load().(error); err != nil {
		return res, err
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		return res, fmt.Errorf("only %d of %d delivered within 60s", count.Load(), o.n)
	}
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	var pl []time.Duration
	for _, l := range pubLats {
		pl = append(pl, l...)
	}
	slices.Sort(pl)
	res.rate = float64(o.n) / elapsed.Seconds()
	res.p50, res.p99 = lats[len(lats)/2], lats[len(lats)*99/100]
	res.pub50 = pl[len(pl)/2]
	return res, nil
}
