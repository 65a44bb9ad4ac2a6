package engine

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/tinymq/tinymq/codec"
)

// The hooks the bridges (package bridge, wired by cmd/tinymq) need from the
// broker. A bridge is two MQTT connections, one to the remote broker and
// one to this broker over loopback; the broker knows nothing else about
// it. It gives the local connections credentials that pass every check
// (BridgeCredentials), publishes their $SYS notifications (PublishSys),
// serves their status (SetBridgeInfo: GET /api/v1/bridges, /metrics), and
// treats a client whose CONNECT carries Mosquitto's bridge bit (a 3.1.1
// bridge into this broker) as No Local and Retain As Published on every
// subscription, so that two brokers bridged both ways do not loop.

// BridgeInfo is one bridge's status, as served by GET /api/v1/bridges.
// The bridge manager fills every field but Queued, Inflight and
// QueueDropped, which the broker reads from the local connection's session.
type BridgeInfo struct {
	Name           string `json:"name"`
	State          string `json:"state"`  // "connected", "connecting", "backoff", "stopped"
	Remote         string `json:"remote"` // address connected to (or last tried)
	RemoteClientID string `json:"remote_client_id"`
	LocalClientID  string `json:"local_client_id"`
	Connects       uint64 `json:"connects"`     // successful connections to the remote
	MsgsOut        uint64 `json:"messages_out"` // local -> remote, written to the remote
	MsgsIn         uint64 `json:"messages_in"`  // remote -> local, written to this broker
	BytesOut       uint64 `json:"bytes_out"`    // payload bytes
	BytesIn        uint64 `json:"bytes_in"`     // payload bytes
	Dropped        uint64 `json:"dropped"`      // messages the bridge could not carry (refused by the other side)
	LastError      string `json:"last_error,omitempty"`
	Queued         int    `json:"queued"`        // messages the broker holds for the remote (the local session's queue)
	Inflight       int    `json:"inflight"`      // sent to the bridge, awaiting the remote's acknowledgement
	QueueDropped   uint64 `json:"queue_dropped"` // messages for the remote the broker dropped: the queue was full (or, at QoS 0, the bridge behind)
}

// bridgeHook is the broker's side of the bridges.
type bridgeHook struct {
	key  []byte                              // random password of the bridges' local connections
	info atomic.Pointer[func() []BridgeInfo] // set by SetBridgeInfo
	// drops counts, per local client id of a bridge, the messages the
	// broker dropped for it (read-only map once set by SetBridgeInfo).
	drops atomic.Pointer[map[string]*atomic.Uint64]
	mu    sync.Mutex // serialises sys
	sys   *router    // PublishSys's router (not a loop)
}

// initBridgeHook makes the bridge password and router. Runs in New.
func (b *Broker) initBridgeHook() {
	var k [24]byte
	_, _ = rand.Read(k[:])
	b.bridges.key = []byte("bridge-" + hex.EncodeToString(k[:]))
	b.bridges.sys = newRouter(b, nil, &b.sysStats)
}

// BridgeCredentials are the username and password a bridge's local
// connection sends: the password is a random secret made at New that the
// broker accepts on MQTT CONNECT as it accepts the API key (no password
// file lookup, no ACL), so bridges work whatever the access control. It
// never leaves the process and is no HTTP credential. Any goroutine.
func (b *Broker) BridgeCredentials() (username string, password []byte) {
	return "tinymq-bridge", append([]byte(nil), b.bridges.key...)
}

// bridgeKeyMatches reports whether a CONNECT password is the bridges' key
// (MQTT only: it is no HTTP credential). Any goroutine.
func (b *Broker) bridgeKeyMatches(has bool, password []byte) bool {
	return has && subtle.ConstantTimeCompare(password, b.bridges.key) == 1
}

// SetBridgeInfo installs the function that lists the bridges for GET
// /api/v1/bridges and /metrics. f runs on an event loop: it must not
// block (read counters, take a short lock, no I/O). It is called once
// here to learn the bridges' local client ids, whose drops the broker
// counts from then on (BridgeInfo.QueueDropped). Any goroutine.
func (b *Broker) SetBridgeInfo(f func() []BridgeInfo) {
	if f == nil {
		b.bridges.info.Store(nil)
		b.bridges.drops.Store(nil)
		return
	}
	drops := map[string]*atomic.Uint64{}
	for _, x := range f() {
		if x.LocalClientID != "" {
			drops[x.LocalClientID] = new(atomic.Uint64)
		}
	}
	b.bridges.drops.Store(&drops)
	b.bridges.info.Store(&f)
}

// drop counts a message dropped for session id when it is a bridge's.
// Runs on the routing loop (or the $SYS goroutine): one atomic load when
// no bridge is configured, and only on the drop path.
func (h *bridgeHook) drop(id string) {
	if m := h.drops.Load(); m != nil {
		if c := (*m)[id]; c != nil {
			c.Add(1)
		}
	}
}

// Bridges lists the bridges, each with the queue the broker holds for it.
// Nil when none is configured. Any goroutine.
func (b *Broker) Bridges() []BridgeInfo {
	f := b.bridges.info.Load()
	if f == nil {
		return nil
	}
	out := (*f)()
	drops := b.bridges.drops.Load()
	for i := range out {
		if drops != nil {
			if c := (*drops)[out[i].LocalClientID]; c != nil {
				out[i].QueueDropped = c.Load()
			}
		}
		if out[i].LocalClientID == "" {
			continue
		}
		s := b.sessionByID(out[i].LocalClientID)
		if s == nil {
			continue
		}
		s.mu.Lock()
		if !s.dead {
			out[i].Queued, out[i].Inflight = s.queuedLocked(), s.inflightLocked()
		}
		s.mu.Unlock()
	}
	return out
}

