package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	coapadapter "github.com/edgebridge/gateway/adapters/coap"
	"github.com/edgebridge/gateway/bridge"
)

func init() {
	register("coap", "CoAP → MQTT (CON, NON) vs raw UDP echo and a bare go-coap server; MQTT → CoAP observe fan-out and memory per observer", runCoAP)
	register("coap-gen", "(internal) raw-UDP CoAP load generator, run as a child process by `gwload coap`", runCoAPGen)
	register("coap-obs", "(internal) raw-UDP CoAP observers, run as a child process by `gwload coap`", runCoAPObs)
}

// coapLoad holds the flags of the coap scenario.
type coapLoad struct {
	dur       time.Duration
	clients   int
	window    int
	payload   int
	procs     int
	genProcs  int
	repeat    int
	observers int
	obsSocks  int
	rounds    int
	sub       string
	only      string
	profile   string
}

func runCoAP(args []string) error {
	var o coapLoad
	fs := flag.NewFlagSet("coap", flag.ContinueOnError)
	fs.DurationVar(&o.dur, "d", 10*time.Second, "duration of each load run (go-coap's bare server slows down the longer it runs, see README)")
	fs.IntVar(&o.clients, "c", 8, "concurrent CoAP clients (one UDP socket each)")
	fs.IntVar(&o.window, "w", 1, "requests in flight per client (1 = a client waits for each answer)")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes per request")
	fs.IntVar(&o.procs, "procs", 1, "GOMAXPROCS of the server side (this process)")
	fs.IntVar(&o.genProcs, "gen-procs", 1, "GOMAXPROCS of the load generator process")
	fs.IntVar(&o.repeat, "repeat", 5, "rounds of every run (the table shows medians; ratios are taken within each round)")
	fs.IntVar(&o.observers, "observers", 10000, "observers for the fan-out figure; 0 skips it")
	fs.IntVar(&o.obsSocks, "observer-sockets", 100, "UDP sockets (peers) the observers are spread over")
	fs.IntVar(&o.rounds, "rounds", 5, "fan-out publishes to time")
	fs.StringVar(&o.sub, "sub", "mosquitto", "counting MQTT subscriber: mosquitto (mosquitto_sub, own process) or paho (in process)")
	fs.StringVar(&o.only, "only", "", "run only the load runs whose name contains this (e.g. CON), for profiling")
	fs.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the server side to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runtime.GOMAXPROCS(o.procs)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true, Logger: log})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = coapWithTimeout(b.Shutdown) }()
	gw, err := coapadapter.New(coapadapter.Config{UDP: "127.0.0.1:0", AllowAnonymous: true, MaxObservers: max(o.observers, 1), Logger: log}, b)
	if err != nil {
		return err
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = coapWithTimeout(gw.Shutdown) }()
	gwAddr, _, _ := gw.Addrs()

	echo, err := startUDPEcho()
	if err != nil {
		return err
	}
	defer echo.stop()
	bare, err := startBareCoAP()
	if err != nil {
		return err
	}
	defer bare.stop()

	counter, err := startCounter(o.sub, b, b.Addrs()[0].Address, 0)
	if err != nil {
		return err
	}
	defer counter.stop()

	fmt.Printf("gwload coap: %d clients × window %d, %d-byte payloads, %v per run, median of %d; server GOMAXPROCS=%d, generator GOMAXPROCS=%d, %d CPUs\n",
		o.clients, o.window, o.payload, o.dur, o.repeat, o.procs, o.genProcs, runtime.NumCPU())
	runs := []struct {
		name, addr, mode string
		count            bool
	}{
		{"raw UDP echo (ceiling)", echo.addr, "echo", false},
		{"bare go-coap v3.8.0, default options, 2.04", bare.addr, "con", false},
		{"gateway CoAP→MQTT, CON (QoS 1)", gwAddr, "con", true},
		{"gateway CoAP→MQTT, NON (QoS 0)", gwAddr, "non", true},
	}
	if o.only != "" {
		runs = slices.DeleteFunc(runs, func(r struct {
			name, addr, mode string
			count            bool
		}) bool {
			return !strings.Contains(r.name, o.only)
		})
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rows := make([]coapRow, len(runs))
	for rep := range o.repeat {
		for i, r := range runs {
			topic := fmt.Sprintf("load/r%d/%d", i, rep)
			before := counter.count()
			res, err := runGenerator(r.addr, r.mode, topic, o)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			if r.count {
				res.delivered = coapSettle(counter, before, res.OK) - before
				res.counted = true
			}
			rows[i].name = r.name
			rows[i].res = append(rows[i].res, res)
			fmt.Fprintf(os.Stderr, "  round %d %-45s %8.0f req/s\n", rep+1, r.name, res.rps())
		}
	}
	if len(rows) < 2 {
		for _, r := range rows {
			fmt.Printf("%s: %.0f req/s\n", r.name, r.res[len(r.res)/2].rps())
		}
	} else if err := printCoAPTable(rows[0].name, rows, b); err != nil {
		return err
	}
	if o.observers > 0 {
		if err := observeFanout(ctx, b, gwAddr, o); err != nil {
			return fmt.Errorf("fan-out: %w", err)
		}
	}
	return nil
}

