// Package bridge connects the broker to other MQTT brokers, as Mosquitto's
// bridges do (docs/bridge.md): each configured bridge is two MQTT client
// connections, one to the remote broker and one to this broker over
// loopback, with messages carried between them by topic lines that remap
// prefixes. It knows nothing of the engine: the broker is reached through
// its MQTT listener and the small Local interface.
//
// Goroutines: a bridge has a supervisor (connects, keep-alive pings,
// back-off) and, while connected, one reader per connection; writes are
// made by the goroutine that forwards or acknowledges, under the
// connection's write mutex. Nothing here runs on an event loop.
package bridge
