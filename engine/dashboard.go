package engine

import (
	"embed"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// The live dashboard (docs/dashboard.md). GET / and GET /dashboard serve
// one page whose HTML, JavaScript and CSS are embedded in the binary; the
// page holds no figures of its own. Its figures come from
// GET /api/v1/stats/stream, an SSE stream behind the same credentials as
// GET /api/v1/stats, which sends one "stats" event a second per open
// dashboard. The event is built once a second on the ticker goroutine
// (OnTick, only while a dashboard is open), shared as one byte slice, and
// appended by each loop's tick to the streams it owns: no goroutine and no
// timer per viewer, and at most maxDashStreams viewers.
//
// The busiest topics come from a sampler on each loop's router: about one
// PUBLISH in topSampleEvery is counted, by topic, in a bounded per-loop
// table that the builder drains every second.

//go:embed dashboard/index.html dashboard/app.js dashboard/app.css
var dashFiles embed.FS

// dashAsset is one embedded file of the page.
type dashAsset struct {
	ctype string
	body  []byte
}

var dashAssets = func() map[string]dashAsset {
	m := map[string]dashAsset{}
	for name, ct := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"app.js":     "text/javascript; charset=utf-8",
		"app.css":    "text/css; charset=utf-8",
	} {
		b, err := dashFiles.ReadFile("dashboard/" + name)
		if err != nil {
			panic("BUG: dashboard asset missing: " + name)
		}
		m[name] = dashAsset{ct, b}
	}
	return m
}()

// dashHeaders keep the page to its own origin: no inline script, nothing
// fetched from elsewhere, not framed, and no Referer carrying a ?token=.
const dashHeaders = "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'\r\n" +
	"X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n"

// isDashboardPath reports whether p is the page or one of its assets.
func isDashboardPath(p string) bool {
	return p == "/" || p == "/dashboard" || p == "/dashboard/" || strings.HasPrefix(p, "/dashboard/")
}

// dashboard serves the page (/, /dashboard) and its assets
// (/dashboard/app.js, /dashboard/app.css). They are static and public, like
// a login page: every figure on the page comes from the API, which checks
// the credentials. Runs on c's loop.
func (r *httpReq) dashboard(p string) bool {
	if !r.only("GET") {
		return r.close
	}
	name := "index.html"
	if p != "/" && p != "/dashboard" && p != "/dashboard/" {
		name = p[len("/dashboard/"):]
	}
	a, ok := dashAssets[name]
	if !ok {
		return r.fail(404, "no such file")
	}
	if string(r.method) == "HEAD" {
		r.h.head(r.b, 200, a.ctype, len(a.body), r.close, dashHeaders)
		return r.close
	}
	r.h.respond(r.b, 200, a.ctype, a.body, r.close, dashHeaders)
	return r.close
}

// maxDashStreams bounds the open dashboard streams (all viewers together).
const maxDashStreams = 32

// dashState is the broker's dashboard state.
type dashState struct {
	streams atomic.Int64                  // open dashboard streams (decremented by the loops' ticks)
	event   atomic.Pointer[dashEventData] // the newest stats event

	// Owned by the ticker goroutine (dashBuild).
	seq    uint64
	prevAt time.Time
	prev   dashTotals
	merged map[string]uint32
	rates  map[string]float64
}

// dashEventData is one encoded stats event, shared by every stream.
type dashEventData struct {
	seq  uint64
	at   time.Time
	data []byte // the JSON, without the "data: " prefix
}

// dashLoop is a loop's dashboard state. Owned by the loop.
type dashLoop struct {
	conns []*conn // its dashboard streams; closed ones are dropped at the next tick
	seq   uint64  // the last event sent to them
}

// dashTotals are the counters whose per-second rates the event carries.
type dashTotals struct {
	conns                              uint64
	msgsIn, msgsOut, bytesIn, bytesOut [numProtos]uint64
	dropped                            uint64
	busy                               []float64
}

