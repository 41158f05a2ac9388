package queue

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble"
)

// putParallelism × GOMAXPROCS goroutines put at once in the parallel runs,
// like many MQTT deliveries arriving for the egress routes together.
const putParallelism = 32

var benchPayload = make([]byte, 256)

func reportPuts(b *testing.B, fs syncCountingFS) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
	b.ReportMetric(float64(b.N)/float64(max(fs.syncs.Load(), 1)), "puts/fsync")
}

// benchStore opens a store whose WAL fsyncs are counted.
func benchStore(b *testing.B) (*Store, syncCountingFS) {
	fs := newSyncCountingFS()
	s, err := openStoreFS(b.TempDir(), testLogger(b), fs)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s, fs
}

// BenchmarkPutSync measures durable Puts (each returns after its fsync) on
// a real disk: the queue's group commit, serial and from many goroutines,
// against the naive way, one pebble Set with Sync per item.
func BenchmarkPutSync(b *testing.B) {
	b.Run("queue/serial", func(b *testing.B) {
		s, fs := benchStore(b)
		q := openQueue(b, s, "bench", Options{MaxItems: -1, MaxBytes: -1})
		b.ReportAllocs()
		b.ResetTimer()
		fs.syncs.Store(0)
		for range b.N {
			if err := q.Put(context.Background(), benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		reportPuts(b, fs)
	})
	b.Run("queue/parallel", func(b *testing.B) {
		s, fs := benchStore(b)
		q := openQueue(b, s, "bench", Options{MaxItems: -1, MaxBytes: -1})
		b.ReportAllocs()
		b.SetParallelism(putParallelism)
		b.ResetTimer()
		fs.syncs.Store(0)
		s.commits.Store(0)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := q.Put(context.Background(), benchPayload); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportPuts(b, fs)
		b.ReportMetric(float64(b.N)/float64(max(s.commits.Load(), 1)), "puts/batch")
	})
	naive := func(b *testing.B) (*pebble.DB, func() []byte, syncCountingFS) {
		fs := newSyncCountingFS()
		db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: pebbleLogger{testLogger(b)}, FS: fs})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		var n atomic.Uint64
		return db, func() []byte { return binary.BigEndian.AppendUint64([]byte("k"), n.Add(1)) }, fs
	}
	b.Run("naive/serial", func(b *testing.B) {
		db, key, fs := naive(b)
		b.ReportAllocs()
		b.ResetTimer()
		fs.syncs.Store(0)
		for range b.N {
			if err := db.Set(key(), benchPayload, pebble.Sync); err != nil {
				b.Fatal(err)
			}
		}
		reportPuts(b, fs)
	})
	// Pebble's own commit pipeline lets concurrent synced writers share
	// WAL syncs too; shown for comparison.
	b.Run("naive/parallel", func(b *testing.B) {
		db, key, fs := naive(b)
		b.ReportAllocs()
		b.SetParallelism(putParallelism)
		b.ResetTimer()
		fs.syncs.Store(0)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := db.Set(key(), benchPayload, pebble.Sync); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportPuts(b, fs)
	})
}

// BenchmarkDeliver measures Next + Ack of stored items (payload read from
// pebble, unsynced delete).
func BenchmarkDeliver(b *testing.B) {
	q := openQueue(b, openStore(b, b.TempDir()), "bench", Options{MaxItems: -1, MaxBytes: -1})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 64 { // filled concurrently, so group commit keeps it short
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += 64 {
				if err := q.Put(ctx, benchPayload); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		it, err := q.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := q.Ack(it.ID); err != nil {
			b.Fatal(err)
		}
	}
}
