package engine

import (
	"runtime/metrics"
	"strconv"
	"time"
)

// Snapshot is every figure the broker exposes, as served by GET
// /api/v1/stats and rendered by GET /metrics. Any goroutine; it visits
// every session (O(sessions), a few ms per 100k), so it is for scrapes,
// not hot paths.
type Snapshot struct {
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`

	Connections            int64             `json:"connections"`
	ConnectionsByTransport map[string]int64  `json:"connections_by_transport"`
	ConnectionsMax         int64             `json:"connections_max"`
	ConnectionsTotal       uint64            `json:"connections_total"`
	Rejected               map[string]uint64 `json:"connections_rejected"` // by reason
	Closed                 map[string]uint64 `json:"connections_closed"`   // by broker-side reason
	// ConnectionsRateLimited counts connections deferred by --max-conn-rate.
	ConnectionsRateLimited uint64 `json:"connections_rate_limited"`

	MessagesReceived map[string][3]uint64 `json:"messages_received"` // transport -> per QoS
	MessagesSent     map[string][3]uint64 `json:"messages_sent"`
	BytesReceived    map[string]uint64    `json:"bytes_received"`
	BytesSent        map[string]uint64    `json:"bytes_sent"`
	Dropped          map[string]uint64    `json:"messages_dropped"` // by reason

	Subscriptions   int    `json:"subscriptions"`
	Retained        int    `json:"retained_messages"`
	SessionsOnline  int    `json:"sessions_online"`
	SessionsOffline int    `json:"sessions_offline"`
	SessionsExpired uint64 `json:"sessions_expired"`
	Queued          int    `json:"queued_messages"`
	Inflight        int    `json:"inflight_messages"`
	Streams         int    `json:"sse_streams"`

	HTTPRequests      uint64 `json:"http_requests"`
	HTTPErrors        uint64 `json:"http_errors"`
	StreamsOpened     uint64 `json:"sse_streams_opened"`
	WebSocketUpgrades uint64 `json:"websocket_upgrades"`

	LoopBusySeconds []float64 `json:"event_loop_busy_seconds"`
	SocketWrites    uint64    `json:"socket_writes"` // writes of MQTT output to sockets (one per connection per flush)

	// Authentication and authorization.
	AuthFailures  uint64            `json:"auth_failures"`   // refused credentials (MQTT and HTTP)
	AuthDelayed   uint64            `json:"auth_delayed"`    // refusals held back after repeated failures
	AuthOverload  uint64            `json:"auth_overload"`   // refused: verification queue full
	AuthCacheHits uint64            `json:"auth_cache_hits"` // verifications answered from the cache
	AuthPending   int64             `json:"auth_pending"`    // verifications queued or running
	ACLDenied     map[string]uint64 `json:"acl_denied"`      // by publish, subscribe, deliver
	AuthConfig    string            `json:"auth,omitempty"`  // what decides credentials
	ACLConfig     string            `json:"acl,omitempty"`   // what decides topic access
	Anonymous     bool              `json:"anonymous_allowed"`

	TLS TLSSnapshot `json:"tls"` // TLS, protocol mismatches, PROXY protocol (tls.go)

	Store StoreStats `json:"store"` // durable state (persist.go)

	MemoryBytes     uint64 `json:"go_memory_bytes"`
	HeapBytes       uint64 `json:"go_heap_bytes"`
	Goroutines      uint64 `json:"go_goroutines"`
	GCCycles        uint64 `json:"go_gc_cycles"`
	MemoryReturns   uint64 `json:"memory_returns"` // idle returns of free heap pages to the OS
	MaxPacketSize   int    `json:"max_packet_size"`
	MaxConnections  int    `json:"max_connections"`
	SysIntervalSecs int    `json:"sys_interval_seconds"`
}

// Snapshot gathers the figures. Any goroutine.
func (b *Broker) Snapshot() Snapshot {
	st := b.Stats()
	sn := Snapshot{
		Version:                b.opts.Version,
		UptimeSeconds:          time.Since(b.started).Seconds(),
		Connections:            st.Connected,
		ConnectionsByTransport: map[string]int64{},
		ConnectionsMax:         st.MaxConnected,
		ConnectionsTotal:       st.TotalConnections,
		ConnectionsRateLimited: st.RateDeferred,
		Rejected: map[string]uint64{
			"max_connections": st.Rejected,
			"not_authorized":  st.AuthFailures,
			"conn_rate":       st.RateRefused,
		},
		Closed: map[string]uint64{
			"malformed":         st.Malformed,
			"oversize":          st.Oversize,
			"connect_timeout":   st.ConnectTimeouts,
			"keepalive_timeout": st.KeepAliveTimeouts,
			"slow_consumer":     st.SlowConsumerDisconnects,
		},
		MessagesReceived: map[string][3]uint64{},
		MessagesSent:     map[string][3]uint64{},
		BytesReceived:    map[string]uint64{},
		BytesSent:        map[string]uint64{},
		Dropped: map[string]uint64{
			"slow_consumer": st.DroppedSlow,
			"queue_full":    st.DroppedQueueFull,
			"too_large":     st.DroppedTooLarge,
		},
		Subscriptions:   st.Subscriptions,
		Retained:        st.Retained,
		SessionsExpired: st.SessionsExpired,
		MaxPacketSize:   b.opts.MaxPacketSize,
		MaxConnections:  b.opts.MaxConnections,
		SysIntervalSecs: int(b.opts.SysInterval / time.Second),
	}
	var connsBy [numProtos]int64
	add := func(c *counters) {
		for p := proto(0); p < numProtos; p++ {
			name := protoNames[p]
			in, out := sn.MessagesReceived[name], sn.MessagesSent[name]
			for q := range 3 {
				in[q] += c.msgsInBy[p][q].Load()
				out[q] += c.msgsOutBy[p][q].Load()
			}
			sn.MessagesReceived[name], sn.MessagesSent[name] = in, out
			sn.BytesReceived[name] += c.bytesInBy[p].Load()
			sn.BytesSent[name] += c.bytesOutBy[p].Load()
			connsBy[p] += c.connsBy[p].Load()
		}
		sn.HTTPRequests += c.httpRequests.Load()
		sn.HTTPErrors += c.httpErrors.Load()
		sn.StreamsOpened += c.streamsOpened.Load()
		sn.WebSocketUpgrades += c.wsUpgrades.Load()
		sn.AuthFailures += c.authFailures.Load()
		sn.AuthDelayed += c.authDelayed.Load()
		sn.AuthOverload += c.authOverload.Load()
		for i := range numACLActs {
			sn.ACLDenied[aclActNames[i]] += c.aclDenied[i].Load()
		}
	}
	sn.ACLDenied = map[string]uint64{}
	sn.AuthCacheHits = b.authCache.hits.Load()
	if b.authPool != nil {
		sn.AuthPending = b.authPool.busy.Load()
	}
	sn.AuthConfig, sn.ACLConfig = b.authDescription()
	sn.Anonymous = b.allowAnonymous
	add(&b.sysStats)
	for _, l := range b.allLoops() {
		add(&l.stats)
		sn.LoopBusySeconds = append(sn.LoopBusySeconds, float64(l.stats.busyNs.Load())/1e9)
		sn.SocketWrites += l.stats.writes.Load()
		sn.Streams += int(l.stats.streams.Load())
	}
	for p := proto(0); p < numProtos; p++ {
		sn.ConnectionsByTransport[protoNames[p]] = connsBy[p]
	}
	b.sessMu.Lock()
	b.sessions.Range(func(s *session) bool {
		s.mu.Lock()
		if s.c != nil {
			sn.SessionsOnline++
		} else {
			sn.SessionsOffline++
		}
		sn.Queued += s.queuedLocked()
		sn.Inflight += s.inflightLocked()
		s.mu.Unlock()
		return true
	})
	b.sessMu.Unlock()

	samples := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(samples)
	get := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	sn.MemoryBytes, sn.HeapBytes, sn.Goroutines, sn.GCCycles = get(0), get(1), get(2), get(3)
	sn.MemoryReturns = b.memReturn.runs.Load()
	sn.TLS = b.tlsSnapshot()
	sn.Store = b.storeStats() // persist.go
	return sn
}

// appendPrometheus renders the snapshot in the Prometheus text exposition
// format (version 0.0.4).
func (sn *Snapshot) appendPrometheus(dst []byte) []byte {
	w := promWriter{b: dst}
	w.family("tinymq_build_info", "gauge", "Broker version.")
	w.sample("tinymq_build_info", `version="`+promEscape(sn.Version)+`"`, 1)
	w.single("tinymq_uptime_seconds", "gauge", "Seconds since the broker started.", sn.UptimeSeconds)

	w.family("tinymq_connections", "gauge", "Open connections by transport (mqtt, websocket, http including SSE streams).")
	for _, t := range []string{"mqtt", "websocket", "http"} {
		w.sample("tinymq_connections", `transport="`+t+`"`, float64(sn.ConnectionsByTransport[t]))
	}
	w.single("tinymq_connections_max", "gauge", "Most connections open at once since start.", float64(sn.ConnectionsMax))
	w.single("tinymq_connections_accepted_total", "counter", "Connections accepted since start.", float64(sn.ConnectionsTotal))
	w.family("tinymq_connections_rejected_total", "counter", "Connections or requests refused, by reason.")
	for _, k := range []string{"max_connections", "not_authorized", "conn_rate"} {
		w.sample("tinymq_connections_rejected_total", `reason="`+k+`"`, float64(sn.Rejected[k]))
	}
	w.single("tinymq_auth_delayed_total", "counter", "Login refusals held back after repeated failures from one address.", float64(sn.AuthDelayed))
	w.single("tinymq_auth_overload_total", "counter", "Logins refused because the verification queue was full.", float64(sn.AuthOverload))
	w.single("tinymq_auth_cache_hits_total", "counter", "Password verifications answered from the success cache.", float64(sn.AuthCacheHits))
	w.single("tinymq_auth_pending", "gauge", "Password verifications queued or running on the worker pool.", float64(sn.AuthPending))
	w.family("tinymq_acl_denied_total", "counter", "ACL denials: publishes dropped, subscriptions refused, deliveries withheld.")
	for i := range numACLActs {
		w.sample("tinymq_acl_denied_total", `action="`+aclActNames[i]+`"`, float64(sn.ACLDenied[aclActNames[i]]))
	}
	w.single("tinymq_connections_rate_limited_total", "counter", "Connections whose CONNECT was deferred by the per-source connection-rate limit.", float64(sn.ConnectionsRateLimited))
	w.family("tinymq_connections_closed_total", "counter", "Connections closed by the broker, by reason.")
	for _, k := range []string{"malformed", "oversize", "connect_timeout", "keepalive_timeout", "slow_consumer"} {
		w.sample("tinymq_connections_closed_total", `reason="`+k+`"`, float64(sn.Closed[k]))
	}

	for _, f := range []struct {
		name, help string
		m          map[string][3]uint64
	}{
		{"tinymq_messages_received_total", "PUBLISH messages received, by transport and QoS.", sn.MessagesReceived},
		{"tinymq_messages_sent_total", "PUBLISH messages (and SSE events) sent, by transport and QoS.", sn.MessagesSent},
	} {
		w.family(f.name, "counter", f.help)
		for _, t := range []string{"mqtt", "websocket", "http"} {
			for q := range 3 {
				w.sample(f.name, `transport="`+t+`",qos="`+strconv.Itoa(q)+`"`, float64(f.m[t][q]))
			}
		}
	}
	for _, f := range []struct {
		name, help string
		m          map[string]uint64
	}{
		{"tinymq_bytes_received_total", "Bytes read from clients, by transport.", sn.BytesReceived},
		{"tinymq_bytes_sent_total", "Bytes handed to the socket layer, by transport.", sn.BytesSent},
	} {
		w.family(f.name, "counter", f.help)
		for _, t := range []string{"mqtt", "websocket", "http"} {
			w.sample(f.name, `transport="`+t+`"`, float64(f.m[t]))
		}
	}
	w.family("tinymq_messages_dropped_total", "counter", "Messages not delivered, by reason.")
	for _, k := range []string{"slow_consumer", "queue_full"} {
		w.sample("tinymq_messages_dropped_total", `reason="`+k+`"`, float64(sn.Dropped[k]))
	}
	w.single("tinymq_subscriptions", "gauge", "Subscriptions in the topic tree.", float64(sn.Subscriptions))
	w.single("tinymq_retained_messages", "gauge", "Retained messages stored.", float64(sn.Retained))
	w.family("tinymq_sessions", "gauge", "MQTT sessions by state.")
	w.sample("tinymq_sessions", `state="online"`, float64(sn.SessionsOnline))
	w.sample("tinymq_sessions", `state="offline"`, float64(sn.SessionsOffline))
	w.single("tinymq_sessions_expired_total", "counter", "Persistent sessions discarded after --session-expiry offline.", float64(sn.SessionsExpired))
	w.single("tinymq_queued_messages", "gauge", "Messages waiting in session queues.", float64(sn.Queued))
	w.single("tinymq_inflight_messages", "gauge", "Outbound QoS 1/2 messages awaiting acknowledgement.", float64(sn.Inflight))
	w.single("tinymq_sse_streams", "gauge", "Open Server-Sent Events streams.", float64(sn.Streams))
	if st := &sn.Store; st.Enabled { // persist.go
		w.single("tinymq_store_errors_total", "counter", "Failed store commits and syncs (disk full, I/O errors).", float64(st.Errors))
		w.single("tinymq_store_refused_total", "counter", "Store submissions refused because the writer queue was full (retried).", float64(st.Refused))
		w.single("tinymq_store_refused_publishes_total", "counter", "MQTT 5 QoS 1/2 PUBLISHes refused (0x97 disk full, 0x80 other error) while the store was failing.", float64(st.RefusedPublishes))
		w.single("tinymq_store_healthy", "gauge", "1 while the store takes writes, 0 while it is failing.", b2f(st.Healthy))
		w.single("tinymq_store_window_written_total", "counter", "Records the store's commit window wrote to disk.", float64(st.WindowWritten))
		w.single("tinymq_store_window_cancelled_total", "counter", "Records cancelled by their delete inside the commit window (never written).", float64(st.WindowCancelled))
	}
	w.single("tinymq_http_requests_total", "counter", "HTTP requests served.", float64(sn.HTTPRequests))
	w.single("tinymq_http_errors_total", "counter", "HTTP requests answered with 4xx or 5xx.", float64(sn.HTTPErrors))
	w.single("tinymq_sse_streams_opened_total", "counter", "SSE streams opened.", float64(sn.StreamsOpened))
	w.single("tinymq_websocket_upgrades_total", "counter", "WebSocket upgrades to MQTT.", float64(sn.WebSocketUpgrades))
	w.family("tinymq_event_loop_busy_seconds_total", "counter", "Time each event loop spent handling traffic and mailboxes.")
	for i, s := range sn.LoopBusySeconds {
		w.sample("tinymq_event_loop_busy_seconds_total", `loop="`+strconv.Itoa(i)+`"`, s)
	}
	w.single("tinymq_socket_writes_total", "counter", "Writes of MQTT output to client sockets (one per connection per flush; --write-coalesce makes fewer).", float64(sn.SocketWrites))
	w.single("tinymq_go_memory_bytes", "gauge", "Memory mapped by the Go runtime.", float64(sn.MemoryBytes))
	w.single("tinymq_go_heap_objects_bytes", "gauge", "Bytes of live and unswept heap objects.", float64(sn.HeapBytes))
	w.single("tinymq_go_goroutines", "gauge", "Goroutines.", float64(sn.Goroutines))
	w.single("tinymq_go_gc_cycles_total", "counter", "Completed GC cycles.", float64(sn.GCCycles))
	w.single("tinymq_memory_returns_total", "counter", "Free heap pages given back to the OS after a burst (--return-idle-memory).", float64(sn.MemoryReturns))
	sn.TLS.appendPrometheus(&w)
	return w.b
}

type promWriter struct{ b []byte }

func (w *promWriter) family(name, typ, help string) {
	w.b = append(w.b, "# HELP "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, help...)
	w.b = append(w.b, "\n# TYPE "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, typ...)
	w.b = append(w.b, '\n')
}

func (w *promWriter) sample(name, labels string, v float64) {
	w.b = append(w.b, name...)
	if labels != "" {
		w.b = append(w.b, '{')
		w.b = append(w.b, labels...)
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ' ')
	w.b = strconv.AppendFloat(w.b, v, 'g', -1, 64)
	w.b = append(w.b, '\n')
}

func (w *promWriter) single(name, typ, help string, v float64) {
	w.family(name, typ, help)
	w.sample(name, "", v)
}

// promEscape escapes a label value.
func promEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\', '"':
			out = append(out, '\\', s[i])
		case '\n':
			out = append(out, '\\', 'n')
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}

// metrics serves GET /metrics.
func (r *httpReq) metrics() bool {
	if !r.only("GET") {
		return r.close
	}
	sn := r.b.Snapshot()
	body := r.b.appendBridgeMetrics(sn.appendPrometheus(r.h.body[:0]))
	r.h.body = body
	r.h.respond(r.b, 200, "text/plain; version=0.0.4; charset=utf-8", body, r.close, "")
	return r.close
}
