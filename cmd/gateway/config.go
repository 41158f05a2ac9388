package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgebridge/gateway/mapping"
)

// Config is the gateway's YAML config file (SPEC §3). Pointers tell "not
// written" (take the default) from "written empty" (turn off).
type Config struct {
	MQTT     MQTTConfig          `yaml:"mqtt"`
	HTTP     HTTPConfig          `yaml:"http"`
	CoAP     CoAPConfig          `yaml:"coap"`
	Storage  StorageConfig       `yaml:"storage"`
	Auth     AuthConfig          `yaml:"auth"`
	Limits   LimitsConfig        `yaml:"limits"`
	Log      LogConfig           `yaml:"log"`
	Routes   []mapping.RouteSpec `yaml:"routes"`
	Upstream []any               `yaml:"upstream" unsupported:"upstream bridging is not supported yet"`
}

// MQTTConfig lists the broker's listeners.
type MQTTConfig struct {
	Listeners []ListenerConfig `yaml:"listeners"`
}

// ListenerConfig is one MQTT listener.
type ListenerConfig struct {
	Address   string     `yaml:"address"`
	WebSocket bool       `yaml:"websocket"`
	TLS       *TLSConfig `yaml:"tls"`
}

// TLSConfig names PEM files; a client CA turns on mutual TLS.
type TLSConfig struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// HTTPConfig is the HTTP adapter's listener.
type HTTPConfig struct {
	Address *string    `yaml:"address"`
	TLS     *TLSConfig `yaml:"tls"`
	CORS    CORSConfig `yaml:"cors"`
	Generic *bool      `yaml:"generic"`
}

// CORSConfig lists the origins browsers may call the HTTP API from.
type CORSConfig struct {
	Origins []string `yaml:"origins"`
}

// CoAPConfig is the CoAP adapter's transports.
type CoAPConfig struct {
	UDP  *AddressConfig `yaml:"udp"`
	DTLS *DTLSConfig    `yaml:"dtls"`
	TCP  *CoAPTCPConfig `yaml:"tcp"`
}

// AddressConfig is a listener that needs only an address.
type AddressConfig struct {
	Address string `yaml:"address"`
}

// DTLSConfig is CoAP over DTLS: a certificate (ECDSA), pre-shared keys, or
// both.
type DTLSConfig struct {
	Address  string      `yaml:"address"`
	Cert     string      `yaml:"cert"`
	Key      string      `yaml:"key"`
	ClientCA string      `yaml:"client_ca"`
	PSK      []PSKConfig `yaml:"psk"`
}

// PSKConfig is one DTLS pre-shared key. The key is hex, given inline, in a
// file or in an environment variable.
type PSKConfig struct {
	Identity   string `yaml:"identity"`
	KeyHex     string `yaml:"key_hex"`
	KeyHexFile string `yaml:"key_hex_file"`
	KeyHexEnv  string `yaml:"key_hex_env"`
}

// CoAPTCPConfig is CoAP over TCP (RFC 8323), optionally with TLS.
type CoAPTCPConfig struct {
	Address string     `yaml:"address"`
	TLS     *TLSConfig `yaml:"tls"`
}

// StorageConfig is where persistent state lives; an empty path keeps
// everything in memory.
type StorageConfig struct {
	Path *string `yaml:"path"`
}

// AuthConfig is access control. Only anonymous access exists so far.
type AuthConfig struct {
	Anonymous *bool `yaml:"anonymous"`
	Users     []any `yaml:"users" unsupported:"users and ACLs are not supported yet (only auth.anonymous)"`
}

// LimitsConfig bounds what clients may do.
type LimitsConfig struct {
	MaxPayload       Size `yaml:"max_payload"`
	HTTPRPSPerClient int  `yaml:"http_rps_per_client"`
	MaxSSEStreams    int  `yaml:"max_sse_streams"`
	MaxObservers     int  `yaml:"max_observers"`
}

// LogConfig sets the log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Size is a byte count written as 1024, "256KiB" or "1MiB" (one parser for
// the whole file: the mapping's).
type Size = mapping.ByteSize

// defaults, as in SPEC §2: loopback only, safe until configured.
const (
	defaultMQTTAddr   = "127.0.0.1:1883"
	defaultWSAddr     = "127.0.0.1:8083"
	defaultHTTPAddr   = "127.0.0.1:8080"
	defaultCoAPAddr   = "127.0.0.1:5683"
	defaultDataDir    = "./data"
	defaultMaxPayload = 256 << 10
)

// Overrides are the flags and environment variables of SPEC §2; nil means
// not given.
type Overrides struct {
	MQTTAddr, WSAddr, HTTPAddr, CoAPAddr, DataDir, LogLevel, LogFormat *string
}

