package store

// Message is a PUBLISH as the store keeps it. Passed in, its slices may alias
// a read buffer: the store copies them before the call returns. Handed out
// by a load or page callback, they alias the store's read buffer and are
// valid only during the callback unless the API says they are copies.
type Message struct {
	Topic       []byte
	Payload     []byte
	ContentType []byte // HTTP publish Content-Type, or v5 content type
	Props       []byte // MQTT 5 properties, opaque to the store
	QoS         uint8
	Retain      bool
	Expiry      int64 // unix milliseconds after which the message is dropped; 0: never
}

// SessionInfo is a session's header record.
type SessionInfo struct {
	ProtocolVersion uint8  // codec.Version of the last CONNECT
	Expiry          int64  // unix milliseconds after which the session is discarded; 0: never
	Props           []byte // opaque (v5 session state the engine wants back)
}

// Subscription is one filter of a session.
type Subscription struct {
	Filter  []byte
	QoS     uint8  // granted QoS
	Options uint8  // MQTT 5 subscription options byte (no-local, retain-as-published, retain handling)
	ID      uint32 // MQTT 5 subscription identifier, 0: none
	// Group tags a shared subscription ($share/NAME/FILTER) within its
	// session (the engine's numbering; 0: none). Queue and in-flight
	// entries delivered through it record the same tag, so that after a
	// restart they find their group again.
	Group uint32
}

// Will is a will message waiting for its delay (or for the session's end).
type Will struct {
	Message  Message
	Deadline int64 // unix milliseconds at which the engine publishes it
}

// InflightState is the state of an outbound QoS 1/2 message.
type InflightState uint8

const (
	// PublishSent: PUBLISH sent, PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
	PublishSent InflightState = iota
	// PubrelSent: QoS 2, PUBREC received and PUBREL sent, PUBCOMP awaited.
	PubrelSent
)

// Inflight is a recovered outbound in-flight message.
type Inflight struct {
	PacketID uint16
	State    InflightState
	QoS      uint8
	Retain   bool
	MsgID    uint64
	Group    uint32  // group tag (Subscription.Group) it came through; 0: none
	Message  Message // owned copy; zero when the record was missing
}

// Queued is a queued message paged from disk.
type Queued struct {
	Pos     uint64 // queue position; page on after it
	QoS     uint8  // delivery QoS (min of message and granted QoS)
	Retain  bool
	MsgID   uint64
	Group   uint32  // group tag (Subscription.Group) it came through; 0: none
	Message Message // owned copy
}

// Session is a recovered session. Its queue stays on disk: QueueHead and
// QueueTail are the first and last positions (both 0 when empty); page it
// with Store.Queue.
type Session struct {
	ClientID  string
	Info      SessionInfo
	Subs      []Subscription
	Inflight  []Inflight // in packet id order
	QoS2In    []uint16   // inbound QoS 2 ids awaiting PUBREL, in id order
	QueueHead uint64
	QueueTail uint64
	// QueueBytes is the payload bytes of the queue, as its entries
	// recorded them (EnqueueSized; entries written before sizes were
	// recorded count 0).
	QueueBytes int64
	// QueueGroups is the number of queue entries that recorded a group
	// tag (EnqueueGroup).
	QueueGroups int
	// MaxGroup is the highest group tag any of its subscriptions or
	// entries records: a new tag goes above it, so that no entry left
	// from an earlier subscription takes a later one's group.
	MaxGroup uint32
}
