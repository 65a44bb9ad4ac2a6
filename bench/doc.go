// Package bench is TinyMQ's load generator. It works against any MQTT
// broker and is how every performance figure in docs/ is measured.
//
// Connections are spread over worker processes (a process here can hold
// at most ~19,900 sockets) and over source addresses 127.0.0.1 … 127.0.0.N
// (one source address has ~64k ports). Workers are the same binary started
// with the hidden "worker" command; they report to the coordinator as JSON
// lines on stdout and exit when their stdin closes, so a killed coordinator
// never leaves them behind. Every run is bounded in count and time.
package bench
