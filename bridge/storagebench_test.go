//go:build storagebench

// The storage backend comparison behind docs/storage.md. It needs every
// backend linked, so it only builds with: go test -tags storagebench
// -run TestStorageBackends -v ./bridge/
package bridge_test

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

// mochi's badger hook never stops its value-log GC goroutine.
func init() {
	leakOptions = append(leakOptions, goleak.IgnoreTopFunction("github.com/mochi-mqtt/server/v2/hooks/storage/badger.(*Hook).gcLoop"))
}

type backend struct {
	name string
	hook func() mqtt.Hook
	opts func(dir string) any
}

func backends() []backend {
	return []backend{
		{"pebble (Sync)", func() mqtt.Hook { return new(pebble.Hook) },
			func(dir string) any { return &pebble.Options{Path: dir, Mode: pebble.Sync} }},
		{"pebble (NoSync)", func() mqtt.Hook { return new(pebble.Hook) },
			func(dir string) any { return &pebble.Options{Path: dir, Mode: pebble.NoSync} }},
		{"bolt", func() mqtt.Hook { return new(bolt.Hook) },
			func(dir string) any {
				return &bolt.Options{Path: dir + "/bolt.db", Options: &bbolt.Options{Timeout: time.Second}}
			}},
		{"badger (SyncWrites)", func() mqtt.Hook { return new(badger.Hook) },
			func(dir string) any {
				o := badgerdb.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil)
				return &badger.Options{Path: dir, Options: &o}
			}},
		{"badger (default)", func() mqtt.Hook { return new(badger.Hook) },
			func(dir string) any {
				o := badgerdb.DefaultOptions(dir).WithLogger(nil)
				return &badger.Options{Path: dir, Options: &o}
			}},
	}
}

func TestStorageBackends(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl := &mqtt.Client{ID: "bench"}
	payload := make([]byte, 256)
	const seq, conc, workers, recoverN = 1000, 4000, 8, 20000
	fmt.Printf("| backend | sequential writes/s | %d writers, writes/s | recovery of %d messages |\n|---|---|---|---|\n", workers, recoverN)
	for _, be := range backends() {
		dir := t.TempDir()
		open := func() mqtt.Hook {
			h := be.hook()
			h.SetOpts(log, &mqtt.HookOptions{Capabilities: mqtt.NewDefaultServerCapabilities()})
			if err := h.Init(be.opts(dir)); err != nil {
				t.Fatalf("%s: %v", be.name, err)
			}
			return h
		}
		h := open()
		pk := func(i int) packets.Packet {
			return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true, Qos: 1},
				TopicName: fmt.Sprintf("bench/%d", i), Payload: payload, Created: time.Now().Unix()}
		}
		start := time.Now()
		for i := range seq {
			h.OnRetainMessage(cl, pk(i), 1)
		}
		seqRate := float64(seq) / time.Since(start).Seconds()

		start = time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < conc; i += workers {
					h.OnRetainMessage(cl, pk(seq+i), 1)
				}
			}()
		}
		wg.Wait()
		concRate := float64(conc) / time.Since(start).Seconds()

		// Fill up to recoverN without timing (NoSync would be unfair to
		// time here), then measure a cold open and full read.
		for i := seq + conc; i < recoverN; i++ {
			h.OnRetainMessage(cl, pk(i), 1)
		}
		if err := h.Stop(); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		h = open()
		msgs, err := h.StoredRetainedMessages()
		if err != nil || len(msgs) != recoverN {
			t.Fatalf("%s: recovered %d, err %v", be.name, len(msgs), err)
		}
		rec := time.Since(start)
		_ = h.Stop()
		fmt.Printf("| %s | %.0f | %.0f | %v |\n", be.name, seqRate, concRate, rec.Round(time.Millisecond))
	}
}