var errNotSys = errors.New("engine: PublishSys: topic outside $SYS/")

// PublishSys publishes a message under $SYS/ (which clients may not
// publish to), e.g. a bridge's retained connection state. It routes like
// the $SYS publisher: through the destination loops' mailboxes, never
// blocking on a connection. Any goroutine.
func (b *Broker) PublishSys(topicName string, payload []byte, retain bool) error {
	if len(topicName) < 5 || topicName[:5] != "$SYS/" {
		return errNotSys
	}
	if err := b.validName([]byte(topicName)); err != nil {
		return err
	}
	if b.closing.Load() {
		return errStopped
	}
	m := cloneMessage([]byte(topicName), payload, 0, retain)
	b.bridges.mu.Lock()
	b.bridges.sys.publish(m.topic, m.payload, 0, retain, m)
	b.bridges.sys.finish()
	b.bridges.mu.Unlock()
	return nil
}

// bridgeSubOpts are the subscription options a 3.x bridge client (CONNECT
// with Mosquitto's bridge bit) gets on filter: No Local, so that it is not
// sent back what it published, and Retain As Published, so that retained
// messages cross the bridge retained, as Mosquitto does for bridges.
// Shared subscriptions may not be No Local [MQTT5-3.8.3-4]: they get
// neither. Runs on c's loop.
func (c *conn) bridgeSubOpts(filter []byte) uint8 {
	if c.x == nil || !c.x.bridge || (len(filter) > 7 && string(filter[:7]) == "$share/") {
		return 0
	}
	return codec.SubOptNoLocal | codec.SubOptRetainAsPublished
}

// bridgesList serves GET /api/v1/bridges (and /api/bridges). Runs on the
// request's loop.
func (r *httpReq) bridgesList() bool {
	if !r.admitted() || !r.only("GET") {
		return r.close
	}
	list := r.b.Bridges()
	if list == nil {
		list = []BridgeInfo{}
	}
	out, _ := json.Marshal(map[string]any{"bridges": list})
	return r.ok(200, out)
}

// appendBridgeMetrics renders the bridges as Prometheus lines (nothing
// when none is configured). Any goroutine.
func (b *Broker) appendBridgeMetrics(dst []byte) []byte {
	list := b.Bridges()
	if len(list) == 0 {
		return dst
	}
	w := promWriter{b: dst}
	type fam struct {
		name, typ, help string
		v               func(*BridgeInfo) float64
	}
	fams := []fam{
		{"tinymq_bridge_up", "gauge", "1 while the bridge is connected to its remote.", func(x *BridgeInfo) float64 {
			if x.State == "connected" {
				return 1
			}
			return 0
		}},
		{"tinymq_bridge_connects_total", "counter", "Successful connections to the remote.", func(x *BridgeInfo) float64 { return float64(x.Connects) }},
		{"tinymq_bridge_messages_out_total", "counter", "Messages carried from this broker to the remote.", func(x *BridgeInfo) float64 { return float64(x.MsgsOut) }},
		{"tinymq_bridge_messages_in_total", "counter", "Messages carried from the remote to this broker.", func(x *BridgeInfo) float64 { return float64(x.MsgsIn) }},
		{"tinymq_bridge_bytes_out_total", "counter", "Payload bytes carried to the remote.", func(x *BridgeInfo) float64 { return float64(x.BytesOut) }},
		{"tinymq_bridge_bytes_in_total", "counter", "Payload bytes carried from the remote.", func(x *BridgeInfo) float64 { return float64(x.BytesIn) }},
		{"tinymq_bridge_dropped_total", "counter", "Messages the bridge could not carry (refused by the other side).", func(x *BridgeInfo) float64 { return float64(x.Dropped) }},
		{"tinymq_bridge_queue_dropped_total", "counter", "Messages for the remote dropped by this broker: the bridge's queue was full.", func(x *BridgeInfo) float64 { return float64(x.QueueDropped) }},
		{"tinymq_bridge_queued_messages", "gauge", "Messages this broker holds for the remote.", func(x *BridgeInfo) float64 { return float64(x.Queued) }},
		{"tinymq_bridge_inflight_messages", "gauge", "Messages awaiting the remote's acknowledgement.", func(x *BridgeInfo) float64 { return float64(x.Inflight) }},
	}
	for _, f := range fams {
		w.family(f.name, f.typ, f.help)
		for i := range list {
			w.sample(f.name, `bridge="`+promEscape(list[i].Name)+`"`, f.v(&list[i]))
		}
	}
	return w.b
}

// publishBridgeSys publishes each bridge's figures under
// $SYS/broker/bridge/NAME/. $SYS goroutine only.
func (b *Broker) publishBridgeSys(pub func(name, value string)) {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for _, x := range b.Bridges() {
		p := "bridge/" + x.Name + "/"
		pub(p+"state", x.State)
		pub(p+"connects", u(x.Connects))
		pub(p+"messages/sent", u(x.MsgsOut))
		pub(p+"messages/received", u(x.MsgsIn))
		pub(p+"bytes/sent", u(x.BytesOut))
		pub(p+"bytes/received", u(x.BytesIn))
		pub(p+"messages/dropped", u(x.Dropped+x.QueueDropped))
		pub(p+"queued", strconv.Itoa(x.Queued+x.Inflight))
	}
}