// dashTransport is one row of the per-listener table.
type dashTransport struct {
	Name         string   `json:"name"`
	Addrs        []string `json:"addrs"`
	Connections  int64    `json:"connections"`
	MsgsInRate   float64  `json:"msgs_in_rate"`
	MsgsOutRate  float64  `json:"msgs_out_rate"`
	BytesInRate  float64  `json:"bytes_in_rate"`
	BytesOutRate float64  `json:"bytes_out_rate"`
}

// dashTopic is one of the busiest topics: an estimate of its publishes per
// second from the sample, smoothed over a few seconds.
type dashTopic struct {
	Topic string  `json:"topic"`
	Rate  float64 `json:"rate"`
}

// dashEvent is the data of one "stats" event. The page reads these names.
type dashEvent struct {
	Time    int64   `json:"time"` // unix milliseconds
	Version string  `json:"version"`
	Uptime  float64 `json:"uptime_seconds"`

	Clients         int     `json:"clients"` // MQTT sessions online (TCP, TLS, WebSocket)
	SessionsOffline int     `json:"sessions_offline"`
	Connections     int64   `json:"connections"` // every open connection, HTTP included
	ConnectRate     float64 `json:"connect_rate"`
	ConnectionsMax  int64   `json:"connections_max"`
	TLSConnections  int64   `json:"tls_connections"`

	MsgsIn       uint64  `json:"msgs_in"`
	MsgsOut      uint64  `json:"msgs_out"`
	BytesIn      uint64  `json:"bytes_in"`
	BytesOut     uint64  `json:"bytes_out"`
	MsgsInRate   float64 `json:"msgs_in_rate"`
	MsgsOutRate  float64 `json:"msgs_out_rate"`
	BytesInRate  float64 `json:"bytes_in_rate"`
	BytesOutRate float64 `json:"bytes_out_rate"`

	Subscriptions int `json:"subscriptions"`
	Retained      int `json:"retained"`
	Queued        int `json:"queued"`
	Inflight      int `json:"inflight"`

	Dropped       map[string]uint64 `json:"dropped"` // by reason
	DroppedTotal  uint64            `json:"dropped_total"`
	DropRate      float64           `json:"drop_rate"`
	SlowConsumers uint64            `json:"slow_consumers"` // disconnected as slow consumers
	Closed        map[string]uint64 `json:"closed"`         // connections closed by the broker, by reason

	Transports []dashTransport `json:"transports"`
	Bridges    []BridgeInfo    `json:"bridges"`
	TopTopics  []dashTopic     `json:"top_topics"`
	Sampled    bool            `json:"top_topics_sampled"` // rates are estimates from a 1-in-64 sample

	LoopBusy    []float64 `json:"loop_busy"` // fraction of the last second each loop was busy
	MemoryBytes uint64    `json:"memory_bytes"`
	Goroutines  uint64    `json:"goroutines"`
	Streams     int       `json:"dashboards"`
}