// envOverrides reads the GATEWAY_* environment variables.
func envOverrides(getenv func(string) (string, bool)) Overrides {
	get := func(k string) *string {
		if v, ok := getenv(k); ok {
			return &v
		}
		return nil
	}
	return Overrides{
		MQTTAddr: get("GATEWAY_MQTT_ADDR"), WSAddr: get("GATEWAY_WS_ADDR"),
		HTTPAddr: get("GATEWAY_HTTP_ADDR"), CoAPAddr: get("GATEWAY_COAP_ADDR"),
		DataDir: get("GATEWAY_DATA_DIR"), LogLevel: get("GATEWAY_LOG_LEVEL"),
		LogFormat: get("GATEWAY_LOG_FORMAT"),
	}
}

// merge lays o over base: o wins where set.
func (o Overrides) merge(base Overrides) Overrides {
	pick := func(a, b *string) *string {
		if a != nil {
			return a
		}
		return b
	}
	return Overrides{
		MQTTAddr: pick(o.MQTTAddr, base.MQTTAddr), WSAddr: pick(o.WSAddr, base.WSAddr),
		HTTPAddr: pick(o.HTTPAddr, base.HTTPAddr), CoAPAddr: pick(o.CoAPAddr, base.CoAPAddr),
		DataDir: pick(o.DataDir, base.DataDir), LogLevel: pick(o.LogLevel, base.LogLevel),
		LogFormat: pick(o.LogFormat, base.LogFormat),
	}
}