// genResult is what a generator process reports, plus what the parent
// measured around it.
type genResult struct {
	Sent      int64         `json:"sent"`
	OK        int64         `json:"ok"`
	Errors    int64         `json:"errors"`
	Retrans   int64         `json:"retransmits"`
	Lost      int64         `json:"lost"`
	P50       time.Duration `json:"p50"`
	P99       time.Duration `json:"p99"`
	Seconds   float64       `json:"seconds"`
	serverCPU float64       // fraction of one core used by this process during the run
	genCPU    float64       // fraction of one core used by the generator process
	delivered int64
	counted   bool
}

func (r genResult) rps() float64 { return float64(r.OK) / r.Seconds }

// runGenerator runs one `gwload coap-gen` child against addr.
func runGenerator(addr, mode, topic string, o coapLoad) (genResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return genResult{}, err
	}
	cmd := exec.Command(exe, "coap-gen", "-addr", addr, "-mode", mode, "-topic", topic,
		"-c", strconv.Itoa(o.clients), "-w", strconv.Itoa(o.window), "-payload", strconv.Itoa(o.payload), "-d", o.dur.String())
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(o.genProcs))
	cmd.Stderr = os.Stderr
	cpu0 := coapCPU()
	t0 := time.Now()
	out, err := cmd.Output()
	wall := time.Since(t0)
	cpu1 := coapCPU()
	if err != nil {
		return genResult{}, fmt.Errorf("generator: %w", err)
	}
	var r genResult
	if err := json.Unmarshal(out, &r); err != nil {
		return genResult{}, fmt.Errorf("generator output %q: %w", out, err)
	}
	st := cmd.ProcessState
	r.genCPU = (st.UserTime() + st.SystemTime()).Seconds() / wall.Seconds()
	r.serverCPU = (cpu1 - cpu0).Seconds() / wall.Seconds()
	return r, nil
}

// coapCPU is the CPU time (user + system) of this process so far.
func coapCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runCoAPGen is the lean raw-UDP CoAP client: -c sockets, each with -w
// requests in flight, pre-encoded requests whose message ID and token are
// patched in place; answers are matched by token. A socket that has used
// 60,000 message IDs is replaced by a new one (a new peer), so no message
// ID is reused within EXCHANGE_LIFETIME (RFC 7252 §4.4). It prints a
// genResult as JSON.
func runCoAPGen(args []string) error {
	fs := flag.NewFlagSet("coap-gen", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address")
	mode := fs.String("mode", "con", "con, non or echo (CON requests, any answer with the token counts)")
	topic := fs.String("topic", "load/x", "topic (Uri-Path ps/<topic>)")
	clients := fs.Int("c", 8, "sockets")
	window := fs.Int("w", 1, "requests in flight per socket")
	payload := fs.Int("payload", 64, "payload bytes")
	dur := fs.Duration("d", 5*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ra, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		return err
	}
	typ := message.Confirmable
	if *mode == "non" {
		typ = message.NonConfirmable
	}
	path := append([]string{"ps"}, strings.Split(*topic, "/")...)
	stop := time.Now().Add(*dur)
	var total genResult
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := &genClient{ra: ra, typ: typ, window: *window, stop: stop, echo: *mode == "echo"}
			tmpl, err := coapTemplate(typ, path, *payload)
			if err != nil {
				fmt.Fprintln(os.Stderr, "coap-gen:", err)
				return
			}
			g.tmpl = tmpl
			g.tokenBase = uint32(i) << 24
			if err := g.run(); err != nil {
				fmt.Fprintln(os.Stderr, "coap-gen:", err)
			}
			mu.Lock()
			total.Sent += g.sent
			total.OK += g.ok
			total.Errors += g.errs
			total.Retrans += g.retrans
			total.Lost += g.lost
			lat = append(lat, g.lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.Seconds = min(time.Since(start), *dur).Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		total.P50 = lat[len(lat)/2]
		total.P99 = lat[len(lat)*99/100]
	}
	return json.NewEncoder(os.Stdout).Encode(total)
}

// coapTemplate encodes a POST with a 4-byte token.
func coapTemplate(typ message.Type, path []string, payload int) ([]byte, error) {
	m := message.Message{Type: typ, Code: codes.POST, MessageID: 1, Token: []byte{0, 0, 0, 0}, Options: message.Options{},
		Payload: []byte(strings.Repeat("x", payload))}
	buf := make([]byte, 512)
	for _, p := range path {
		var n int
		var err error
		m.Options, n, err = m.Options.AddString(buf, message.URIPath, p)
		if err != nil {
			return nil, err
		}
		buf = buf[n:]
	}
	var b [4]byte
	m.Options, _, _ = m.Options.SetUint32(b[:], message.ContentFormat, uint32(message.TextPlain))
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, out)
	return out[:n], err
}

