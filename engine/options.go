package engine

import (
	"errors"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/engine/store"
)

// Options configure a Broker. The zero value of every field means "use the
// default" listed in DefaultOptions and docs/configuration.md.
type Options struct {
	// MQTTAddr is the TCP listen address for MQTT, e.g. ":1883" or
	// "127.0.0.1:0" (a free port, see Broker.MQTTAddr). Empty disables MQTT.
	MQTTAddr string

	// HTTPAddr is the TCP listen address of the HTTP door (publish, SSE,
	// retained reads, metrics, health, API and MQTT over WebSocket at
	// /mqtt), e.g. ":7800". Empty disables it.
	HTTPAddr string
	// WSAddr optionally adds a listener that serves only MQTT over
	// WebSocket (any path), e.g. ":1884". Empty disables it.
	WSAddr string

	// TLSAddr is the listen address for MQTT over TLS, e.g. ":8883"
	// (cmd/tinymq defaults it to ":8883" when TLSCert is set). Empty
	// disables it. Needs TLSCert and TLSKey. See docs/tls.md.
	TLSAddr string
	// HTTPSAddr is the listen address of the HTTP door over TLS (the HTTP
	// API, SSE and wss:// MQTT over WebSocket at /mqtt), with the same
	// certificate. Empty disables it.
	HTTPSAddr string
	// TLSCert and TLSKey are the server's PEM certificate (chain) and
	// private key files. They are read at New and by a reload.
	TLSCert, TLSKey string
	// TLSClientCA is a PEM file of CA certificates: when set, a client
	// certificate is requested and, if one is sent, it must verify against
	// these (mTLS).
	TLSClientCA string
	// TLSRequireCert fails the handshake of a client without a valid
	// certificate (needs TLSClientCA).
	TLSRequireCert bool
	// TLSCertAsUsername makes the Subject CN of a client's verified
	// certificate its MQTT username, as Mosquitto's use_identity_as_username
	// (needs TLSClientCA).
	TLSCertAsUsername bool
	// TLSHandshakeWorkers bounds the goroutines running TLS handshakes at
	// once (default: 2 × runtime.NumCPU(), at least 4); more handshakes
	// wait, their bytes buffered. No goroutine is kept per connection.
	TLSHandshakeWorkers int
	// ProxyProtocol names the listeners ("mqtt", "tls", "http", "https",
	// "ws") that expect a PROXY protocol v2 (or v1) header first on every
	// connection, from a load balancer or TLS terminator; the address it
	// names becomes the client's address.
	ProxyProtocol []string

	// APIKey, when set, is accepted as any MQTT client's password (the
	// username is ignored) and as "Authorization: Bearer <key>" (or
	// ?token=<key>) on HTTP; its holder may do everything. It turns off
	// anonymous access unless AllowAnonymous says otherwise.
	APIKey string

	HTTPMaxHeaderBytes int           // bytes of request line plus headers (431 above)
	HTTPMaxHeaders     int           // header lines per request (431 above)
	HTTPIdleTimeout    time.Duration // an idle keep-alive HTTP connection is closed after this
	HTTPReadTimeout    time.Duration // a request must arrive whole within this
	SSEHeartbeat       time.Duration // comment line sent on idle event streams

	// Loops is the number of event loops (default: DefaultLoops()).
	Loops int
	// WriteCoalesce holds a connection's pending output up to this long so
	// that messages arriving meanwhile leave in the same write (fewer
	// system calls at low rates, at up to this much added latency). 0
	// writes at the end of every read batch. The hold is bounded: a
	// per-loop timer flushes it, and so do a full buffer (earlyFlushBytes),
	// a close by the broker and any batch on the loop after the delay.
	WriteCoalesce time.Duration
	// WriteEachRead writes a connection's output at the end of every read
	// that produced it, as TinyMQ did before 2026-12. By default (false,
	// WriteCoalesce 0) output waits until the loop has handled every event
	// of its current wake-up, so that messages from many publishers to one
	// subscriber leave in one write: one task per wake-up that held
	// something, no timer, no delay beyond the wake-up's own work.
	WriteEachRead bool

	// MaxPacketSize bounds a whole MQTT packet, fixed header included. A
	// larger packet is refused from its fixed header, before it is buffered.
	MaxPacketSize int
	// MaxConnections bounds concurrent connections (0: unlimited).
	MaxConnections int
	// ConnectTimeout closes a socket that sends no CONNECT in time.
	ConnectTimeout time.Duration
	// MaxConnRate bounds new MQTT connections per second per source
	// address (IPv6: per /64), with bursts of MaxConnBurst (default: one
	// second's worth). Over it a connection is deferred, not refused: its
	// CONNECT waits until its token is due (connrate.go). 0: off.
	MaxConnRate  float64
	MaxConnBurst int

	MaxClientIDLen    int // bytes; longer ids are refused (CONNACK 2)
	MaxTopicLen       int // bytes of a topic name or filter
	MaxTopicLevels    int // levels of a topic name or filter
	MaxSubsPerConn    int // subscriptions per session (0: unlimited)
	MaxInflight       int // outbound QoS 1/2 messages awaiting acknowledgement
	MaxQueuedMsgs     int // messages queued per session (offline or blocked)
	MaxQueuedBytes    int // payload bytes queued per session
	QueueQoS0         bool
	MaxOutboundBytes  int           // bytes handed to the socket layer per connection before QoS 0 is dropped
	SlowConsumerAfter time.Duration // a session whose queue stays full this long is disconnected
	// SessionExpiry discards a persistent (clean session 0) session that
	// has been offline this long, with its subscriptions and queue
	// (0: never, as Mosquitto's persistent_client_expiration).
	SessionExpiry time.Duration

	// Durable state (persist.go, docs/durability.md). Persistence turns
	// the store on; its zero value keeps everything in memory (the test
	// suite's brokers), cmd/tinymq turns it on by default. DataDir is the
	// store's directory (default "./data"), Fsync when a write counts as
	// durable (default store.FsyncInterval; store.FsyncAlways holds QoS
	// 1/2 acknowledgements until their records are synced) and
	// FsyncInterval the interval's period (default 1 s).
	Persistence   bool
	DataDir       string
	Fsync         store.Fsync
	FsyncInterval time.Duration
	// CheckpointDir is where POST /api/v1/store/checkpoint writes its
	// copies: the request names a subdirectory, never a path, so the
	// HTTP API cannot write elsewhere (storeops.go). Default DataDir
	// with "-checkpoints" appended ("./data-checkpoints").
	CheckpointDir string
	storeFS       store.FS      // tests: the store's file system (injected errors); nil: the OS
	storeWindow   time.Duration // tests: the store's commit window (store.Options.Window); 0: its default
	storeRefuse   *atomic.Bool  // tests: while true, the store's writer queue is taken as full (persister.flush)
	// SharedStrategy picks the member of a shared-subscription group that
	// gets a message, among those that can take it now: SharedRoundRobin
	// ("round_robin", the default when empty), SharedRandom ("random") or
	// SharedLeastLoaded ("least_loaded"). docs/shared.md.
	SharedStrategy string

	// MQTT 5.0 (docs/mqtt5.md).
	//
	// MaxSessionExpiry caps the Session Expiry Interval a v5 client asks
	// for; CONNACK tells it the value used (0: no cap).
	MaxSessionExpiry time.Duration
	// MaxKeepAlive is the longest keep-alive, in seconds, as Mosquitto's
	// max_keepalive: a v5 client asking for more (or, when it is below
	// 65535, for none) is told this in CONNACK's Server Keep Alive; a
	// 3.1/3.1.1 client asking for more is refused (CONNACK 2). 0: 65535.
	MaxKeepAlive int
	// ReceiveMaximum is the Receive Maximum announced to v5 clients: QoS 1
	// and 2 PUBLISHes a client may have unacknowledged by the broker; one
	// more is a protocol violation (DISCONNECT 0x93). 3.x clients have the
	// same bound on QoS 2 messages awaiting PUBREL. Default 1024.
	ReceiveMaximum int
	// MaxTopicAlias is the Topic Alias Maximum announced to v5 clients
	// (aliases they may set; default 10, Mosquitto's max_topic_alias;
	// negative: none).
	MaxTopicAlias int
	// MaxTopicAliasOut bounds the aliases the broker assigns per v5
	// connection for topics it sends (within the client's Topic Alias
	// Maximum; default 16; negative: never send aliases).
	MaxTopicAliasOut int
	// ServerReference, when set, redirects v5 clients: every CONNECT is
	// refused with 0x9C "use another server" (0x9D "server moved" with
	// ServerMoved) naming it, and a v5 client disconnected at shutdown is
	// told it; 3.x clients are refused with CONNACK 3.
	ServerReference string
	ServerMoved     bool
	// ResponseInformation is sent in CONNACK to a v5 client that asks for
	// it (Request Response Information 1): the base of its response
	// topics, with the client id appended ("" : none sent).
	ResponseInformation string

	// AuthMethods are MQTT 5 enhanced-authentication methods besides the
	// built-in SCRAM-SHA-512 (served from PasswordFile); one with the same
	// name replaces it.
	AuthMethods []AuthMethod

	// ReturnIdleMemory gives the heap's free pages back to the operating
	// system when a burst of allocation (a connect storm) is over; see
	// memoryReturn.
	ReturnIdleMemory bool

	// SysInterval is how often $SYS topics are published (negative: never).
	SysInterval time.Duration

	// Auth decides credentials that are not the API key (CONNECT username
	// and password, HTTP Basic). Nil: the password file when PasswordFile
	// is set; otherwise a username is taken as given.
	Auth Authenticator
	// ACL decides what each identity may publish, receive and subscribe
	// to. Nil: the ACL file when ACLFile is set; otherwise everything
	// (except publishing under $SYS).
	ACL Authorizer
	// PasswordFile is a Mosquitto password file (mosquitto_passwd or
	// `tinymq passwd`); ACLFile a Mosquitto ACL file. Reload re-reads both.
	PasswordFile string
	ACLFile      string
	// AllowAnonymous admits clients that send no username and no password.
	// Nil: true unless an API key, a password file or an Authenticator is
	// configured (Mosquitto 2.0's rule).
	AllowAnonymous *bool
	// AuthWorkers is the number of goroutines that verify passwords off the
	// event loops (default: 2 × CPUs, at least 2).
	AuthWorkers int
	// AuthFailDelayMax caps the delay before a refusal to an address whose
	// logins keep failing: the first 3 failures in a row are answered at
	// once, then 1 s, 2 s, 4 s ... up to this (negative: never delay).
	AuthFailDelayMax time.Duration

	// Logger receives the broker's log lines (default: slog.Default()).
	Logger *slog.Logger
	// Verbose logs every connect, disconnect (with reason) and subscribe.
	Verbose bool

	// Version is reported in $SYS/broker/version.
	Version string
}

