package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Config is everything the broker needs. The zero value is a broker with no
// listeners, no storage and no anonymous access.
type Config struct {
	// Listeners are the MQTT listeners; several of each kind are allowed.
	Listeners []Listener
	// DataDir holds the persistent store; empty means memory only.
	DataDir string
	// AllowAnonymous lets MQTT clients connect without credentials.
	AllowAnonymous bool
	// MaxPacketSize caps an MQTT packet in bytes; 0 means no limit.
	MaxPacketSize uint32
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is the embedded MQTT broker and the seam adapters publish and
// subscribe through. Create it with New, then Start; all methods are safe for
// concurrent use.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	srv    *mqtt.Server
	client *mqtt.Client // the gateway's own inline MQTT 5 client

	mu      sync.Mutex
	subs    map[int]*Subscription
	nextSub int
	addrs   []Addr

	state atomic.Int32 // 0 new, 1 running, 2 stopped

	requests requests // request/response over MQTT (request.go)
}

// Addr is the bound address of one listener.
type Addr struct {
	Kind    string // tcp, tls, ws or wss
	Address string // host:port as bound
}

const (
	stateNew int32 = iota
	stateRunning
	stateStopped
)

// inlineClientID is the client id of the gateway's own publishes, as seen by
// mochi's hooks and in the Origin of messages.
const inlineClientID = "$gateway"

// New checks cfg and prepares a broker; nothing is bound until Start.
func New(cfg Config) (*Broker, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	// Acknowledgements must not echo the publisher's user properties back
	// (mochi does by default, paho clients then see foreign properties).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(quietInfo{log.Handler()}).With("component", "mqtt"),
		InlineClient: true, // needed for inline subscriptions
	})
	client := srv.NewClient(nil, "local", inlineClientID, true)
	client.Properties.ProtocolVersion = 5
	b := &Broker{cfg: cfg, log: log, srv: srv, client: client, subs: map[int]*Subscription{}}
	if err := srv.AddHook(&accessHook{allowAnonymous: cfg.AllowAnonymous}, nil); err != nil {
		return nil, err
	}
	if cfg.DataDir != "" {
		if err := addStorage(srv, cfg.DataDir, log.With("component", "storage")); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Start binds every listener, restores the persistent store and starts
// serving. It returns once clients can connect. Listener addresses of ":0"
// are resolved; see Addrs.
func (b *Broker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !b.state.CompareAndSwap(stateNew, stateRunning) {
		return errors.New("broker: Start called twice")
	}
	for i, l := range b.cfg.Listeners {
		id := fmt.Sprintf("%s%d", l.kind(), i)
		ln, err := l.bind(id)
		if err == nil {
			err = b.srv.AddListener(ln)
		}
		if err != nil {
			b.state.Store(stateStopped)
			_ = b.srv.Close()
			return err
		}
		b.addrs = append(b.addrs, Addr{Kind: l.kind(), Address: ln.Address()})
	}
	if err := b.srv.Serve(); err != nil {
		b.state.Store(stateStopped)
		_ = b.srv.Close()
		return fmt.Errorf("starting broker: %w", err)
	}
	return nil
}

// Addrs lists the bound listener addresses, in the order of Config.Listeners.
func (b *Broker) Addrs() []Addr { return append([]Addr(nil), b.addrs...) }

// Shutdown closes every subscription, disconnects MQTT clients, closes the
// listeners and flushes and closes storage. It is idempotent.
func (b *Broker) Shutdown(ctx context.Context) error {
	if b.state.Swap(stateStopped) != stateRunning {
		return nil
	}
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for _, s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	done := make(chan error, 1)
	go func() { done <- b.srv.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running reports whether the broker is started and not shut down.
func (b *Broker) Running() bool { return b.state.Load() == stateRunning }

// Stats are counters of the broker for metrics.
type Stats struct {
	ClientsConnected int64
	Subscriptions    int64
	Retained         int64
	Inflight         int64
	MessagesReceived int64
	MessagesSent     int64
	MessagesDropped  int64
	InflightDropped  int64 // QoS 1/2 messages dropped for a subscriber over its in-flight limit
	LateReplies      int64 // request/response replies that came after their request ended
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	i := b.srv.Info
	return Stats{
		ClientsConnected: atomic.LoadInt64(&i.ClientsConnected),
		Subscriptions:    atomic.LoadInt64(&i.Subscriptions),
		Retained:         atomic.LoadInt64(&i.Retained),
		Inflight:         atomic.LoadInt64(&i.Inflight),
		MessagesReceived: atomic.LoadInt64(&i.MessagesReceived),
		MessagesSent:     atomic.LoadInt64(&i.MessagesSent),
		MessagesDropped:  atomic.LoadInt64(&i.MessagesDropped),
		InflightDropped:  atomic.LoadInt64(&i.InflightDropped),
		LateReplies:      b.requests.late.Load(),
	}
}

// Publish hands m to the broker. It returns once the broker has taken the
// message: delivered to the queues of connected subscribers, recorded as
// in-flight for QoS 1/2 subscribers (persistent sessions included) and, if
// m.Retain, stored as the retained message; with storage on, all of that is
// written to disk before Publish returns. A retained message with an empty
// payload clears the topic's retained message [MQTT-3.3.1-6].
func (b *Broker) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !b.Running() {
		return ErrClosed
	}
	if err := ValidateTopic(m.Topic); err != nil {
		return err
	}
	if m.QoS > 2 {
		return fmt.Errorf("%w: %d (must be 0, 1 or 2)", ErrInvalidQoS, m.QoS)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     bytes.Clone(m.Payload),
		Properties: packets.Properties{
			ContentType:     m.ContentType,
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: bytes.Clone(m.CorrelationData),
		},
	}
	if pk.Payload == nil {
		pk.Payload = []byte{}
	}
	if m.QoS > 0 {
		// mochi validates that QoS>0 publishes carry a packet id (and QoS 0
		// ones do not); the inline client never waits for acknowledgements.
		pk.PacketID = 1
	}
	if m.Expiry > 0 {
		pk.Properties.MessageExpiryInterval = uint32(min(m.Expiry/time.Second, math.MaxUint32))
	}
	for k, v := range m.UserProperties {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: k, Val: v})
	}
	if err := b.srv.InjectPacket(b.client, pk); err != nil {
		var code packets.Code
		if errors.As(err, &code) && code.Code == packets.ErrTopicNameInvalid.Code {
			return &TopicError{m.Topic, "invalid topic name"}
		}
		return fmt.Errorf("%w: %v", ErrOverloaded, err)
	}
	return nil
}