// genClient is one generator socket.
type genClient struct {
	ra        *net.UDPAddr
	typ       message.Type
	window    int
	stop      time.Time
	echo      bool
	tmpl      []byte
	tokenBase uint32

	conn     *net.UDPConn
	mids     int
	next     uint32
	inflight []genSlot
	sent     int64
	ok       int64
	errs     int64
	retrans  int64
	lost     int64
	lat      []time.Duration
}

type genSlot struct {
	token uint32
	buf   []byte
	sent  time.Time
	first time.Time
	tries int
}

const genRetransmit = 500 * time.Millisecond

func (g *genClient) dial() error {
	if g.conn != nil {
		_ = g.conn.Close()
	}
	c, err := net.DialUDP("udp", nil, g.ra)
	if err != nil {
		return err
	}
	_ = c.SetReadBuffer(1 << 20)
	g.conn, g.mids = c, 0
	return nil
}

func (g *genClient) send() error {
	g.next++
	s := genSlot{token: g.tokenBase | g.next&0xFFFFFF, buf: slices.Clone(g.tmpl)}
	binary.BigEndian.PutUint16(s.buf[2:], uint16(g.mids))
	binary.BigEndian.PutUint32(s.buf[4:], s.token)
	g.mids++
	s.sent = time.Now()
	s.first = s.sent
	if _, err := g.conn.Write(s.buf); err != nil {
		return err
	}
	g.sent++
	g.inflight = append(g.inflight, s)
	return nil
}

func (g *genClient) run() error {
	if err := g.dial(); err != nil {
		return err
	}
	defer func() { _ = g.conn.Close() }()
	buf := make([]byte, 2048)
	drainUntil := g.stop.Add(3 * time.Second)
	for {
		now := time.Now()
		sending := now.Before(g.stop)
		if g.mids >= 60000 && len(g.inflight) == 0 {
			if err := g.dial(); err != nil {
				return err
			}
		}
		for sending && g.mids < 60000 && len(g.inflight) < g.window {
			if err := g.send(); err != nil {
				return err
			}
		}
		if len(g.inflight) == 0 && !sending {
			return nil
		}
		if now.After(drainUntil) {
			g.lost += int64(len(g.inflight))
			return nil
		}
		_ = g.conn.SetReadDeadline(now.Add(50 * time.Millisecond))
		n, err := g.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			g.retransmitDue(time.Now())
			continue
		}
		if n < 8 || buf[0]&0x0f != 4 {
			continue // no 4-byte token: an empty ACK or something else
		}
		token := binary.BigEndian.Uint32(buf[4:8])
		for i, s := range g.inflight {
			if s.token != token {
				continue
			}
			switch {
			case g.echo || buf[1] == byte(codes.Changed):
				g.ok++
				g.lat = append(g.lat, time.Since(s.first))
			default:
				g.errs++
			}
			g.inflight = slices.Delete(g.inflight, i, i+1)
			break
		}
		if g.sent%64 == 0 {
			g.retransmitDue(time.Now())
		}
	}
}