// dashBuild builds the stats event once a second while a dashboard is
// open. Ticker goroutine (OnTick): it visits every session (Snapshot), so
// it never runs on a loop.
func (b *Broker) dashBuild(now time.Time) {
	d := &b.dash
	n := d.streams.Load()
	if n == 0 {
		d.prevAt = time.Time{}
		return
	}
	if !d.prevAt.IsZero() && now.Sub(d.prevAt) < 950*time.Millisecond {
		return
	}
	sn := b.Snapshot()
	var cur dashTotals
	cur.conns = sn.ConnectionsTotal
	for p := proto(0); p < numProtos; p++ {
		name := protoNames[p]
		for q := range 3 {
			cur.msgsIn[p] += sn.MessagesReceived[name][q]
			cur.msgsOut[p] += sn.MessagesSent[name][q]
		}
		cur.bytesIn[p], cur.bytesOut[p] = sn.BytesReceived[name], sn.BytesSent[name]
	}
	for _, v := range sn.Dropped {
		cur.dropped += v
	}
	cur.busy = sn.LoopBusySeconds
	if d.prevAt.IsZero() {
		// The first dashboard opened: rates need a second figure, so the
		// first event follows at the next second.
		d.prev, d.prevAt = cur, now
		b.topTopics(0)
		return
	}
	dt := now.Sub(d.prevAt).Seconds()
	rate := func(now, before uint64) float64 {
		if dt <= 0 || now < before {
			return 0
		}
		return float64(now-before) / dt
	}
	ev := dashEvent{
		Time: now.UnixMilli(), Version: sn.Version, Uptime: sn.UptimeSeconds,
		Clients: sn.SessionsOnline, SessionsOffline: sn.SessionsOffline,
		Connections: sn.Connections, ConnectionsMax: sn.ConnectionsMax, TLSConnections: sn.TLS.Connections,
		ConnectRate:   rate(cur.conns, d.prev.conns),
		Subscriptions: sn.Subscriptions, Retained: sn.Retained, Queued: sn.Queued, Inflight: sn.Inflight,
		Dropped: sn.Dropped, DroppedTotal: cur.dropped, DropRate: rate(cur.dropped, d.prev.dropped),
		SlowConsumers: sn.Closed["slow_consumer"], Closed: sn.Closed,
		Bridges:     b.Bridges(),
		Sampled:     true,
		MemoryBytes: sn.MemoryBytes, Goroutines: sn.Goroutines, Streams: int(n),
	}
	if ev.Bridges == nil {
		ev.Bridges = []BridgeInfo{}
	}
	addrs := [numProtos][]string{
		protoMQTT: nonEmpty(b.MQTTAddr(), b.TLSAddr()),
		protoWS:   nonEmpty(b.WSAddr(), b.HTTPAddr()+"/mqtt", b.HTTPSAddr()+"/mqtt"),
		protoHTTP: nonEmpty(b.HTTPAddr(), b.HTTPSAddr()),
	}
	for p := proto(0); p < numProtos; p++ {
		ev.MsgsIn += cur.msgsIn[p]
		ev.MsgsOut += cur.msgsOut[p]
		ev.BytesIn += cur.bytesIn[p]
		ev.BytesOut += cur.bytesOut[p]
		t := dashTransport{
			Name: protoNames[p], Addrs: addrs[p], Connections: sn.ConnectionsByTransport[protoNames[p]],
			MsgsInRate: rate(cur.msgsIn[p], d.prev.msgsIn[p]), MsgsOutRate: rate(cur.msgsOut[p], d.prev.msgsOut[p]),
			BytesInRate: rate(cur.bytesIn[p], d.prev.bytesIn[p]), BytesOutRate: rate(cur.bytesOut[p], d.prev.bytesOut[p]),
		}
		ev.MsgsInRate += t.MsgsInRate
		ev.MsgsOutRate += t.MsgsOutRate
		ev.BytesInRate += t.BytesInRate
		ev.BytesOutRate += t.BytesOutRate
		ev.Transports = append(ev.Transports, t)
	}
	ev.LoopBusy = make([]float64, len(cur.busy))
	for i, s := range cur.busy {
		if dt > 0 && i < len(d.prev.busy) {
			ev.LoopBusy[i] = min(max((s-d.prev.busy[i])/dt, 0), 1)
		}
	}
	ev.TopTopics = b.topTopics(dt)
	data, err := json.Marshal(&ev)
	if err != nil {
		panic("BUG: dashboard event: " + err.Error())
	}
	d.prev, d.prevAt = cur, now
	d.seq++
	d.event.Store(&dashEventData{seq: d.seq, at: now, data: data})
}

// nonEmpty returns the addresses that are set (a disabled listener's
// address is "", so "/mqtt" alone means no HTTP listener).
func nonEmpty(addrs ...string) []string {
	out := []string{}
	for _, a := range addrs {
		if a != "" && a != "/mqtt" {
			out = append(out, a)
		}
	}
	return out
}

// topTopicsShown is how many of the busiest topics the event lists, and
// topTopicsKept how many smoothed rates the builder keeps between events.
const (
	topTopicsShown = 10
	topTopicsKept  = 256
)

