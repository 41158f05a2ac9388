// Package queue is the durable, bounded delivery queue of the egress routes
// (SPEC §6: MQTT → HTTP webhook / CoAP device, at-least-once). A route puts
// each message it takes from the broker into its queue, acknowledges the
// message to the broker once Put returns, and delivers from the queue with
// Next, settling each item with Ack (delivered), Retry (5xx / 5.xx,
// timeout, connection error: backoff and try again) or Fail (4xx / 4.xx:
// never retried). Nothing acknowledged by Put is lost when an endpoint is
// down or the gateway is killed (kill -9) and restarted: every item not
// acknowledged is delivered again after a restart, including those that
// were in flight.
//
// It is a leaf: it imports nothing of this project, and bridge/egress code
// and the adapters import it.
//
// # Storage
//
// A Store is one pebble database (OpenStore; in memory when the directory
// is "", with the same behaviour) holding any number of named queues, one
// per route, under per-queue key prefixes. Open is the shortcut for a queue
// with a store of its own. Per item the store keeps one record (enqueue
// time and payload) and, once it has been retried, a small meta record
// (attempts, NotBefore); a per-queue high-water mark keeps IDs growing
// across restarts.
//
// # Durability and group commit
//
// Put returns only when the item is synced to disk. Puts do not sync one by
// one: they go to the store's committer goroutine, which takes every Put
// waiting at that moment (up to 4096 items or 4 MiB), writes them as one
// pebble batch and applies it without waiting for the sync
// (DB.ApplyNoSyncWait); a second goroutine waits for each batch's fsync in
// order (Batch.SyncWait), files its items in their queues and answers the
// Puts. Pebble's WAL writer syncs all batches applied during one fsync with
// the next one, so one fsync serves as many callers as the load brings,
// across all queues of the store, and the committer is never idle while
// the disk works. Items become visible to Next only after their fsync.
// (Pebble marks ApplyNoSyncWait experimental; CockroachDB commits through
// it, and go.mod pins pebble v1.1.5.)
//
// Ack, Retry and Fail write without waiting for the disk; the next group
// commit or the store's syncer (every SyncInterval) makes them durable. A
// crash can therefore lose the last moments of them: an acknowledged item
// is then delivered again and a retried one comes back sooner, which
// at-least-once delivery allows. Consumers must tolerate duplicates.
//
// # Memory
//
// Payloads are not kept in memory: Next reads the item's payload from
// pebble when it hands it out. Per stored item the queue holds one index
// entry of about 64 bytes (ID, payload size, attempts, times, state) in an
// ID-ordered deque and in a heap of due or delayed items, so a queue of
// MaxItems items costs about 64·MaxItems bytes of index plus pebble's own
// bounded caches and memtables, whatever the payload sizes.
//
// # Delivery order
//
// Due items (NotBefore passed) are handed out in ID (FIFO) order. Without
// Options.Ordered up to MaxInFlight items are in flight at once and a
// retried item waits for its backoff while later items go ahead. With
// Ordered only the head of the queue is ever in flight, so a failing head
// holds back the route until it is delivered, failed or given up.
//
// # Bounds
//
// MaxItems and MaxBytes bound each queue. At a bound the Overflow policy
// applies: RefuseNew makes Put return ErrFull (puts still on their way to
// the disk count against the bounds); DropOldest accepts the new item and
// deletes the oldest one not in flight once the new one is synced. Both are
// counted (Stats.Refused, Stats.Dropped).
//
// # Metrics
//
// Stats returns a snapshot (depth, bytes, in flight, and counters for
// enqueued, delivered, retried, failed, dropped, refused) for the caller
// to export, for instance with Prometheus GaugeFunc/CounterFunc.
package queue