// retransmitDue resends CONs unanswered for genRetransmit (the same bytes:
// a retransmission); NONs are not retransmitted but given up after 5 s.
func (g *genClient) retransmitDue(now time.Time) {
	for i := 0; i < len(g.inflight); i++ {
		s := &g.inflight[i]
		if now.Sub(s.sent) < genRetransmit {
			continue
		}
		if g.typ == message.NonConfirmable || s.tries >= 4 {
			if now.Sub(s.first) > 5*time.Second || s.tries >= 4 {
				g.lost++
				g.inflight = slices.Delete(g.inflight, i, i+1)
				i--
			}
			continue
		}
		s.tries++
		s.sent = now
		g.retrans++
		_, _ = g.conn.Write(s.buf)
	}
}

// udpEcho is the physical ceiling: a loop that sends every datagram back.
type udpEcho struct {
	conn *net.UDPConn
	addr string
	done chan struct{}
}

func startUDPEcho() (*udpEcho, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	e := &udpEcho{conn: c, addr: c.LocalAddr().String(), done: make(chan struct{})}
	go func() { // owned: ends when stop closes the socket
		defer close(e.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return e, nil
}

func (e *udpEcho) stop() {
	_ = e.conn.Close()
	<-e.done
}

// bareCoAP is go-coap v3.8.0's UDP server with default options and a
// handler that answers 2.04: the baseline of the issue. Only the error sink
// is set (its default prints to stdout).
type bareCoAP struct {
	addr   string
	stopFn func()
	done   chan struct{}
}

func startBareCoAP() (*bareCoAP, error) {
	l, err := coapNet.NewListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := udp.NewServer(options.WithErrors(func(error) {}), options.WithMux(mux.HandlerFunc(func(w mux.ResponseWriter, _ *mux.Message) {
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	})))
	b := &bareCoAP{addr: l.LocalAddr().String(), done: make(chan struct{})}
	go func() { // owned: ends at stop
		defer close(b.done)
		_ = srv.Serve(l)
	}()
	b.stopFn = func() {
		srv.Stop()
		_ = l.Close()
	}
	return b, nil
}

func (b *bareCoAP) stop() {
	b.stopFn()
	<-b.done
}

// coapSettle waits until the counter reaches before+want or stops growing.
func coapSettle(c counter, before, want int64) int64 {
	last, still := c.count(), 0
	for range 100 {
		if last-before >= want {
			return last
		}
		time.Sleep(50 * time.Millisecond)
		n := c.count()
		if n == last {
			if still++; still >= 20 {
				return n
			}
		} else {
			still = 0
		}
		last = n
	}
	return last
}

// observeFanout registers o.observers observations from a child process,
// publishes one message o.rounds times and reports how long until the last
// observer had it, and the memory each observer costs this process.
func observeFanout(ctx context.Context, b *bridge.Broker, gwAddr string, o coapLoad) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	heap0, rss0 := coapMem()
	cmd := exec.Command(exe, "coap-obs", "-addr", gwAddr, "-n", strconv.Itoa(o.observers), "-sockets", strconv.Itoa(o.obsSocks))
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(o.genProcs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	next := func() (string, error) {
		if !lines.Scan() {
			if err := lines.Err(); err != nil {
				return "", err
			}
			return "", io.EOF
		}
		return lines.Text(), nil
	}
	if l, err := next(); err != nil || l != "ready" {
		return fmt.Errorf("observers did not register: %q %v", l, err)
	}
	heap1, rss1 := coapMem()
	var times []time.Duration
	for r := range o.rounds {
		if _, err := fmt.Fprintf(stdin, "go %d\n", r); err != nil {
			return err
		}
		if l, err := next(); err != nil || l != "armed" {
			return fmt.Errorf("observer process: %q %v", l, err)
		}
		t0 := time.Now()
		if err := b.Publish(ctx, bridge.Message{Topic: "fan/out", Payload: []byte(fmt.Sprintf("round %d", r)), QoS: 1}); err != nil {
			return err
		}
		l, err := next()
		if err != nil {
			return err
		}
		var lastNano, got int64
		if _, err := fmt.Sscanf(l, "done %d %d", &got, &lastNano); err != nil {
			return fmt.Errorf("observer process said %q", l)
		}
		if got != int64(o.observers) {
			return fmt.Errorf("round %d: %d of %d observers notified", r, got, o.observers)
		}
		times = append(times, time.Unix(0, lastNano).Sub(t0))
		fmt.Fprintf(os.Stderr, "  fan-out round %d: %s\n", r+1, coapFmtDur(times[len(times)-1]))
	}
	slices.Sort(times)
	drops := udpDrops(gwAddr)
	fmt.Printf("\nobserve fan-out: 1 MQTT message (QoS 1, so CON notifications, each acknowledged) to %d observers on %d UDP peers\n", o.observers, o.obsSocks)
	fmt.Printf("  time until the last observer had it: median %s, max %s (%d rounds)\n", coapFmtDur(times[len(times)/2]), coapFmtDur(times[len(times)-1]), len(times))
	fmt.Printf("  datagrams the kernel dropped on the gateway's socket (receive buffer full): %d\n", drops)
	fmt.Printf("  memory per observer (this process, after GC): heap+stacks %.1f KiB, RSS %.1f KiB\n",
		(heap1-heap0)/float64(o.observers)/1024, (rss1-rss0)/float64(o.observers)/1024)
	return nil
}

// coapMem returns heap+stack bytes in use after GC, and the RSS.
func coapMem() (heap, rss float64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapAlloc + ms.StackInuse)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseFloat(f[1], 64)
			rss = pages * float64(os.Getpagesize())
		}
	}
	return heap, rss
}

