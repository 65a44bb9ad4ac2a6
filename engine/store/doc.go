// Package store is TinyMQ's durable state on pebble: retained messages,
// persistent sessions (subscriptions, queued and in-flight QoS 1/2
// messages, inbound QoS 2 ids, expiry) and pending wills.
//
// The event loops never wait for it. A loop fills a Batch and calls Submit,
// which never blocks (a full queue is reported as ErrQueueFull) and returns
// a sequence number; one writer goroutine commits queued batches together
// and calls Options.OnDurable with the highest sequence number that is
// durable under the fsync mode. One reader goroutine serves RequestQueue,
// so that a loop can page a queue from disk without blocking. Those two
// goroutines are the store's only ones.
//
// A message queued for many sessions is stored once (PutMessage) and
// referenced by id from each queue or in-flight entry; the writer deletes
// it with its last reference. Keys and values use the package's own
// versioned binary encoding (docs/store.md has the layout).
//
// Open, Load and Close block on I/O: call them at startup and shutdown.
package store
