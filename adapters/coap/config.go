package coapadapter

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything the CoAP adapter needs. Zero values mean the defaults
// documented on each field; an empty transport address turns it off.
type Config struct {
	// UDP is the plain CoAP/UDP listen address ("" = off, ":0" = any port).
	UDP string
	// DTLS turns on CoAP over DTLS when non-nil.
	DTLS *DTLSConfig
	// TCP turns on CoAP over TCP (RFC 8323), optionally TLS, when non-nil.
	TCP *TCPConfig

	// MaxPayload caps a request or notification body in bytes, also across
	// block-wise transfers; larger requests get 4.13 with Size1. 0 = 256 KiB.
	MaxPayload int
	// MaxObservers caps the observations of all peers together; more get
	// 5.03 with Max-Age. 0 = 10000.
	MaxObservers int
	// ObserverQueue is the number of notifications waiting per observer;
	// older ones are dropped (and counted) when it overflows. 0 = 64.
	ObserverQueue int
	// IdleTimeout closes UDP and DTLS peers (and TCP connections) without
	// traffic and without observations for this long. 0 = 2 minutes; use a
	// negative value to turn it off.
	IdleTimeout time.Duration
	// MaxPeers caps the UDP peers (source address and port) tracked at once;
	// datagrams from new peers above it are answered 5.03 with Max-Age.
	// 0 = 100000.
	MaxPeers int
	// PeerRate limits requests per second of one peer (token bucket with a
	// burst of the same size); more get 4.29 with Max-Age. 0 = no limit.
	PeerRate float64
	// AckTimeout and MaxRetransmit are the RFC 7252 §4.8 transmission
	// parameters for confirmable notifications. 0 = 2s and 4.
	AckTimeout    time.Duration
	MaxRetransmit int
	// PublishTimeout bounds one publish into the broker; when it passes
	// the request gets 5.04. 0 = 10 s.
	PublishTimeout time.Duration

	// AllowAnonymous lets requests without a DTLS identity (plain UDP, TCP,
	// unauthenticated DTLS) through. When false they get 4.01, except for
	// /.well-known/core.
	AllowAnonymous bool
	// Authorize decides whether identity may do action ("publish",
	// "subscribe" or "read") on topic; false gets 4.03. nil allows all.
	// identity is "" for anonymous peers.
	Authorize func(identity, action, topic string) bool

	// ExtraLinks returns extra RFC 6690 link-values for /.well-known/core,
	// each one complete ("</s/t>;rt=\"temperature\";ct=50"). It is called
	// on every discovery request, so it may change at run time.
	ExtraLinks func() []string

	// Registry receives the adapter's metrics; nil uses a private one.
	Registry *prometheus.Registry
	// Logger receives the adapter's logs; nil discards them.
	Logger *slog.Logger

	// Knobs for tests: the CON keepalive of RFC 7641 §4.5 (0 = 24 h) and
	// the Observe value before a registration's first response (0 = 1).
	conKeepalive time.Duration
	initialSeq   uint32
}

// DTLSConfig is CoAP over DTLS 1.2 (pion/dtls v3). At least one of
// Certificates or PSK is needed.
type DTLSConfig struct {
	// Address is the listen address (":0" = any port).
	Address string
	// Certificates are the server's certificates (ECDSA for the
	// TLS_ECDHE_ECDSA_* suites constrained devices use).
	Certificates []tls.Certificate
	// ClientCAs verifies client certificates; a verified client's
	// certificate CN becomes its identity.
	ClientCAs *x509.CertPool
	// PSK maps a PSK identity to its key; the identity becomes the peer's
	// identity.
	PSK map[string][]byte
}

// TCPConfig is CoAP over TCP (RFC 8323); with TLS set it is CoAP over TLS.
type TCPConfig struct {
	// Address is the listen address (":0" = any port).
	Address string
	// TLS turns on TLS when non-nil.
	TLS *tls.Config
}

// Defaults of Config.
const (
	DefaultMaxPayload     = 256 << 10
	DefaultMaxObservers   = 10000
	DefaultObserverQueue  = 64
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxPeers       = 100000
	DefaultAckTimeout     = 2 * time.Second
	DefaultMaxRetransmit  = 4
	DefaultPublishTimeout = 10 * time.Second
)

// withDefaults returns cfg with zero values replaced by the defaults.
func (cfg Config) withDefaults() Config {
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.MaxObservers == 0 {
		cfg.MaxObservers = DefaultMaxObservers
	}
	if cfg.ObserverQueue == 0 {
		cfg.ObserverQueue = DefaultObserverQueue
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxPeers == 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.MaxRetransmit == 0 {
		cfg.MaxRetransmit = DefaultMaxRetransmit
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.conKeepalive == 0 {
		cfg.conKeepalive = 24 * time.Hour
	}
	if cfg.initialSeq == 0 {
		cfg.initialSeq = 1
	}
	return cfg
}

// Validate reports every problem of cfg at once.
func (cfg Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.MaxPayload < 0 {
		add("coap: max payload %d must not be negative", cfg.MaxPayload)
	}
	if cfg.MaxObservers < 0 || cfg.ObserverQueue < 0 || cfg.MaxPeers < 0 || cfg.MaxRetransmit < 0 {
		add("coap: limits must not be negative")
	}
	if cfg.PeerRate < 0 {
		add("coap: peer rate %v must not be negative", cfg.PeerRate)
	}
	if d := cfg.DTLS; d != nil {
		if d.Address == "" {
			add("coap: dtls needs an address")
		}
		if len(d.Certificates) == 0 && len(d.PSK) == 0 {
			add("coap: dtls needs certificates or at least one psk")
		}
		for id, key := range d.PSK {
			if len(key) == 0 {
				add("coap: dtls psk %q has an empty key", id)
			}
		}
	}
	if t := cfg.TCP; t != nil && t.Address == "" {
		add("coap: tcp needs an address")
	}
	return errors.Join(errs...)
}

// maxTransmitWait is RFC 7252 §4.8.2 MAX_TRANSMIT_WAIT for our parameters:
// how long a confirmable notification may wait for its acknowledgement.
func (cfg Config) maxTransmitWait() time.Duration {
	return time.Duration(float64(cfg.AckTimeout) * float64(int(1)<<(cfg.MaxRetransmit+1)-1) * 1.5)
}