// topTopics drains every loop's sampler and returns the busiest topics
// with their estimated publishes per second, smoothed (each second weighs
// 40 %). dt is the time since the last call; 0 starts afresh. Ticker
// goroutine.
func (b *Broker) topTopics(dt float64) []dashTopic {
	d := &b.dash
	if d.merged == nil {
		d.merged, d.rates = map[string]uint32{}, map[string]float64{}
	}
	for _, l := range b.allLoops() {
		l.r.top.drainInto(d.merged)
	}
	if dt <= 0 {
		clear(d.merged)
		clear(d.rates)
		return []dashTopic{}
	}
	const keep = 0.6
	for t, r := range d.rates {
		r *= keep
		if r < 0.05 {
			delete(d.rates, t)
			continue
		}
		d.rates[t] = r
	}
	for t, n := range d.merged {
		d.rates[t] += (1 - keep) * float64(n) * topSampleEvery / dt
	}
	clear(d.merged)
	out := make([]dashTopic, 0, len(d.rates))
	for t, r := range d.rates {
		out = append(out, dashTopic{t, r})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rate != out[j].Rate {
			return out[i].Rate > out[j].Rate
		}
		return out[i].Topic < out[j].Topic
	})
	if len(out) > topTopicsKept {
		for _, x := range out[topTopicsKept:] {
			delete(d.rates, x.Topic)
		}
	}
	return out[:min(len(out), topTopicsShown)]
}

// The topic sampler: a router counts down a random skip (1..2*64-1, so one
// PUBLISH in 64 on average) and, when it reaches zero, counts the topic in
// a table of at most topSampleSlots topics that the dashboard builder
// drains every second. The hot path pays a decrement and a branch; the
// sampled path a map lookup under an uncontended mutex (an insert, which
// allocates the key, only for a topic not yet seen this second).
const (
	topSampleEvery  = 64
	topSampleSlots  = 256
	topSampleMaxLen = 256 // longer topic names are not sampled
)

// topicSampler is one router's sample of published topics.
type topicSampler struct {
	skip int32  // publishes left until the next sample; owned by the router's loop
	rnd  uint32 // xorshift state; owned by the router's loop

	mu     sync.Mutex
	idx    map[string]int32 // topic -> index into counts
	counts []uint32
}

// sample counts name (at most once per skip) and draws the next skip.
// Runs on the router's loop.
func (t *topicSampler) sample(name []byte) {
	if t.rnd == 0 {
		t.rnd = uint32(time.Now().UnixNano()) | 1
	}
	t.rnd ^= t.rnd << 13
	t.rnd ^= t.rnd >> 17
	t.rnd ^= t.rnd << 5
	t.skip = int32(1 + t.rnd%(2*topSampleEvery-1))
	if len(name) > topSampleMaxLen || isSysTopic(name) {
		return
	}
	t.mu.Lock()
	if i, ok := t.idx[string(name)]; ok {
		t.counts[i]++
	} else if len(t.counts) < topSampleSlots {
		if t.idx == nil {
			t.idx = make(map[string]int32, topSampleSlots)
		}
		t.idx[string(name)] = int32(len(t.counts))
		t.counts = append(t.counts, 1)
	}
	t.mu.Unlock()
}

// drainInto adds the sample to m and starts a new one. Any goroutine.
func (t *topicSampler) drainInto(m map[string]uint32) {
	t.mu.Lock()
	for k, i := range t.idx {
		m[k] += t.counts[i]
	}
	clear(t.idx)
	t.counts = t.counts[:0]
	t.mu.Unlock()
}