// DefaultLoops is the number of event loops a broker runs unless told:
// one when the process may use at most two CPUs (GOMAXPROCS), one per CPU
// above that. On two cores a second loop has no core of its own once the
// clients (or a load generator, or the kernel's loopback work) take theirs,
// and every message that crosses loops pays a wake-up: measured on a
// 2-core host, one loop delivered 1.3x the messages per CPU-second of two
// at a fixed 10,000 msg/s and 1.0-1.3x at saturation (docs/benchmarks.md,
// "Fewer system calls per message").
func DefaultLoops() int {
	n := runtime.GOMAXPROCS(0)
	if n <= 2 {
		return 1
	}
	return n
}

// DefaultOptions returns the embedded defaults that `tinymq` starts with.
func DefaultOptions() Options {
	return Options{
		MQTTAddr:           ":1883",
		Loops:              DefaultLoops(),
		HTTPAddr:           ":7800",
		HTTPMaxHeaderBytes: 8 * 1024,
		HTTPMaxHeaders:     64,
		HTTPIdleTimeout:    60 * time.Second,
		HTTPReadTimeout:    10 * time.Second,
		SSEHeartbeat:       15 * time.Second,
		MaxPacketSize:      2*1024*1024 + 64*1024, // 2 MiB of payload plus room for topic and properties
		ConnectTimeout:     10 * time.Second,
		MaxClientIDLen:     256,
		MaxTopicLen:        4096,
		MaxTopicLevels:     64,
		MaxSubsPerConn:     1000,
		MaxInflight:        32,
		MaxQueuedMsgs:      1000,
		MaxQueuedBytes:     64 * 1024 * 1024,
		MaxOutboundBytes:   4 * 1024 * 1024,
		SlowConsumerAfter:  30 * time.Second,
		SysInterval:        10 * time.Second,
		ReturnIdleMemory:   true,
		AuthFailDelayMax:   8 * time.Second,
		MaxKeepAlive:       65535,
		ReceiveMaximum:     1024,
		MaxTopicAlias:      10,
		MaxTopicAliasOut:   16,
		Version:            "tinymq dev",
	}
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.Loops <= 0 {
		o.Loops = d.Loops
	}
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = d.MaxPacketSize
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = d.ConnectTimeout
	}
	if o.MaxConnRate < 0 || o.MaxConnBurst < 0 {
		return o, errors.New("engine: negative MaxConnRate or MaxConnBurst")
	}
	if o.MaxClientIDLen <= 0 {
		o.MaxClientIDLen = d.MaxClientIDLen
	}
	if o.MaxTopicLen <= 0 {
		o.MaxTopicLen = d.MaxTopicLen
	}
	if o.MaxTopicLevels <= 0 {
		o.MaxTopicLevels = d.MaxTopicLevels
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = d.MaxInflight
	}
	if o.MaxInflight > 65535 {
		return o, errors.New("engine: MaxInflight above 65535")
	}
	if o.MaxQueuedMsgs <= 0 {
		o.MaxQueuedMsgs = d.MaxQueuedMsgs
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = d.MaxQueuedBytes
	}
	if o.MaxOutboundBytes <= 0 {
		o.MaxOutboundBytes = d.MaxOutboundBytes
	}
	if o.SlowConsumerAfter <= 0 {
		o.SlowConsumerAfter = d.SlowConsumerAfter
	}
	if o.SysInterval == 0 {
		o.SysInterval = d.SysInterval
	}
	if o.HTTPMaxHeaderBytes <= 0 {
		o.HTTPMaxHeaderBytes = d.HTTPMaxHeaderBytes
	}
	if o.HTTPMaxHeaders <= 0 {
		o.HTTPMaxHeaders = d.HTTPMaxHeaders
	}
	if o.HTTPIdleTimeout <= 0 {
		o.HTTPIdleTimeout = d.HTTPIdleTimeout
	}
	if o.HTTPReadTimeout <= 0 {
		o.HTTPReadTimeout = d.HTTPReadTimeout
	}
	if o.TLSHandshakeWorkers <= 0 {
		o.TLSHandshakeWorkers = max(4, 2*runtime.NumCPU())
	}
	if o.SSEHeartbeat <= 0 {
		o.SSEHeartbeat = d.SSEHeartbeat
	}
	if o.AuthWorkers <= 0 {
		o.AuthWorkers = max(2, 2*runtime.NumCPU())
	}
	if o.MaxKeepAlive <= 0 || o.MaxKeepAlive > 65535 {
		o.MaxKeepAlive = d.MaxKeepAlive
	}
	if o.ReceiveMaximum <= 0 {
		o.ReceiveMaximum = d.ReceiveMaximum
	}
	if o.ReceiveMaximum > 65535 {
		return o, errors.New("engine: ReceiveMaximum above 65535")
	}
	var err error
	if o.MaxTopicAlias, err = aliasCount(o.MaxTopicAlias, d.MaxTopicAlias, "MaxTopicAlias"); err != nil {
		return o, err
	}
	if o.MaxTopicAliasOut, err = aliasCount(o.MaxTopicAliasOut, d.MaxTopicAliasOut, "MaxTopicAliasOut"); err != nil {
		return o, err
	}
	if o.AuthFailDelayMax == 0 {
		o.AuthFailDelayMax = d.AuthFailDelayMax
	}
	if o.DataDir == "" {
		o.DataDir = "./data" // persistence
	}
	if o.CheckpointDir == "" {
		o.CheckpointDir = filepath.Clean(o.DataDir) + "-checkpoints"
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = time.Second // persistence
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Version == "" {
		o.Version = d.Version
	}
	if o.MQTTAddr == "" && o.HTTPAddr == "" && o.WSAddr == "" && o.TLSAddr == "" && o.HTTPSAddr == "" {
		return o, errors.New("engine: no listener configured")
	}
	return o, nil
}

// aliasCount applies a topic-alias count option's convention: 0 takes the
// default, negative means none, above 65535 is refused.
func aliasCount(v, def int, name string) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0:
		return 0, nil
	case v > 65535:
		return v, errors.New("engine: " + name + " above 65535")
	}
	return v, nil
}
