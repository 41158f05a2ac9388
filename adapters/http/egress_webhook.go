package httpadapter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/edgebridge/gateway/bridge/egress"
	"github.com/edgebridge/gateway/mapping"
)

// Headers of a `body: raw` webhook request. They mirror the headers the
// ingress side reads (SPEC §4).
const (
	// egressHeaderTopic carries the message's topic.
	egressHeaderTopic = "MQTT-Topic"
	// egressHeaderUserProperty carries one "key=value" user property per
	// header line.
	egressHeaderUserProperty = "MQTT-User-Property"
	// egressHeaderExpiry carries the remaining message expiry in seconds.
	egressHeaderExpiry = "MQTT-Message-Expiry"
	// egressHeaderIdempotency is the same for every attempt of one message
	// ("route-id"), so endpoints can drop duplicates.
	egressHeaderIdempotency = "Idempotency-Key"
)

// EgressDefaultMaxResponse bounds how much of an endpoint's answer is read
// (and published as the reverse reply) when EgressOptions.MaxResponse is 0.
const EgressDefaultMaxResponse = 1 << 20

// EgressOptions shape the HTTP client side (webhooks and polling sources).
// The zero value is usable.
type EgressOptions struct {
	// TLS configures https:// endpoints; nil uses the system roots.
	TLS *tls.Config
	// MaxResponse bounds the bytes read from an answer; 0 means
	// [EgressDefaultMaxResponse]. A longer answer is cut.
	MaxResponse int64
	// UserAgent is sent with every request; "" means "edgebridge-gateway".
	UserAgent string
}

func (o EgressOptions) client(maxConns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = o.TLS
	tr.MaxIdleConnsPerHost = max(maxConns, 2)
	return &http.Client{
		Transport: tr,
		// A redirect is the endpoint's answer: a webhook URL that moved is a
		// configuration to fix, not something to follow with a POST body.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (o EgressOptions) maxResponse() int64 {
	if o.MaxResponse > 0 {
		return o.MaxResponse
	}
	return EgressDefaultMaxResponse
}

func (o EgressOptions) userAgent() string {
	if o.UserAgent != "" {
		return o.UserAgent
	}
	return "edgebridge-gateway"
}

// webhookDeliverer sends the messages of one http_out route.
type webhookDeliverer struct {
	route  string
	out    *mapping.HTTPOut
	opts   EgressOptions
	client *http.Client
}

// EgressWebhook returns the [egress.Deliverer] of an http_out route: each
// message becomes one request to the route's URL (filled with the captured
// variables), with the configured headers, and as body either the payload
// (`body: raw`; the topic, content type, user properties and expiry as
// headers) or the JSON envelope of SPEC §8 (`body: envelope`). A 2xx
// answer is success; 408, 425, 429 and 5xx are retried; other answers
// (3xx, 4xx) are permanent. Close releases idle connections.
func EgressWebhook(r *mapping.Route, opts EgressOptions) (egress.Deliverer, error) {
	if r == nil || r.HTTPOut == nil {
		return nil, errors.New("http egress: route has no http_out")
	}
	return &webhookDeliverer{route: r.Name, out: r.HTTPOut, opts: opts, client: opts.client(r.Delivery.MaxInFlight)}, nil
}

// Deliver implements [egress.Deliverer].
func (w *webhookDeliverer) Deliver(ctx context.Context, d *egress.Delivery) (egress.Response, error) {
	u, err := w.out.URL.Expand(d.Vars)
	if err != nil {
		return egress.Response{}, egress.Permanent(fmt.Errorf("url: %w", err))
	}
	m := &d.Message
	var body []byte
	if w.out.Body == mapping.BodyEnvelope {
		body = appendEnvelope(make([]byte, 0, len(m.Payload)+128), m)
	} else {
		body = m.Payload
	}
	var rd io.Reader
	if w.out.Method != http.MethodGet || len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, w.out.Method, u, rd)
	if err != nil {
		return egress.Response{}, egress.Permanent(err)
	}
	h := req.Header
	h.Set("User-Agent", w.opts.userAgent())
	h.Set(egressHeaderIdempotency, w.route+"-"+strconv.FormatUint(d.ID, 10))
	if w.out.Body == mapping.BodyEnvelope {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set(egressHeaderTopic, m.Topic)
		if m.ContentType != "" {
			h.Set("Content-Type", m.ContentType)
		}
		for k, v := range m.UserProperties {
			h.Add(egressHeaderUserProperty, k+"="+v)
		}
		if m.Expiry > 0 {
			left := m.Expiry - time.Since(m.Time)
			h.Set(egressHeaderExpiry, strconv.FormatInt(int64(max(left/time.Second, 1)), 10))
		}
	}
	for _, hd := range w.out.Headers {
		v, err := hd.Value.Expand(d.Vars)
		if err != nil {
			return egress.Response{}, egress.Permanent(fmt.Errorf("header %s: %w", hd.Name, err))
		}
		h.Set(hd.Name, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return egress.Response{}, err // connection error or timeout: retried
	}
	defer func() { _ = resp.Body.Close() }()
	payload, rerr := io.ReadAll(io.LimitReader(resp.Body, w.opts.maxResponse()))
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	out := egress.Response{Status: strconv.Itoa(resp.StatusCode), ContentType: resp.Header.Get("Content-Type"), Payload: payload}
	return webhookClassify(out, resp.StatusCode, rerr)
}

// webhookClassify turns an HTTP status into the engine's classes.
func webhookClassify(out egress.Response, code int, readErr error) (egress.Response, error) {
	switch {
	case code >= 200 && code < 300:
		if readErr != nil {
			// The endpoint took the message; only its answer is cut.
			out.Payload = nil
		}
		return out, nil
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return out, &egress.StatusError{Response: out, Retryable: true}
	default:
		return out, &egress.StatusError{Response: out}
	}
}

// Close releases the deliverer's idle connections.
func (w *webhookDeliverer) Close() { w.client.CloseIdleConnections() }