// statsStream serves GET /api/v1/stats/stream: the connection becomes an
// SSE stream that receives a "hello" event (what the caller may do), the
// newest "stats" event if there is one, and then one "stats" event a
// second. Runs on c's loop.
func (r *httpReq) statsStream() bool {
	if !r.only("GET") {
		return r.close
	}
	if string(r.method) == "HEAD" {
		return r.fail(405, "a stream has no HEAD")
	}
	h, b, c := r.h, r.b, r.c
	l := c.l
	if b.dash.streams.Add(1) > maxDashStreams {
		b.dash.streams.Add(-1)
		return r.fail(503, "too many open dashboards")
	}
	// Responses of earlier pipelined requests go first; from here on every
	// byte for this connection goes through the session buffer, in order.
	if len(h.out) > 0 {
		c.write(h.out)
		h.out = h.out[:0]
	}
	now := b.now.Load()
	s := &session{id: "dashboard:" + c.remote(), clean: true, sse: true, version: codec.V311, since: uint32(now)}
	s.c = c
	c.s = s
	c.x.stream = true
	c.x.lastBeat = now
	c.x.id.user, c.x.id.hasUser = r.user, r.hasUser
	l.wheel.remove(c) // no deadline: heartbeats find dead peers
	l.streams = append(l.streams, c)
	l.dash.conns = append(l.dash.conns, c)
	l.stats.streamsOpened.Add(1)
	l.stats.streams.Add(1)

	s.mu.Lock()
	out := append(s.buf().B, "HTTP/1.1 200 OK\r\nServer: tinymq\r\nDate: "...)
	out = append(out, *b.date.Load()...)
	out = append(out, "\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"...)
	out = append(out, "retry: 2000\n\nevent: hello\ndata: {\"write\":"...)
	if r.mayDisconnect() {
		out = append(out, "true"...)
	} else {
		out = append(out, "false"...)
	}
	out = append(out, `,"user":`...)
	out = appendJSONString(out, []byte(r.user))
	out = append(out, `,"api_key":`...)
	if b.apiKey != nil {
		out = append(out, "true"...)
	} else {
		out = append(out, "false"...)
	}
	out = append(out, "}\n\n"...)
	if ev := b.dash.event.Load(); ev != nil && time.Since(ev.at) < 2*time.Second {
		out = appendDashEvent(out, ev)
	}
	s.wbuf.B = out
	s.mu.Unlock()
	l.r.markDirty(s, l)
	if b.opts.Verbose {
		b.log.Info("dashboard opened", "remote", c.remote(), "user", r.user)
	}
	return false
}

// mayDisconnect reports whether the caller may disconnect clients (DELETE
// /api/v1/clients/{id}): the API's rule, without answering.
func (r *httpReq) mayDisconnect() bool {
	return r.admin || r.b.apiKey == nil
}

func appendDashEvent(out []byte, ev *dashEventData) []byte {
	out = append(out, "event: stats\ndata: "...)
	out = append(out, ev.data...)
	return append(out, "\n\n"...)
}

// dashTick sends the newest stats event to the loop's dashboard streams
// and forgets the closed ones. A stream whose reader is behind skips the
// event (the next one carries the same totals). Runs on l (from tick).
func (l *loop) dashTick() {
	d := &l.dash
	if len(d.conns) == 0 {
		return
	}
	ev := l.b.dash.event.Load()
	send := ev != nil && ev.seq != d.seq
	if send {
		d.seq = ev.seq
	}
	keep := d.conns[:0]
	for _, c := range d.conns {
		if !c.open {
			l.b.dash.streams.Add(-1)
			continue
		}
		keep = append(keep, c)
		if !send {
			continue
		}
		s := c.s
		s.mu.Lock()
		if !s.blockedLocked(l.b.opts.MaxOutboundBytes) {
			s.buf().B = appendDashEvent(s.buf().B, ev)
		}
		s.mu.Unlock()
		l.r.markDirty(s, l)
	}
	clear(d.conns[len(keep):])
	d.conns = keep
}

// matchClient reports whether a client matches the client list's search
// (?q=): a case-insensitive substring of its client id, username or
// remote address.
func matchClient(ci *ClientInfo, q string) bool {
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	return strings.Contains(strings.ToLower(ci.ClientID), q) ||
		strings.Contains(strings.ToLower(ci.Username), q) ||
		strings.Contains(ci.RemoteAddr, q)
}
