package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// addStorage attaches the persistent store: retained messages, sessions,
// subscriptions and QoS 1/2 in-flight messages survive a restart. Pebble
// with synced writes was chosen by measurement (docs/storage.md): every
// write is on disk before the publish that caused it is acknowledged.
func addStorage(srv *mqtt.Server, dir string, log *slog.Logger) error {
	path := filepath.Join(dir, "mqtt")
	if err := os.MkdirAll(path, 0o750); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	db, err := pebble.Open(path, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return fmt.Errorf("storage at %s: %w", path, err)
	}
	if err := srv.AddHook(&store{db: db}, nil); err != nil {
		_ = db.Close()
		return err
	}
	return nil
}

// store is our own pebble storage hook. mochi ships one, but v2.7.9's never
// closes the iterators it reads the store with at start: pebble then keeps
// the files of that moment alive for the life of the process and leaves a
// goroutine running after Close. This one also skips the $SYS snapshot mochi
// writes (and syncs) every second, which nothing reads back here.
//
// Keys and values are mochi's (storage.Client, storage.Message, ...), so a
// store written by mochi's hook reads back unchanged.
type store struct {
	mqtt.HookBase
	db *pebble.DB
}

func (s *store) ID() string { return "storage" }

func (s *store) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages, mqtt.StoredSubscriptions:
		return true
	}
	return false
}

// Stop closes the database, flushing what is buffered.
func (s *store) Stop() error { return s.db.Close() }

func clientKey(id string) string { return storage.ClientKey + "_" + id }
func subscriptionKey(id, filter string) string {
	return storage.SubscriptionKey + "_" + id + ":" + filter
}
func retainedKey(topic string) string { return storage.RetainedKey + "_" + topic }
func inflightKey(cl *mqtt.Client, pk packets.Packet) string {
	return storage.InflightKey + "_" + cl.ID + ":" + pk.FormatID()
}

func (s *store) set(key string, v storage.Serializable) {
	data, err := v.MarshalBinary()
	if err == nil {
		err = s.db.Set([]byte(key), data, pebble.Sync)
	}
	if err != nil {
		s.Log.Error("storage write failed", "key", key, "error", err)
	}
}

func (s *store) del(key string) {
	if err := s.db.Delete([]byte(key), pebble.Sync); err != nil {
		s.Log.Error("storage delete failed", "key", key, "error", err)
	}
}

func (s *store) saveClient(cl *mqtt.Client) {
	p := cl.Properties.Props.Copy(false)
	s.set(clientKey(cl.ID), &storage.Client{
		ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: p.SessionExpiryInterval, AuthenticationMethod: p.AuthenticationMethod,
			AuthenticationData: p.AuthenticationData, RequestProblemInfo: p.RequestProblemInfo,
			RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
			TopicAliasMaximum: p.TopicAliasMaximum, User: p.User, MaximumPacketSize: p.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

func (s *store) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { s.saveClient(cl) }
func (s *store) OnWillSent(cl *mqtt.Client, _ packets.Packet)           { s.saveClient(cl) }

func (s *store) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		s.del(clientKey(cl.ID))
		return
	}
	s.saveClient(cl)
}

func (s *store) OnClientExpired(cl *mqtt.Client) { s.del(clientKey(cl.ID)) }

func (s *store) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue // refused subscriptions are not part of the session
		}
		s.set(subscriptionKey(cl.ID, f.Filter), &storage.Subscription{
			ID: subscriptionKey(cl.ID, f.Filter), T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i],
			Filter: f.Filter, Identifier: f.Identifier, NoLocal: f.NoLocal,
			RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		})
	}
}

func (s *store) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		s.del(subscriptionKey(cl.ID, f.Filter))
	}
}

func message(key, kind string, cl *mqtt.Client, pk packets.Packet) *storage.Message {
	p := pk.Properties.Copy(false)
	return &storage.Message{
		ID: key, T: kind, Client: cl.ID, Origin: pk.Origin, PacketID: pk.PacketID, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Created: pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat: p.PayloadFormat, MessageExpiryInterval: p.MessageExpiryInterval,
			ContentType: p.ContentType, ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
			SubscriptionIdentifier: p.SubscriptionIdentifier, TopicAlias: p.TopicAlias, User: p.User,
		},
	}
}

func (s *store) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 {
		s.del(retainedKey(pk.TopicName))
		return
	}
	s.set(retainedKey(pk.TopicName), message(retainedKey(pk.TopicName), storage.RetainedKey, cl, pk))
}

func (s *store) OnRetainedExpired(topic string) { s.del(retainedKey(topic)) }

// OnQosPublish records an in-flight packet. A PUBACK that mochi notes while
// acknowledging a client's QoS 1 PUBLISH is forgotten again before the call
// returns: storing it would cost two synced writes per publish for nothing.
func (s *store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if pk.FixedHeader.Type == packets.Puback {
		return
	}
	m := message(inflightKey(cl, pk), storage.InflightKey, cl, pk)
	m.Sent = sent
	s.set(m.ID, m)
}

func (s *store) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Puback {
		return // never stored, see OnQosPublish
	}
	s.del(inflightKey(cl, pk))
}
func (s *store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { s.del(inflightKey(cl, pk)) }

// scan decodes every value under prefix, closing its iterator.
func scan[T any, P interface {
	*T
	UnmarshalBinary([]byte) error
}](db *pebble.DB, log *slog.Logger, prefix string) (out []T, err error) {
	lower := []byte(prefix + "_")
	upper := []byte(prefix + "`") // '`' follows '_'
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for it.First(); it.Valid(); it.Next() {
		var v T
		if err := P(&v).UnmarshalBinary(it.Value()); err != nil {
			log.Warn("skipping unreadable stored record", "key", string(it.Key()), "error", err)
			continue
		}
		out = append(out, v)
	}
	return out, it.Error()
}

func (s *store) StoredClients() ([]storage.Client, error) {
	return scan[storage.Client](s.db, s.Log, storage.ClientKey)
}

func (s *store) StoredSubscriptions() ([]storage.Subscription, error) {
	return scan[storage.Subscription](s.db, s.Log, storage.SubscriptionKey)
}

func (s *store) StoredRetainedMessages() ([]storage.Message, error) {
	return scan[storage.Message](s.db, s.Log, storage.RetainedKey)
}

func (s *store) StoredInflightMessages() ([]storage.Message, error) {
	return scan[storage.Message](s.db, s.Log, storage.InflightKey)
}

// pebbleLogger sends pebble's own messages to slog instead of the standard
// logger's stderr.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "storage")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "storage")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "storage")
	os.Exit(1)
}