// runCoAPObs is the observer side of the fan-out: -n observations of
// /ps/fan/out over -sockets sockets. It prints "ready" once all are
// registered; then for each "go" line on stdin it prints "armed", waits for
// one notification per observer (acknowledging CONs) and prints
// "done <count> <unix-nanos of the last one>".
func runCoAPObs(args []string) error {
	fs := flag.NewFlagSet("coap-obs", flag.ContinueOnError)
	addr := fs.String("addr", "", "gateway address")
	n := fs.Int("n", 10000, "observers")
	socks := fs.Int("sockets", 100, "sockets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ra, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		return err
	}
	per := (*n + *socks - 1) / *socks
	type sock struct {
		c   *net.UDPConn
		obs int
	}
	var ss []*sock
	for i := 0; i < *socks && i*per < *n; i++ {
		c, err := net.DialUDP("udp", nil, ra)
		if err != nil {
			return err
		}
		_ = c.SetReadBuffer(4 << 20)
		defer func() { _ = c.Close() }()
		ss = append(ss, &sock{c: c, obs: min(per, *n-i*per)})
	}
	// Register, at most 32 in flight per socket and 256 in all (a burst
	// larger than the gateway's socket buffer would only be retransmitted).
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	var regErr atomic.Value
	for si, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			pending := map[uint32][]byte{}
			next, tries := 0, 0
			for next < s.obs || len(pending) > 0 {
				for next < s.obs && len(pending) < 32 {
					if len(pending) > 0 {
						select {
						case sem <- struct{}{}:
						default:
							goto read // wait for answers first
						}
					} else {
						sem <- struct{}{}
					}
					tok := uint32(si)<<16 | uint32(next)
					m := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: int32(next), Token: binary.BigEndian.AppendUint32(nil, tok), Options: message.Options{}}
					ob := make([]byte, 64)
					m.Options, _, _ = m.Options.SetUint32(ob, message.Observe, 0)
					m.Options, _, _ = m.Options.AddString(ob[1:], message.URIPath, "ps")
					m.Options, _, _ = m.Options.AddString(ob[3:], message.URIPath, "fan")
					m.Options, _, _ = m.Options.AddString(ob[6:], message.URIPath, "out")
					size, _ := coder.DefaultCoder.Size(m)
					d := make([]byte, size)
					if _, err := coder.DefaultCoder.Encode(m, d); err != nil {
						regErr.Store(err)
						return
					}
					_, _ = s.c.Write(d)
					pending[tok] = d
					next++
				}
			read:
				_ = s.c.SetReadDeadline(time.Now().Add(time.Second))
				k, err := s.c.Read(buf)
				if err != nil {
					// Lost on the way (a full socket buffer somewhere):
					// retransmit the same datagrams, as a CoAP client would.
					if tries++; tries > 5 {
						regErr.Store(fmt.Errorf("registration: %w (%d pending)", err, len(pending)))
						return
					}
					for _, d := range pending {
						_, _ = s.c.Write(d)
					}
					continue
				}
				if k >= 8 && buf[0]&0x0f == 4 && buf[1] == byte(codes.Content) {
					if tok := binary.BigEndian.Uint32(buf[4:8]); pending[tok] != nil {
						delete(pending, tok)
						<-sem
					}
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := regErr.Load().(error); ok {
		return err
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var got atomic.Int64
		var last atomic.Int64
		fmt.Println("armed")
		var rw sync.WaitGroup
		for _, s := range ss {
			rw.Add(1)
			go func() {
				defer rw.Done()
				buf := make([]byte, 1500)
				seen := 0
				for seen < s.obs {
					_ = s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
					k, err := s.c.Read(buf)
					if err != nil {
						return
					}
					if k < 4 {
						continue
					}
					if buf[0]>>4&0x3 == byte(message.Confirmable) {
						ack := []byte{0x60, 0, buf[2], buf[3]}
						_, _ = s.c.Write(ack)
					}
					if buf[1] == byte(codes.Content) {
						seen++
						now := time.Now().UnixNano()
						for {
							l := last.Load()
							if now <= l || last.CompareAndSwap(l, now) {
								break
							}
						}
					}
				}
				got.Add(int64(seen))
			}()
		}
		rw.Wait()
		fmt.Printf("done %d %d\n", got.Load(), last.Load())
	}
	return nil
}

func coapWithTimeout(f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f(ctx)
}

func coapFmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}

