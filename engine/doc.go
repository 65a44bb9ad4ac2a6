// Package engine is the TinyMQ broker: a gnet event handler that speaks MQTT
// 3.1 and 3.1.1 on a fixed set of event loops, with no goroutine per
// connection.
//
// Ownership in one paragraph (docs/design.md and docs/locking.md say more):
// a connection, its read buffer and its keep-alive slot belong to the event
// loop gnet assigned it; only that loop reads or writes the socket. A session
// (subscriptions, queue, in-flight window) is guarded by its own mutex so
// that any loop can append a message to it; the owning loop is then told to
// flush it, directly when the publisher runs on the same loop, through that
// loop's mailbox otherwise. The topic trie and the retained index are shared
// and safe for concurrent use.
//
// Every function documents where it runs: "loop" means the connection's
// event loop (must not block), "any" means safe from any goroutine.
package engine
