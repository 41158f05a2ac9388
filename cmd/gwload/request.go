package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/eclipse/paho.golang/paho"

	httpadapter "github.com/edgebridge/gateway/adapters/http"
	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

func init() {
	register("request", "HTTP request/response over MQTT 5 (reply route + paho responder) vs a plain HTTP publish, latency p50/p99", runRequest)
}

// runRequest measures the round trip HTTP → MQTT request → device reply →
// HTTP response, beside a plain publish route (204 once the broker holds
// the message) at the same concurrency: the difference is what waiting for
// a device costs.
func runRequest(args []string) error {
	fs := flag.NewFlagSet("request", flag.ContinueOnError)
	clients := fs.Int("c", 8, "concurrent HTTP clients")
	n := fs.Int("n", 2000, "requests per client")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	b, err := bridge.New(bridge.Config{Listeners: []bridge.Listener{{Address: "127.0.0.1:0"}}, AllowAnonymous: true})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = b.Shutdown(context.Background()) }()
	qos := 1
	table, err := mapping.Compile([]mapping.RouteSpec{
		{Name: "call", HTTP: &mapping.HTTPSpec{Path: "/call/{id}", Methods: []string{"POST"}}, Topic: "calls/{id}",
			QoS: &qos, Reply: &mapping.ReplySpec{Timeout: mapping.Duration(5 * time.Second)}},
		{Name: "plain", HTTP: &mapping.HTTPSpec{Path: "/plain/{id}", Methods: []string{"POST"}}, Topic: "plain/{id}", QoS: &qos},
	})
	if err != nil {
		return err
	}
	h, err := httpadapter.New(httpadapter.Config{Address: "127.0.0.1:0"}, b)
	if err != nil {
		return err
	}
	if err := h.MountTable(table); err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = h.Shutdown(context.Background()) }()

	stopResponder, err := startResponder(b.Addrs()[0].Address)
	if err != nil {
		return err
	}
	defer stopResponder()

	base := "http://" + h.Addr()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients}}
	tw := tabwriter.NewWriter(os.Stdout, 2, 2, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "path\trequests\treq/s\tp50\tp99\terrors\t\n")
	var p99s [2]time.Duration
	for i, path := range []string{"/plain/", "/call/"} {
		lat, errs, elapsed := drive(client, base+path, *clients, *n)
		slices.Sort(lat)
		p50, p99 := pct(lat, 0.50), pct(lat, 0.99)
		p99s[i] = p99
		fmt.Fprintf(tw, "POST %s{id}\t%d\t%.0f\t%v\t%v\t%d\t\n", path, len(lat), float64(len(lat))/elapsed.Seconds(),
			p50.Round(time.Microsecond), p99.Round(time.Microsecond), errs)
	}
	_ = tw.Flush()
	fmt.Printf("request/response p99 = %.2f× the plain publish p99 (%d clients × %d requests)\n",
		float64(p99s[1])/float64(p99s[0]), *clients, *n)
	return nil
}

// drive runs clients × n POSTs to url+i and returns each latency.
func drive(client *http.Client, url string, clients, n int) ([]time.Duration, int, time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, n)
			bad := 0
			for i := range n {
				t0 := time.Now()
				resp, err := client.Post(fmt.Sprintf("%s%d-%d", url, c, i), "text/plain", strings.NewReader("ping"))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode >= 300 {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, errs, time.Since(start)
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// startResponder connects an MQTT 5 device that answers every request on
// calls/+ on its Response Topic with the Correlation Data.
func startResponder(addr string) (stop func(), err error) {
	cm, err := dialMQTT(addr, "gwload-responder", 0)
	if err != nil {
		return nil, err
	}
	cm.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = cm.Publish(ctx, &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: []byte("pong"),
				Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData}})
		}()
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "calls/+", QoS: 1}}}); err != nil {
		return nil, err
	}
	return func() { _ = cm.Disconnect(&paho.Disconnect{}) }, nil
}