// coapRow is one load run with its rounds.
type coapRow struct {
	name string
	res  []genResult
}

// printCoAPTable prints the medians, each beside the echo (first row) and
// the bare go-coap server (second row).
func printCoAPTable(_ string, rows []coapRow, b *bridge.Broker) error {
	// Ratios are taken within each round (same moment, same machine state),
	// then the median over rounds; the machine is noisy between rounds.
	ratio := func(i, base int) (median, lowest float64) {
		var rs []float64
		for k := range rows[i].res {
			rs = append(rs, rows[i].res[k].rps()/rows[base].res[k].rps())
		}
		slices.Sort(rs)
		return rs[len(rs)/2], rs[0]
	}
	type cells struct{ echo, echoMin, bare, bareMin float64 }
	rc := make([]cells, len(rows))
	for i := range rows {
		rc[i].echo, rc[i].echoMin = ratio(i, 0)
		rc[i].bare, rc[i].bareMin = ratio(i, 1)
	}
	med := make([]genResult, len(rows))
	var delivered, acked []int64
	for i, r := range rows {
		var d, a int64
		for _, x := range r.res {
			d += x.delivered
			a += x.OK
		}
		delivered, acked = append(delivered, d), append(acked, a)
		sorted := slices.Clone(r.res)
		slices.SortFunc(sorted, func(a, b genResult) int { return int(a.rps() - b.rps()) })
		med[i] = sorted[len(sorted)/2]
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run	req/s	vs echo (min)	vs bare go-coap (min)	p50	p99	retransmits	non-2.04	server CPU	generator CPU	MQTT delivered / acked, all rounds	")
	for i, r := range med {
		deliv := "-"
		if r.counted {
			deliv = fmt.Sprintf("%d / %d", delivered[i], acked[i])
			if delivered[i] >= acked[i] {
				deliv += " (no loss)"
			} else {
				deliv += fmt.Sprintf(" (LOST %d)", acked[i]-delivered[i])
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f (%.2f)\t%.2f× (%.2f×)\t%s\t%s\t%d\t%d\t%.0f%%\t%.0f%%\t%s\t\n", rows[i].name, r.rps(),
			rc[i].echo, rc[i].echoMin, rc[i].bare, rc[i].bareMin, coapFmtDur(r.P50), coapFmtDur(r.P99), r.Retrans, r.Errors,
			100*r.serverCPU, 100*r.genCPU, deliv)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st := b.Stats(); st.MessagesDropped > 0 {
		fmt.Printf("broker dropped %d messages (mochi's QoS 0 outbound queue to the counting subscriber)\n", st.MessagesDropped)
	}
	return nil
}

// udpDrops reads the drop counter of the UDP socket bound to addr from
// /proc/net/udp (Linux); -1 when unknown.
func udpDrops(addr string) int64 {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	p, _ := strconv.Atoi(port)
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return -1
	}
	want := fmt.Sprintf(":%04X", p)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 12 && strings.HasSuffix(f[1], want) {
			n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			return n
		}
	}
	return -1
}