// Retained returns the retained messages matching filter.
func (b *Broker) Retained(filter string) ([]Message, error) {
	if !b.Running() {
		return nil, ErrClosed
	}
	if err := ValidateFilter(filter); err != nil {
		return nil, err
	}
	pks := b.srv.Topics.Messages(filter)
	out := make([]Message, 0, len(pks))
	now := time.Now()
	for _, pk := range pks {
		if pk.Expiry > 0 && pk.Expiry <= now.Unix() {
			continue // expired, not yet swept by mochi's once-a-second loop
		}
		m := fromPacket(pk, now)
		m.Retain = true
		out = append(out, m)
	}
	return out, nil
}

// fromPacket converts a mochi packet into a Message, sharing the payload.
func fromPacket(pk packets.Packet, now time.Time) Message {
	m := Message{
		Topic:           pk.TopicName,
		Payload:         pk.Payload,
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		ContentType:     pk.Properties.ContentType,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: pk.Properties.CorrelationData,
		Time:            now,
	}
	if pk.Created > 0 && pk.FixedHeader.Retain {
		m.Time = time.Unix(pk.Created, 0)
	}
	if pk.Properties.MessageExpiryInterval > 0 && pk.Expiry > 0 {
		if left := time.Until(time.Unix(pk.Expiry, 0)); left > 0 {
			m.Expiry = left.Round(time.Second)
		}
	}
	if len(pk.Properties.User) > 0 {
		m.UserProperties = make(map[string]string, len(pk.Properties.User))
		for _, u := range pk.Properties.User {
			m.UserProperties[u.Key] = u.Val
		}
	}
	return m
}

// accessHook decides who may connect. Until users and ACLs exist, the only
// choice is anonymous access on or off (with it off nobody can connect,
// which is what "safe until configured" means).
type accessHook struct {
	mqtt.HookBase
	allowAnonymous bool
}

func (h *accessHook) ID() string { return "gateway-access" }

func (h *accessHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *accessHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool {
	return h.allowAnonymous
}

func (h *accessHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// quietInfo turns mochi's info lines (hooks added, listeners attached, start
// and stop banners, which the gateway logs in its own words) into debug
// lines; warnings and errors pass unchanged.
type quietInfo struct{ slog.Handler }

func (q quietInfo) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return q.Handler.Enabled(ctx, l)
}

func (q quietInfo) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietInfo) WithAttrs(as []slog.Attr) slog.Handler { return quietInfo{q.Handler.WithAttrs(as)} }
func (q quietInfo) WithGroup(n string) slog.Handler       { return quietInfo{q.Handler.WithGroup(n)} }
