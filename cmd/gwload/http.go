package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/go-chi/chi/v5"

	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge"
)

func init() {
	register("http", "HTTP → MQTT publish (wrk) vs a bare chi 204 handler, QoS 0/1; SSE fan-out and memory per stream", runHTTP)
}

// httpLoad holds the flags of the http scenario.
type httpLoad struct {
	dur        time.Duration
	conns      int
	threads    int
	payload    int
	rate       int
	rateConn   int
	streams    int
	rounds     int
	subQoS     int
	cpuProfile string
	subKind    string
	naive      bool
	repeat     int
	only       string
}

func runHTTP(args []string) error {
	var o httpLoad
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	fs.DurationVar(&o.dur, "d", 10*time.Second, "duration of each wrk run")
	fs.IntVar(&o.conns, "c", 64, "wrk connections for the saturating runs")
	fs.IntVar(&o.threads, "t", 2, "wrk threads")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes per request")
	fs.IntVar(&o.rate, "rate", 5000, "request rate of the fixed-rate (latency) runs; 0 skips them")
	fs.IntVar(&o.rateConn, "rate-c", 10, "wrk connections of the fixed-rate runs")
	fs.IntVar(&o.streams, "streams", 1000, "SSE streams for the fan-out figure; 0 skips it")
	fs.IntVar(&o.rounds, "rounds", 5, "fan-out publishes to time")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&o.only, "only", "", "run only the saturating runs of this path: bare, qos0 or qos1 (for profiling)")
	fs.IntVar(&o.repeat, "repeat", 3, "rounds of every run (the table shows medians)")
	fs.BoolVar(&o.naive, "naive", true, "also measure a naive chi handler that only calls bridge.Publish (the adapter's overhead is the gap to it)")
	fs.StringVar(&o.subKind, "sub", "mosquitto", "counting MQTT subscriber: mosquitto (mosquitto_sub, own process) or paho (in process)")
	fs.IntVar(&o.subQoS, "sub-qos", 0, "QoS of the counting MQTT subscriber's subscription (1 reproduces mochi v2.7.9's Inflight deadlock, see README)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is required (Debian package wrk)")
	}
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}

	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true, Logger: log})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = withTimeout(b.Shutdown) }()
	gw, err := httpadapter.New(httpadapter.Config{Address: "127.0.0.1:0", Generic: true, Logger: log,
		MaxSSEStreams: max(o.streams+10, httpadapter.DefaultMaxSSEStreams)}, b)
	if err != nil {
		return err
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = withTimeout(gw.Shutdown) }()

	bare, err := startBare(b)
	if err != nil {
		return err
	}
	defer func() { _ = bare.srv.Close() }()

	mqttAddr := b.Addrs()[0].Address
	gwURL := "http://" + gw.Addr() + "/topics/load/t"
	bareURL := "http://" + bare.addr + "/topics/load/t"
	naiveURL := "http://" + bare.addr + "/naive/load/t"

	dir, err := os.MkdirTemp("", "gwload-http")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	fmt.Printf("gwload http: %d CPUs, GOMAXPROCS %d, wrk -t%d, %v per run, payload %d B\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), o.threads, o.dur, o.payload)

	// A case is one wrk configuration; every round runs all cases in turn,
	// and the table shows each case's median, so that a noisy neighbour
	// on the machine skews one round rather than one path.
	type result struct {
		r         wrkResult
		delivered int64
	}
	type tcase struct {
		name, load, url string
		qos             int // -1: bare, nothing to deliver
		conns, delay    int
		ceiling         int // index of the bare case to compare with, -1 for none
		res             []result
	}
	var cases []*tcase
	add := func(name, load, url string, qos, conns, delay, ceiling int) {
		cases = append(cases, &tcase{name: name, load: load, url: url, qos: qos, conns: conns, delay: delay, ceiling: ceiling})
	}
	sat := fmt.Sprintf("c=%d max", o.conns)
	switch o.only {
	case "":
		add("bare chi", sat, bareURL, -1, o.conns, 0, -1)
		for _, q := range []int{0, 1} {
			qs := "?qos=" + strconv.Itoa(q)
			add(fmt.Sprintf("http qos%d", q), sat, gwURL+qs, q, o.conns, 0, 0)
			if o.naive {
				add(fmt.Sprintf("naive qos%d", q), sat, naiveURL+qs, q, o.conns, 0, 0)
			}
		}
		if o.rate > 0 {
			delay := max(1, o.rateConn*1000/o.rate)
			load := fmt.Sprintf("~%d/s", o.rateConn*1000/delay)
			bare := len(cases)
			add("bare chi", load, bareURL, -1, o.rateConn, delay, -1)
			for _, q := range []int{0, 1} {
				add(fmt.Sprintf("http qos%d", q), load, gwURL+"?qos="+strconv.Itoa(q), q, o.rateConn, delay, bare)
			}
		}
	case "bare":
		add("bare chi", sat, bareURL, -1, o.conns, 0, -1)
	case "qos0", "qos1":
		add("http "+o.only, sat, gwURL+"?qos="+o.only[3:], int(o.only[3]-'0'), o.conns, 0, -1)
	case "naive0", "naive1":
		add(o.only, sat, naiveURL+"?qos="+o.only[5:], int(o.only[5]-'0'), o.conns, 0, -1)
	default:
		return fmt.Errorf("-only %q: want bare, qos0, qos1, naive0 or naive1", o.only)
	}

	for round := range o.repeat {
		for _, c := range cases {
			var sub counter
			if c.qos >= 0 {
				var err error
				sub, err = startCounter(o.subKind, b, mqttAddr, byte(min(c.qos, o.subQoS)))
				if err != nil {
					return err
				}
			}
			r, err := runWrk(dir, c.url, o, c.conns, c.delay)
			if err != nil {
				if sub != nil {
					sub.stop()
				}
				return fmt.Errorf("%s: %w", c.name, err)
			}
			var delivered int64
			if sub != nil {
				delivered = settle(sub)
				sub.stop()
			}
			c.res = append(c.res, result{r: r, delivered: delivered})
			st := b.Stats()
			fmt.Fprintf(os.Stderr, "  round %d  %-10s %-12s %8.0f req/s  p99 %-9v  broker: dropped %d, inflight %d\n",
				round+1, c.name, c.load, r.rps(), r.p99, st.MessagesDropped, st.Inflight)
		}
	}

	median := func(c *tcase, f func(result) float64) float64 {
		v := make([]float64, len(c.res))
		for i, r := range c.res {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rps := func(r result) float64 { return r.r.rps() }
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tload\taccepted req/s\tdelivered msg/s\tloss\tnon-2xx\tp50\tp99\tvs bare: req/s\tvs bare: p99\t")
	for _, c := range cases {
		deliv, loss, ratio, p99ratio := "-", "-", "-", "-"
		var non2xx int64
		for _, r := range c.res {
			non2xx += r.r.non2xx
		}
		if c.qos >= 0 {
			deliv = fmt.Sprintf("%.0f", median(c, func(r result) float64 { return float64(r.delivered) / r.r.seconds() }))
			// wrk stops counting at its deadline with up to c requests in
			// flight: those are delivered but not counted as accepted.
			var lost, acc int64
			for _, r := range c.res {
				lost += max(0, r.r.accepted()-r.delivered)
				acc += r.r.accepted()
			}
			loss = fmt.Sprintf("%d (%.2f%%)", lost, 100*float64(lost)/float64(max(1, acc)))
		}
		p50 := time.Duration(median(c, func(r result) float64 { return float64(r.r.p50) }))
		p99 := time.Duration(median(c, func(r result) float64 { return float64(r.r.p99) }))
		if c.ceiling >= 0 {
			base := cases[c.ceiling]
			ratio = fmt.Sprintf("%.0f%%", 100*median(c, rps)/median(base, rps))
			p99ratio = fmt.Sprintf("%.2f×", float64(p99)/median(base, func(r result) float64 { return float64(r.r.p99) }))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", c.name, c.load, median(c, rps), deliv, loss,
			non2xx, fmtDur(p50), fmtDur(p99), ratio, p99ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("(medians of %d rounds; loss summed over them; subscriber: %s at QoS ≤ %d)\n", o.repeat, o.subKind, o.subQoS)

	if o.streams > 0 {
		return sseFanout(ctx, b, gw.Addr(), bare.addr, o)
	}
	return nil
}

// bareServer is the ceiling: chi answering 204 without publishing, and an
// SSE handler that only holds the stream open (the memory baseline).
type bareServer struct {
	srv  *http.Server
	addr string
}

func startBare(b *bridge.Broker) (*bareServer, error) {
	r := chi.NewMux()
	// naive: the least an HTTP → MQTT handler can do on this bridge (read
	// the body, publish, 204), with none of the adapter's checks, metrics
	// or headers. The adapter's own overhead is the gap to this row.
	r.Post("/naive/*", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		qos := byte(0)
		if r.URL.RawQuery == "qos=1" {
			qos = 1
		}
		if err := b.Publish(r.Context(), bridge.Message{Topic: "load/t", Payload: body, QoS: qos}); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	r.Post("/topics/*", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	r.Get("/topics/*", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(": stream\n\n"))
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // owned: closed by the caller's srv.Close
	return &bareServer{srv: srv, addr: ln.Addr().String()}, nil
}

// wrkResult is what the Lua done() callback reports.
type wrkResult struct {
	requests, non2xx, sockErrs int64
	durUS                      int64
	p50, p99                   time.Duration
}

func (r wrkResult) seconds() float64 { return float64(r.durUS) / 1e6 }
func (r wrkResult) accepted() int64  { return r.requests - r.non2xx }
func (r wrkResult) rps() float64     { return float64(r.accepted()) / r.seconds() }

const wrkLua = `
wrk.method = "POST"
wrk.body = string.rep("x", %d)
wrk.headers["Content-Type"] = "text/plain"
%s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("GWLOAD %%d %%d %%d %%d %%d %%d\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
`

// runWrk drives url with wrk; delay > 0 paces each connection (ms between
// requests) for a fixed moderate rate.
func runWrk(dir, url string, o httpLoad, conns, delay int) (wrkResult, error) {
	var r wrkResult
	pace := ""
	if delay > 0 {
		pace = fmt.Sprintf("delay = function() return %d end", delay)
	}
	script := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(script, fmt.Appendf(nil, wrkLua, o.payload, pace), 0o600); err != nil {
		return r, err
	}
	threads := min(o.threads, conns)
	out, err := exec.Command("wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+o.dur.String(), "--latency", "-s", script, url).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "GWLOAD "); ok {
			var p50, p99 int64
			if _, err := fmt.Sscan(rest, &r.requests, &r.non2xx, &r.sockErrs, &r.durUS, &p50, &p99); err != nil {
				return r, fmt.Errorf("wrk output %q: %v", line, err)
			}
			r.p50, r.p99 = time.Duration(p50)*time.Microsecond, time.Duration(p99)*time.Microsecond
			return r, nil
		}
	}
	return r, fmt.Errorf("no result in wrk output:\n%s", out)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// settle waits until the count stops moving for a second and returns it.
func settle(c counter) int64 {
	last, still := c.count(), time.Now()
	for time.Since(still) < time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := c.count(); n != last {
			last, still = n, time.Now()
		}
	}
	return last
}

// withTimeout calls f with a context that ends after 5s.
func withTimeout(f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f(ctx)
}

// sseFanout opens N streams on the adapter, publishes one message at a time
// and times until every stream has it; then measures memory per stream
// against the bare server's do-nothing stream.
func sseFanout(ctx context.Context, b *bridge.Broker, gwAddr, bareAddr string, o httpLoad) error {
	memBare, closeBare, err := openStreams(bareAddr, "/topics/fan/x", o.streams, nil)
	if err != nil {
		return fmt.Errorf("bare streams: %w", err)
	}
	closeBare()

	var mu sync.Mutex
	var got sync.WaitGroup
	var last time.Time
	onData := func() {
		mu.Lock()
		last = time.Now()
		mu.Unlock()
		got.Done()
	}
	memGW, closeGW, err := openStreams(gwAddr, "/topics/fan/x", o.streams, onData)
	if err != nil {
		return fmt.Errorf("gateway streams: %w", err)
	}
	defer closeGW()

	var times []time.Duration
	for i := range o.rounds {
		got.Add(o.streams)
		t0 := time.Now()
		if err := b.Publish(ctx, bridge.Message{Topic: "fan/x", Payload: []byte("round " + strconv.Itoa(i)), QoS: 1}); err != nil {
			return err
		}
		done := make(chan struct{})
		go func() { got.Wait(); close(done) }() // owned: ends when every stream got the message
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("fan-out round %d: not every stream got the message in 30s", i)
		}
		mu.Lock()
		times = append(times, last.Sub(t0))
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(times)
	fmt.Printf("\nSSE fan-out, %d streams: one publish → all received: median %v, min %v, max %v (%d rounds)\n",
		o.streams, fmtDur(times[len(times)/2]), fmtDur(times[0]), fmtDur(times[len(times)-1]), len(times))
	fmt.Printf("memory per open stream (heap+stacks, server and a minimal raw-TCP client in one process):\n")
	fmt.Printf("  gateway SSE stream %6.1f KiB   bare chi stream %6.1f KiB   gateway's own cost %6.1f KiB\n",
		memGW/1024, memBare/1024, (memGW-memBare)/1024)
	return nil
}

// memNow is the heap in use plus goroutine stacks, after a GC.
func memNow() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc + ms.StackInuse)
}

// openStreams opens n SSE streams with raw TCP clients (512-byte read
// buffers: as little client state as possible) and returns the memory per
// stream. onData runs for every data line received.
func openStreams(addr, path string, n int, onData func()) (float64, func(), error) {
	before := memNow()
	conns := make([]net.Conn, 0, n)
	var wg sync.WaitGroup
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
	}
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			closeAll()
			return 0, nil, err
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n", path); err != nil {
			closeAll()
			return 0, nil, err
		}
		br := bufio.NewReaderSize(c, 512)
		// Wait for the stream to be open (headers and the first comment).
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				closeAll()
				return 0, nil, fmt.Errorf("stream %d: %w", len(conns), err)
			}
			if strings.HasPrefix(line, ": ") {
				break
			}
		}
		wg.Add(1)
		go func() { // owned: ends when closeAll closes the connection
			defer wg.Done()
			for {
				line, err := br.ReadSlice('\n')
				if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
					return
				}
				if onData != nil && len(line) > 6 && string(line[:6]) == "data: " {
					onData()
				}
			}
		}()
	}
	per := (memNow() - before) / float64(n)
	return per, closeAll, nil
}
