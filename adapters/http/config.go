package httpadapter

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultMaxPayload    = 256 << 10
	DefaultMaxSSEStreams = 10000
	DefaultSSEHeartbeat  = 15 * time.Second
	DefaultSSEQueue      = 256
)

// Server timeouts. Slow or huge request headers are cut off by
// ReadHeaderTimeout and MaxHeaderBytes; bodies by ReadTimeout. SSE streams
// clear the read deadline and set a write deadline per write instead.
// They are variables only so that tests can shorten them.
var (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 60 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	// sseWriteWait bounds one write to an SSE client: a client that does
	// not read for this long is disconnected.
	sseWriteWait = 10 * time.Second
)

const (
	maxHeaderBytes = 64 << 10
	// retryAfter is the Retry-After value (seconds) of 503 answers.
	retryAfter = "1"
	// maxBatchItems bounds the envelopes of one POST /publish.
	maxBatchItems = 1000
)

// RouteMounter adds routes to the adapter's router, for example the custom
// routes of the mapping layer. It runs inside the adapter's middleware stack
// (recovery, CORS, rate limit) and before the generic routes are added, so a
// mounted route may not claim /topics/* or /publish when Generic is on. chi
// panics on a bad or duplicate pattern; New and Remount turn that panic into
// an error.
type RouteMounter func(r chi.Router)

// Config shapes the HTTP adapter. The zero value (plus an Address) is a
// working plain-HTTP server with the defaults below.
type Config struct {
	// Address is the listen address (host:port); ":0" picks a free port.
	Address string
	// TLS turns on HTTPS (HTTP/2 included) when set.
	TLS *tls.Config
	// CORSOrigins lists the origins allowed to call the API from a browser
	// ("*" allows all, "https://*.example" one wildcard); empty = no CORS.
	CORSOrigins []string
	// MaxPayload caps a publish body in bytes; 0 means 256 KiB. A
	// POST /publish batch body may be 4× as large (at least 1 MiB); each
	// item's payload is capped at MaxPayload.
	MaxPayload int64
	// RatePerClient is the number of requests per second one client IP may
	// make to the API routes; 0 turns rate limiting off.
	RatePerClient int
	// MaxSSEStreams caps concurrently open SSE streams; 0 means 10000.
	MaxSSEStreams int
	// Generic turns on the generic routes /topics/* and /publish.
	Generic bool
	// Ready reports readiness for /readyz; nil means always ready (as long
	// as the broker is running).
	Ready func() error
	// Registry receives the adapter's metrics, served at /metrics; nil means
	// a private registry.
	Registry *prometheus.Registry
	// Logger receives the adapter's logs; nil discards them.
	Logger *slog.Logger
	// SSEHeartbeat is the interval of heartbeat comments on SSE streams;
	// 0 means 15s.
	SSEHeartbeat time.Duration
	// SSEQueue is the number of messages one SSE stream may have waiting
	// for its client before further ones are dropped; 0 means 256.
	SSEQueue int
	// Routes returns the active mapping for GET /routes (encoded as JSON);
	// nil means an empty array.
	Routes func() any
	// Mount adds extra routes (see RouteMounter); nil adds none.
	Mount RouteMounter
}

// withDefaults returns cfg with zero fields set to their defaults, or an
// error naming every invalid field.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.MaxSSEStreams == 0 {
		cfg.MaxSSEStreams = DefaultMaxSSEStreams
	}
	if cfg.SSEHeartbeat == 0 {
		cfg.SSEHeartbeat = DefaultSSEHeartbeat
	}
	if cfg.SSEQueue == 0 {
		cfg.SSEQueue = DefaultSSEQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPayload < 0 {
		errs = append(errs, fmt.Errorf("http: max payload %d must not be negative", cfg.MaxPayload))
	}
	if cfg.RatePerClient < 0 {
		errs = append(errs, fmt.Errorf("http: rate per client %d must not be negative", cfg.RatePerClient))
	}
	if cfg.MaxSSEStreams < 0 {
		errs = append(errs, fmt.Errorf("http: max SSE streams %d must not be negative", cfg.MaxSSEStreams))
	}
	if cfg.SSEHeartbeat < 0 {
		errs = append(errs, fmt.Errorf("http: SSE heartbeat %v must not be negative", cfg.SSEHeartbeat))
	}
	if cfg.SSEQueue < 0 {
		errs = append(errs, fmt.Errorf("http: SSE queue %d must not be negative", cfg.SSEQueue))
	}
	return cfg, errors.Join(errs...)
}