// applyDefaults fills what the file left out.
func (c *Config) applyDefaults() {
	if c.MQTT.Listeners == nil {
		c.MQTT.Listeners = []ListenerConfig{{Address: defaultMQTTAddr}, {Address: defaultWSAddr, WebSocket: true}}
	}
	if c.HTTP.Address == nil {
		c.HTTP.Address = ptr(defaultHTTPAddr)
	}
	if c.HTTP.Generic == nil {
		c.HTTP.Generic = ptr(true)
	}
	if c.CoAP.UDP == nil && c.CoAP.DTLS == nil && c.CoAP.TCP == nil {
		c.CoAP.UDP = &AddressConfig{Address: defaultCoAPAddr}
	}
	if c.Storage.Path == nil {
		c.Storage.Path = ptr(defaultDataDir)
	}
	if c.Auth.Anonymous == nil {
		c.Auth.Anonymous = ptr(true)
	}
	if c.Limits.MaxPayload == 0 {
		c.Limits.MaxPayload = defaultMaxPayload
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// applyOverrides lays flags and environment over the file. An address
// override replaces the first listener of its kind (adding one if there is
// none); an empty one removes every listener of that kind.
func (c *Config) applyOverrides(o Overrides) {
	if o.MQTTAddr != nil {
		c.MQTT.Listeners = overrideListener(c.MQTT.Listeners, *o.MQTTAddr, false)
	}
	if o.WSAddr != nil {
		c.MQTT.Listeners = overrideListener(c.MQTT.Listeners, *o.WSAddr, true)
	}
	if o.HTTPAddr != nil {
		c.HTTP.Address = o.HTTPAddr
	}
	if o.CoAPAddr != nil {
		c.CoAP.UDP = &AddressConfig{Address: *o.CoAPAddr}
	}
	if o.DataDir != nil {
		c.Storage.Path = o.DataDir
	}
	if o.LogLevel != nil {
		c.Log.Level = *o.LogLevel
	}
	if o.LogFormat != nil {
		c.Log.Format = *o.LogFormat
	}
}

func overrideListener(ls []ListenerConfig, addr string, ws bool) []ListenerConfig {
	out := make([]ListenerConfig, 0, len(ls)+1)
	replaced := false
	for _, l := range ls {
		if l.WebSocket != ws || l.TLS != nil {
			out = append(out, l)
			continue
		}
		if addr == "" || replaced {
			continue // empty: this kind is off; later ones of the kind stay off too
		}
		l.Address, replaced = addr, true
		out = append(out, l)
	}
	if !replaced && addr != "" {
		out = append(out, ListenerConfig{Address: addr, WebSocket: ws})
	}
	return out
}

// problemAt is a semantic problem found after decoding, at a field path.
type problemAt struct {
	path, msg string
	err       error // the error that names its own path, if any
}

// validate checks what decoding cannot; relative file names are resolved
// against dir (the config file's folder).
func (c *Config) validate(dir string) (probs []problemAt, table *mapping.Table) {
	add := func(path, format string, args ...any) {
		probs = append(probs, problemAt{path: path, msg: fmt.Sprintf(format, args...)})
	}
	checkAddr := func(path, addr string) {
		if addr == "" {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			add(path, "invalid address %q: want host:port or :port", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(path, "invalid port in %q", addr)
		}
	}
	checkTLS := func(path string, t *TLSConfig) {
		if t == nil {
			return
		}
		if t.Cert == "" || t.Key == "" {
			add(path, "tls needs both cert and key")
			return
		}
		if _, err := loadTLS(dir, t); err != nil {
			add(path, "%v", err)
		}
	}
	for i, l := range c.MQTT.Listeners {
		p := fmt.Sprintf("mqtt.listeners[%d]", i)
		if l.Address == "" {
			add(p+".address", "address is required")
		}
		checkAddr(p+".address", l.Address)
		checkTLS(p+".tls", l.TLS)
	}
	checkAddr("http.address", *c.HTTP.Address)
	checkTLS("http.tls", c.HTTP.TLS)
	for i, o := range c.HTTP.CORS.Origins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			add(fmt.Sprintf("http.cors.origins[%d]", i), "origin %q must be * or start with http:// or https://", o)
		}
	}
	if c.CoAP.UDP != nil {
		checkAddr("coap.udp.address", c.CoAP.UDP.Address)
	}
	if d := c.CoAP.DTLS; d != nil {
		if d.Address == "" {
			add("coap.dtls.address", "address is required")
		}
		checkAddr("coap.dtls.address", d.Address)
		if (d.Cert == "") != (d.Key == "") {
			add("coap.dtls", "dtls needs both cert and key, or neither (PSK only)")
		}
		if d.Cert == "" && len(d.PSK) == 0 {
			add("coap.dtls", "dtls needs a certificate (cert, key) or at least one psk")
		}
		if d.Cert != "" && d.Key != "" {
			if _, err := loadDTLSCert(dir, d); err != nil {
				add("coap.dtls.cert", "%v", err)
			}
		}
		seen := map[string]bool{}
		for i, p := range d.PSK {
			path := fmt.Sprintf("coap.dtls.psk[%d]", i)
			if p.Identity == "" {
				add(path+".identity", "identity is required")
			} else if seen[p.Identity] {
				add(path+".identity", "identity %q appears twice", p.Identity)
			}
			seen[p.Identity] = true
			if _, err := p.key(dir); err != nil {
				add(path, "%v", err)
			}
		}
	}
	if t := c.CoAP.TCP; t != nil {
		if t.Address == "" {
			add("coap.tcp.address", "address is required")
		}
		checkAddr("coap.tcp.address", t.Address)
		checkTLS("coap.tcp.tls", t.TLS)
	}
	if c.Limits.MaxPayload <= 0 || c.Limits.MaxPayload > 256<<20 {
		add("limits.max_payload", "max_payload must be between 1 byte and 256MiB")
	}
	for path, v := range map[string]int{"limits.http_rps_per_client": c.Limits.HTTPRPSPerClient,
		"limits.max_sse_streams": c.Limits.MaxSSEStreams, "limits.max_observers": c.Limits.MaxObservers} {
		if v < 0 {
			add(path, "must not be negative")
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		add("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add("log.format", "log format %q: want text or json", c.Log.Format)
	}
	probs = append(probs, egressProblems(c, dir)...)
	table, err := mapping.Compile(c.Routes)
	if err != nil {
		for _, e := range unjoin(err) {
			path := "routes"
			if fp, ok := e.(interface{ FieldPath() string }); ok {
				path = fp.FieldPath()
			}
			probs = append(probs, problemAt{path, e.Error(), e})
		}
	}
	return probs, table
}

// unjoin flattens errors.Join trees.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

func resolve(dir, name string) string {
	if filepath.IsAbs(name) || dir == "" {
		return name
	}
	return filepath.Join(dir, name)
}

// loadTLS builds a server tls.Config from PEM files; a client CA requires
// and verifies client certificates (mutual TLS).
func loadTLS(dir string, t *TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(resolve(dir, t.Cert), resolve(dir, t.Key))
	if err != nil {
		return nil, fmt.Errorf("loading certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCA != "" {
		pool, err := loadPool(resolve(dir, t.ClientCA))
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("loading client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s holds no PEM certificate", file)
	}
	return pool, nil
}

// loadDTLSCert loads the DTLS certificate, which must be ECDSA: the cipher
// suites constrained devices implement (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)
// need it.
func loadDTLSCert(dir string, d *DTLSConfig) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(resolve(dir, d.Cert), resolve(dir, d.Key))
	if err != nil {
		return cert, fmt.Errorf("loading certificate: %w", err)
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		return cert, fmt.Errorf("dtls certificate key must be ECDSA (constrained devices use ECDHE_ECDSA suites)")
	}
	return cert, nil
}

// key returns the PSK's bytes from whichever source is set (exactly one).
func (p PSKConfig) key(dir string) ([]byte, error) {
	n := 0
	for _, v := range []string{p.KeyHex, p.KeyHexFile, p.KeyHexEnv} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("give exactly one of key_hex, key_hex_file, key_hex_env")
	}
	txt := p.KeyHex
	switch {
	case p.KeyHexFile != "":
		b, err := os.ReadFile(resolve(dir, p.KeyHexFile))
		if err != nil {
			return nil, fmt.Errorf("key_hex_file: %w", err)
		}
		txt = strings.TrimSpace(string(b))
	case p.KeyHexEnv != "":
		v, ok := os.LookupEnv(p.KeyHexEnv)
		if !ok {
			return nil, fmt.Errorf("key_hex_env: environment variable %s is not set", p.KeyHexEnv)
		}
		txt = v
	}
	k, err := hex.DecodeString(txt)
	if err != nil || len(k) == 0 {
		return nil, fmt.Errorf("psk key is not hex")
	}
	return k, nil
}

func ptr[T any](v T) *T { return &v }
