package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tinymq/tinymq/codec"
)

// LoadConfig is a throughput/latency scenario:
//
//	fanin:  Publishers publish to bench/fanin/{p}; one subscriber on bench/fanin/+
//	fanout: one publisher to bench/fanout; Subscribers subscribers on it
//	pairs:  Publishers pairs; publisher k -> bench/pairs/{k} -> subscriber k
type LoadConfig struct {
	Scenario    string
	Addr        string
	Publishers  int
	Subscribers int
	QoS         uint8
	Payload     int           // bytes (at least 24: publisher, sequence, send time)
	Rate        int           // total messages/s over all publishers; 0 = as fast as credit allows
	Window      int           // per publisher: messages sent but not yet received by every subscriber
	Duration    time.Duration // publishing time
	Drain       time.Duration // longest wait for the last deliveries after publishing stops
	BrokerPID   int           // when > 0, broker CPU time is read from /proc

	// Spread puts the publishers of a fixed Rate out of phase, as the
	// devices of a fleet are: publisher i of n is due i/n of its period
	// after publisher 0. Without it every publisher is due at the same
	// instants, so the broker gets a burst of one message per publisher
	// each period.
	Spread bool

	// MQTTVersion is the protocol every connection speaks: "3.1.1" (the
	// default) or "5". At 5 subscribers announce Receive Maximum = Window
	// and publishers keep at most the broker's Receive Maximum of QoS > 0
	// messages unacknowledged.
	MQTTVersion string
	// TopicAlias (5 only): publishers send their topic once with alias 1,
	// then an empty topic and alias 1, when the broker's CONNACK allows
	// aliases; subscribers announce Topic Alias Maximum 16 and resolve the
	// aliases the broker sends.
	TopicAlias bool
	// UserProps (5 only): user properties per PUBLISH, "k<i>" = 16 bytes;
	// subscribers check that they arrive, in order.
	UserProps int
	// Persistent: every connection has a persistent session (3.1.1 clean
	// session 0; 5.0 Session Expiry Interval of an hour), with client ids
	// unique to the run, so that a broker stores every QoS > 0 message it
	// queues or sends (the durability figures).
	Persistent bool

	// Progress, when set, is called about once a second with the
	// connections up and the messages delivered so far.
	Progress func(connected, delivered int64) `json:"-"`
}

// LoadResult is the outcome of a load run.
type LoadResult struct {
	Sent           int64   `json:"sent"`
	Expected       int64   `json:"expected_deliveries"`
	Delivered      int64   `json:"delivered"`
	Lost           int64   `json:"lost"`
	Duplicates     int64   `json:"duplicates"`
	OutOfOrder     int64   `json:"out_of_order"`
	Seconds        float64 `json:"seconds"`
	DeliveredPerS  float64 `json:"delivered_per_sec"`
	P50us          float64 `json:"latency_p50_us"`
	P90us          float64 `json:"latency_p90_us"`
	P99us          float64 `json:"latency_p99_us"`
	P999us         float64 `json:"latency_p999_us"`
	MaxUs          float64 `json:"latency_max_us"`
	BrokerCPU      float64 `json:"broker_cpu_seconds,omitempty"`
	PerBrokerCPU   float64 `json:"delivered_per_broker_cpu_second,omitempty"`
	BrokerRSSAfter int64   `json:"broker_rss_after,omitempty"`
	// BrokerSyscR and BrokerSyscW are the read- and write-family system
	// calls the broker made over the run (/proc/PID/io syscr, syscw, same
	// window as BrokerCPU); RWSyscallsPerMsg is their sum per delivered
	// message. send/recv-family calls and epoll_wait are not in them
	// (ProcIO).
	BrokerSyscR      int64   `json:"broker_syscr,omitempty"`
	BrokerSyscW      int64   `json:"broker_syscw,omitempty"`
	RWSyscallsPerMsg float64 `json:"rw_syscalls_per_msg,omitempty"`
	// SessionPrefix is the client id prefix of a persistent run's
	// sessions ("<prefix>-sub-<i>", "<prefix>-pub-<i>"), left on the broker.
	SessionPrefix string `json:"session_prefix,omitempty"`

	MQTTVersion string `json:"mqtt_version"` // "3.1.1" or "5"

	// MQTT 5 (zero at 3.1.1). BrokerTopicAliasMax and BrokerReceiveMax are
	// the smallest Topic Alias Maximum and Receive Maximum the broker's
	// CONNACKs gave the publishers (Receive Maximum absent: 65535);
	// AliasedPublishers is how many publishers sent topic aliases (none
	// when the broker's maximum is 0). AliasErrors counts PUBLISHes whose
	// alias the subscriber could not resolve (unknown, 0 or above its
	// maximum), AliasedDeliveries those it resolved from an alias the
	// broker had set (brokers that alias toward subscribers),
	// TopicMismatches deliveries whose (resolved) topic is not the
	// publisher's, PropsChecked deliveries whose user properties were
	// checked and PropMismatches those among them that were not the ones
	// sent, in order. AckErrors counts PUBACKs and PUBRECs with a failure
	// reason code (FirstAckReason the first one's, in hex).
	BrokerTopicAliasMax int    `json:"broker_topic_alias_max,omitempty"`
	BrokerReceiveMax    int    `json:"broker_receive_max,omitempty"`
	AliasedPublishers   int    `json:"aliased_publishers,omitempty"`
	AliasedDeliveries   int64  `json:"aliased_deliveries,omitempty"`
	AliasErrors         int64  `json:"alias_errors,omitempty"`
	TopicMismatches     int64  `json:"topic_mismatches,omitempty"`
	PropsChecked        int64  `json:"user_props_checked,omitempty"`
	PropMismatches      int64  `json:"user_prop_mismatches,omitempty"`
	AckErrors           int64  `json:"ack_errors,omitempty"`
	FirstAckReason      string `json:"first_ack_reason,omitempty"`

	// Disconnects counts the DISCONNECT packets the broker sent (any
	// version; 3.1.1 has none), DisconnectReason is the first one's reason
	// code in hex.
	Disconnects      int64  `json:"server_disconnects,omitempty"`
	DisconnectReason string `json:"server_disconnect_reason,omitempty"`
}

const headerLen = 24 // publisher index, sequence, send time (unix ns)

// subscriberOf says which subscribers receive publisher p's messages.
func (c *LoadConfig) topology() (pubTopic func(p int) string, subFilter func(s int) string, receives func(s, p int) bool, err error) {
	switch c.Scenario {
	case "fanin":
		c.Subscribers = 1
		return func(p int) string { return fmt.Sprintf("bench/fanin/%d", p) },
			func(int) string { return "bench/fanin/+" },
			func(int, int) bool { return true }, nil
	case "fanout":
		c.Publishers = 1
		return func(int) string { return "bench/fanout" },
			func(int) string { return "bench/fanout" },
			func(int, int) bool { return true }, nil
	case "pairs":
		c.Subscribers = c.Publishers
		return func(p int) string { return fmt.Sprintf("bench/pairs/%d", p) },
			func(s int) string { return fmt.Sprintf("bench/pairs/%d", s) },
			func(s, p int) bool { return s == p }, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown scenario %q (fanin, fanout, pairs)", c.Scenario)
}

// tally is one subscriber's accounting.
type tally struct {
	recv    []atomic.Int64 // unique messages received per publisher
	seen    [][]uint64     // per publisher: bitset of sequences seen
	maxSeq  []int64
	dups    int64
	reorder int64
	hist    *hdrhistogram.Histogram
	last    atomic.Int64 // unix ns of the last delivery
}

func (t *tally) record(p int, seq int64, sentNs int64, now int64) {
	if p < 0 || p >= len(t.seen) || seq < 0 {
		return
	}
	w := int(seq / 64)
	for len(t.seen[p]) <= w {
		t.seen[p] = append(t.seen[p], 0)
	}
	bit := uint64(1) << (seq % 64)
	if t.seen[p][w]&bit != 0 {
		t.dups++
		return
	}
	t.seen[p][w] |= bit
	if seq < t.maxSeq[p] {
		t.reorder++
	}
	t.maxSeq[p] = max(t.maxSeq[p], seq)
	t.recv[p].Add(1)
	_ = t.hist.RecordValue(max((now-sentNs)/1000, 0))
	t.last.Store(now)
}

// Normalize applies the scenario's shape (fanin has one subscriber, fanout
// one publisher, pairs as many subscribers as publishers) and defaults.
func (c *LoadConfig) Normalize() error {
	if _, _, _, err := c.topology(); err != nil {
		return err
	}
	if c.Publishers <= 0 || c.Subscribers <= 0 {
		return errors.New("need at least one publisher and one subscriber")
	}
	if c.QoS > 2 {
		return errors.New("QoS must be 0, 1 or 2")
	}
	v, err := ParseMQTTVersion(c.MQTTVersion)
	if err != nil {
		return err
	}
	c.MQTTVersion = VersionName(v)
	if v != codec.V5 && (c.TopicAlias || c.UserProps != 0) {
		return errors.New("--topic-alias and --user-props need --mqtt-version 5")
	}
	if c.UserProps < 0 || c.UserProps > maxUserProps {
		return fmt.Errorf("user properties: %d; want 0 to %d", c.UserProps, maxUserProps)
	}
	c.Payload = max(c.Payload, headerLen)
	if c.Window <= 0 {
		c.Window = 256
	}
	if v == codec.V5 {
		c.Window = min(c.Window, 65535) // it is the subscribers' Receive Maximum
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	return nil
}

// version is the normalized configuration's protocol level.
func (c *LoadConfig) version() codec.Version {
	if c.MQTTVersion == "5" {
		return codec.V5
	}
	return codec.V311
}

// RunLoad runs a fanin, fanout or pairs scenario against cfg.Addr.
func RunLoad(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	var res LoadResult
	if err := cfg.Normalize(); err != nil {
		return res, err
	}
	pubTopic, subFilter, receives, _ := cfg.topology()
	v := cfg.version()
	res.MQTTVersion = cfg.MQTTVersion
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	topics := make([][]byte, cfg.Publishers)
	for p := range topics {
		topics[p] = []byte(pubTopic(p))
	}
	userProps := benchUserProps(cfg.UserProps)
	var subProps codec.Properties
	if v == codec.V5 {
		subProps.ReceiveMaximum = uint16(cfg.Window)
		subProps.Set(codec.PropReceiveMaximum)
		if cfg.TopicAlias {
			subProps.TopicAliasMaximum = subTopicAliasMax
			subProps.Set(codec.PropTopicAliasMaximum)
		}
	}

	subs := make([]*subscriber, cfg.Subscribers)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	idBase := "bench"
	if cfg.Persistent {
		idBase = "bench-" + NewRunID() // fresh persistent sessions every run
		res.SessionPrefix = idBase
	}
	var wg sync.WaitGroup
	for s := range subs {
		t := &tally{recv: make([]atomic.Int64, cfg.Publishers), seen: make([][]uint64, cfg.Publishers),
			maxSeq: make([]int64, cfg.Publishers), hist: hdrhistogram.New(1, 60_000_000, 3)}
		sub := newSubscriber(v, t, topics, userProps, subProps.TopicAliasMaximum)
		subs[s] = sub
		c, r, _, err := dialSession(cfg.Addr, fmt.Sprintf("%s-sub-%d", idBase, s), v, &subProps, cfg.Persistent)
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
		if err := subscribeVersion(c, r, v, subFilter(s), cfg.QoS); err != nil {
			return res, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); sub.loop(c, r) }()
	}

	// received(p): deliveries of publisher p at its slowest subscriber.
	received := func(p int) int64 {
		m := int64(-1)
		for s, sub := range subs {
			if receives(s, p) {
				if v := sub.t.recv[p].Load(); m < 0 || v < m {
					m = v
				}
			}
		}
		return m
	}
	var cpu0 float64
	if cfg.BrokerPID > 0 {
		st, err := ReadProc(cfg.BrokerPID)
		if err != nil {
			return res, err
		}
		cpu0 = st.CPUSeconds
	}
	// The broker's system calls, over the same window as its CPU; a
	// broker whose /proc/PID/io cannot be read has none reported.
	var io0 ProcIO
	ioErr := errors.New("no broker pid")
	if cfg.BrokerPID > 0 {
		io0, ioErr = ReadProcIO(cfg.BrokerPID)
	}
	sent := make([]atomic.Int64, cfg.Publishers)
	var pstats pubStats
	start := time.Now()
	stop := start.Add(cfg.Duration)
	var pwg sync.WaitGroup
	errCh := make(chan error, cfg.Publishers)
	for p := 0; p < cfg.Publishers; p++ {
		c, r, ack, err := dialSession(cfg.Addr, fmt.Sprintf("%s-pub-%d", idBase, p), v, nil, cfg.Persistent)
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
		pc := &pubConn{c: c, r: r, v: v, receiveMax: 65535}
		if v == codec.V5 {
			if ack.Props.Has(codec.PropMaximumQoS) && cfg.QoS > ack.Props.MaximumQoS {
				return res, fmt.Errorf("publisher %d: the broker's Maximum QoS is %d", p, ack.Props.MaximumQoS)
			}
			if ack.Props.Has(codec.PropReceiveMaximum) {
				pc.receiveMax = ack.Props.ReceiveMaximum
			}
			pc.aliasMax = ack.Props.TopicAliasMaximum // absent: 0, no aliases
		}
		if p == 0 || int(pc.aliasMax) < res.BrokerTopicAliasMax {
			res.BrokerTopicAliasMax = int(pc.aliasMax)
		}
		if p == 0 || int(pc.receiveMax) < res.BrokerReceiveMax {
			res.BrokerReceiveMax = int(pc.receiveMax)
		}
		if cfg.TopicAlias && pc.aliasMax > 0 {
			res.AliasedPublishers++
		}
		pwg.Add(1)
		go func(p int) {
			defer pwg.Done()
			if err := publisherLoop(ctx, pc, p, topics[p], userProps, &cfg, start, stop, &sent[p], &pstats, func() int64 { return received(p) }); err != nil {
				errCh <- err
			}
		}(p)
	}
	if v != codec.V5 {
		res.BrokerTopicAliasMax, res.BrokerReceiveMax = 0, 0
	}
	stopProgress := make(chan struct{})
	defer close(stopProgress)
	if cfg.Progress != nil {
		conns := int64(len(conns))
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					var total int64
					for _, sub := range subs {
						for p := range sub.t.recv {
							total += sub.t.recv[p].Load()
						}
					}
					cfg.Progress(conns, total)
				}
			}
		}()
	}
	pwg.Wait()
	select {
	case err := <-errCh:
		return res, err
	default:
	}
	for p := range sent {
		res.Sent += sent[p].Load()
		for s := range subs {
			if receives(s, p) {
				res.Expected += sent[p].Load()
			}
		}
	}
	// Drain: until everything arrived, or nothing moved for a while.
	deadline := time.Now().Add(cfg.Drain)
	lastTotal, lastMove := int64(-1), time.Now()
	for {
		var total int64
		for _, sub := range subs {
			for p := range sub.t.recv {
				total += sub.t.recv[p].Load()
			}
		}
		if total >= res.Expected || time.Now().After(deadline) || time.Since(lastMove) > 2*time.Second {
			break
		}
		if total != lastTotal {
			lastTotal, lastMove = total, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	var end int64
	merged := hdrhistogram.New(1, 60_000_000, 3)
	for _, sub := range subs {
		end = max(end, sub.t.last.Load())
	}
	if cfg.BrokerPID > 0 {
		if st, err := ReadProc(cfg.BrokerPID); err == nil {
			res.BrokerCPU = st.CPUSeconds - cpu0
			res.BrokerRSSAfter = st.RSSBytes
		}
		if ioErr == nil {
			if io1, err := ReadProcIO(cfg.BrokerPID); err == nil {
				res.BrokerSyscR, res.BrokerSyscW = io1.SyscR-io0.SyscR, io1.SyscW-io0.SyscW
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	wg.Wait()
	for _, sub := range subs {
		t := sub.t
		merged.Merge(t.hist)
		res.Duplicates += t.dups
		res.OutOfOrder += t.reorder
		for p := range t.recv {
			res.Delivered += t.recv[p].Load()
		}
		res.AliasErrors += sub.aliasErrors
		res.AliasedDeliveries += sub.aliased
		res.TopicMismatches += sub.topicMismatches
		res.PropsChecked += sub.propsChecked
		res.PropMismatches += sub.propMismatches
		if sub.disconnected {
			res.Disconnects++
			if res.DisconnectReason == "" {
				res.DisconnectReason = reasonHex(sub.disconnectReason)
			}
		}
	}
	pstats.addTo(&res)
	res.Lost = res.Expected - res.Delivered
	if end > 0 {
		res.Seconds = float64(end-start.UnixNano()) / 1e9
	}
	if res.Seconds > 0 {
		res.DeliveredPerS = float64(res.Delivered) / res.Seconds
	}
	if res.BrokerCPU > 0 {
		res.PerBrokerCPU = float64(res.Delivered) / res.BrokerCPU
	}
	if res.Delivered > 0 {
		res.RWSyscallsPerMsg = float64(res.BrokerSyscR+res.BrokerSyscW) / float64(res.Delivered)
	}
	res.P50us = float64(merged.ValueAtQuantile(50))
	res.P90us = float64(merged.ValueAtQuantile(90))
	res.P99us = float64(merged.ValueAtQuantile(99))
	res.P999us = float64(merged.ValueAtQuantile(99.9))
	res.MaxUs = float64(merged.Max())
	return res, nil
}

func dialMQTT(addr, id string) (net.Conn, *bufio.Reader, error) { return dialMQTTAuth(addr, id, "") }

// dialMQTTAuth connects a clean 3.1.1 session; a non-empty key is sent as
// the password (TinyMQ's API key).
func dialMQTTAuth(addr, id, key string) (net.Conn, *bufio.Reader, error) {
	c, r, _, err := dialVersion(addr, id, key, codec.V311, nil)
	return c, r, err
}

// dialVersion connects a clean session at protocol level v with the
// CONNECT properties props (5 only; nil: none) and returns the broker's
// CONNACK (its properties alias memory of their own). A CONNACK with a
// failure code is an error that carries the code in hex. A non-empty key is
// sent as the password (TinyMQ's API key).
func dialVersion(addr, id, key string, v codec.Version, props *codec.Properties) (net.Conn, *bufio.Reader, *codec.Connack, error) {
	p := codec.Connect{Version: v, CleanStart: true, KeepAlive: 60, ClientID: []byte(id)}
	if props != nil && v == codec.V5 {
		p.Props = *props
	}
	return dialConnect(addr, key, &p)
}

// dialSession is dialVersion without a key, and with a persistent session
// when persistent is set (3.1.1: clean session 0; 5.0: clean start and a
// Session Expiry Interval of an hour).
func dialSession(addr, id string, v codec.Version, props *codec.Properties, persistent bool) (net.Conn, *bufio.Reader, *codec.Connack, error) {
	if !persistent {
		return dialVersion(addr, id, "", v, props)
	}
	p := codec.Connect{Version: v, CleanStart: v == codec.V5, KeepAlive: 60, ClientID: []byte(id)}
	if v == codec.V5 {
		if props != nil {
			p.Props = *props
		}
		p.Props.SessionExpiry = 3600
		p.Props.Set(codec.PropSessionExpiry)
	}
	return dialConnect(addr, "", &p)
}

// dialConnect sends p and reads the CONNACK (see dialVersion).
func dialConnect(addr, key string, p *codec.Connect) (net.Conn, *bufio.Reader, *codec.Connack, error) {
	v, id := p.Version, string(p.ClientID)
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, nil, err
	}
	if key != "" {
		p.UsernameFlag, p.Username, p.PasswordFlag, p.Password = true, []byte("bench"), true, []byte(key)
	}
	if _, err := c.Write(p.AppendTo(nil)); err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	r := bufio.NewReaderSize(c, 256*1024)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, body, err := readPacket(r)
	if err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("connect %s: %v", id, err)
	}
	if h.Type != codec.TypeConnack {
		c.Close()
		return nil, nil, nil, fmt.Errorf("connect %s: %s", id, unexpected(v, h, body))
	}
	ack := &codec.Connack{}
	if err := ack.Decode(v, h, body); err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("connect %s: CONNACK: %v", id, err)
	}
	// A 5.0 CONNACK succeeds only with 0x00; a 3.1.1 broker answering a
	// 5.0 CONNECT sends return code 0x01 (unacceptable protocol version).
	if ack.Reason != codec.Success {
		c.Close()
		return nil, nil, nil, fmt.Errorf("connect %s: CONNACK %s %s", id, codeWord(v), reasonHex(ack.Reason))
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, r, ack, nil
}

// subscribeOne subscribes a 3.1.1 connection c to filter (subscribeVersion).
func subscribeOne(c net.Conn, r *bufio.Reader, filter string, qos uint8) error {
	return subscribeVersion(c, r, codec.V311, filter, qos)
}

// subscribeVersion subscribes c, at protocol level v, to filter and waits
// (at most 10 s) for the SUBACK; a failure code (0x80 and up) is an error
// that carries the code in hex.
func subscribeVersion(c net.Conn, r *bufio.Reader, v codec.Version, filter string, qos uint8) error {
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	if _, err := c.Write(sub.AppendTo(nil, v)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, body, err := readPacket(r)
	if err != nil {
		return fmt.Errorf("subscribe %s: %v", filter, err)
	}
	if h.Type != codec.TypeSuback {
		return fmt.Errorf("subscribe %s: %s", filter, unexpected(v, h, body))
	}
	var ack codec.Suback
	if err := ack.Decode(v, h, body); err != nil || len(ack.Reasons) != 1 {
		return fmt.Errorf("subscribe %s: SUBACK % x: %v", filter, body, err)
	}
	if ack.Reasons[0] >= 0x80 {
		return fmt.Errorf("subscribe %s: SUBACK reason %s", filter, reasonHex(ack.Reasons[0]))
	}
	_ = c.SetReadDeadline(time.Time{})
	return nil
}

// readPacket reads one whole packet (the body is a fresh slice).
func readPacket(r *bufio.Reader) (codec.FixedHeader, []byte, error) {
	var hdr [5]byte
	for i := 0; i < 5; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return codec.FixedHeader{}, nil, err
		}
		hdr[i] = b
		h, _, err := codec.ReadFrame(hdr[:i+1], 0)
		if err != nil {
			return h, nil, err
		}
		if h.HeaderLen > 0 {
			body := make([]byte, h.Remaining)
			_, err := io.ReadFull(r, body)
			return h, body, err
		}
	}
	return codec.FixedHeader{}, nil, errors.New("bad header")
}

// subscriberLoop reads a 3.1.1 connection's deliveries, acknowledges them
// and tallies them, without topic or property checks.
func subscriberLoop(c net.Conn, r *bufio.Reader, t *tally) {
	newSubscriber(codec.V311, t, nil, nil, 0).loop(c, r)
}

// subscriber is one subscribing connection's read side. It runs on that
// connection's goroutine, and its counters are read once loop has returned.
type subscriber struct {
	v codec.Version
	t *tally

	topics    [][]byte             // per publisher: the topic it publishes to (nil: not checked)
	userProps []codec.UserProperty // 5.0: the user properties every PUBLISH carries (nil: not checked)
	aliases   [][]byte             // 5.0: topic per alias 1..len-1 (owned, reused); nil entry: not set

	pub  codec.Publish // decode scratch, reused: decoding allocates nothing once it has grown
	ack  codec.Ack
	disc codec.Disconnect

	aliasErrors, aliased, topicMismatches, propsChecked, propMismatches int64
	disconnected                                                        bool
	disconnectReason                                                    codec.ReasonCode
}

// newSubscriber is the read side of a subscriber at protocol level v that
// announced Topic Alias Maximum aliasMax (5.0). topics, when not nil, is
// each publisher's topic, checked against every delivery's (resolved)
// topic; userProps, when not nil, the user properties every delivery must
// carry, in order.
func newSubscriber(v codec.Version, t *tally, topics [][]byte, userProps []codec.UserProperty, aliasMax uint16) *subscriber {
	s := &subscriber{v: v, t: t, topics: topics, userProps: userProps}
	if v == codec.V5 {
		s.aliases = make([][]byte, int(aliasMax)+1)
	}
	return s
}

// loop reads deliveries until the connection closes or the broker sends
// DISCONNECT, acknowledging and tallying each (handle).
func (s *subscriber) loop(c net.Conn, r *bufio.Reader) {
	buf := make([]byte, 0, 512*1024)
	tmp := make([]byte, 256*1024)
	out := make([]byte, 0, 64*1024)
	for {
		n, err := r.Read(tmp)
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		buf = append(buf, tmp[:n]...)
		var off int
		var done bool
		off, out, done = s.handle(buf, now, out[:0])
		buf = append(buf[:0], buf[off:]...)
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if done {
			return
		}
	}
}

// handle processes the whole frames at the start of buf, received at now
// (unix ns): it tallies each delivery, appends the acknowledgements to out
// and returns the bytes consumed, out, and whether the broker sent
// DISCONNECT (then the rest is not read). It allocates nothing once the
// scratch has grown.
func (s *subscriber) handle(buf []byte, now int64, out []byte) (int, []byte, bool) {
	off := 0
	for {
		h, fn, err := codec.ReadFrame(buf[off:], 0)
		if err != nil || fn == 0 {
			return off, out, false
		}
		body := buf[off+h.HeaderLen : off+fn]
		off += fn
		switch h.Type {
		case codec.TypePublish:
			p := &s.pub
			if p.Decode(s.v, h, body) != nil {
				continue
			}
			topic, ok := p.Topic, true
			if s.v == codec.V5 {
				topic, ok = s.resolve(p)
				if s.userProps != nil {
					s.propsChecked++
					if !sameUserProps(p.Props.User, s.userProps) {
						s.propMismatches++
					}
				}
			}
			if len(p.Payload) >= headerLen {
				pl := p.Payload
				pi := int(binary.BigEndian.Uint64(pl))
				if ok && s.topics != nil && pi >= 0 && pi < len(s.topics) && !bytes.Equal(topic, s.topics[pi]) {
					s.topicMismatches++
				}
				s.t.record(pi, int64(binary.BigEndian.Uint64(pl[8:])), int64(binary.BigEndian.Uint64(pl[16:])), now)
			}
			switch p.QoS {
			case 1:
				out = codec.AppendAck(out, codec.TypePuback, p.PacketID)
			case 2:
				out = codec.AppendAck(out, codec.TypePubrec, p.PacketID)
			}
		case codec.TypePubrel:
			if s.ack.Decode(s.v, h, body) == nil {
				out = codec.AppendAck(out, codec.TypePubcomp, s.ack.PacketID)
			}
		case codec.TypeDisconnect:
			_ = s.disc.Decode(s.v, h, body)
			s.disconnected, s.disconnectReason = true, s.disc.Reason
			return off, out, true
		}
	}
}

// resolve returns the topic of a 5.0 PUBLISH: its own, which with a topic
// alias also sets the alias, or the alias's when the topic is empty. An
// alias that is 0, above the announced maximum or not set yet is counted
// in aliasErrors and resolves to nothing (ok false).
func (s *subscriber) resolve(p *codec.Publish) (topic []byte, ok bool) {
	if !p.Props.Has(codec.PropTopicAlias) {
		return p.Topic, true
	}
	a := int(p.Props.TopicAlias)
	if a == 0 || a >= len(s.aliases) {
		s.aliasErrors++ // the broker used an alias we did not allow
		return nil, false
	}
	if len(p.Topic) > 0 {
		s.aliases[a] = append(s.aliases[a][:0], p.Topic...)
		return p.Topic, true
	}
	if s.aliases[a] == nil {
		s.aliasErrors++
		return nil, false
	}
	s.aliased++
	return s.aliases[a], true
}

// pubConn is a publisher's connection and what its CONNACK granted.
type pubConn struct {
	c          net.Conn
	r          *bufio.Reader
	v          codec.Version
	aliasMax   uint16 // 5.0: the broker's Topic Alias Maximum (0: no aliases)
	receiveMax uint16 // 5.0: the broker's Receive Maximum (65535 at 3.1.1)
}

// pubStats are the publishers' shared counters of what the broker sent them.
type pubStats struct {
	ackErrors      atomic.Int64
	firstAckReason atomic.Int32 // reason+1; 0: none yet
	disconnects    atomic.Int64
	firstDisc      atomic.Int32 // reason+1; 0: none yet
}

// addTo adds the publishers' counters to res.
func (s *pubStats) addTo(res *LoadResult) {
	res.AckErrors = s.ackErrors.Load()
	if r := s.firstAckReason.Load(); r > 0 {
		res.FirstAckReason = reasonHex(codec.ReasonCode(r - 1))
	}
	res.Disconnects += s.disconnects.Load()
	if r := s.firstDisc.Load(); r > 0 && res.DisconnectReason == "" {
		res.DisconnectReason = reasonHex(codec.ReasonCode(r - 1))
	}
}

// publisher is a publisher's encoder: one PUBLISH reused for every message,
// its payload rewritten in place.
type publisher struct {
	v       codec.Version
	p       codec.Publish
	payload []byte
	seq     int64
	alias   bool // send the topic once with alias 1, then alias 1 alone
}

// newPublisher encodes publisher idx's messages to topic at protocol level
// v, with the user properties props (5.0) and, when alias, topic alias 1.
func newPublisher(v codec.Version, idx int, topic []byte, qos uint8, payloadLen int, props []codec.UserProperty, alias bool) *publisher {
	pb := &publisher{v: v, payload: make([]byte, max(payloadLen, headerLen)), alias: alias}
	binary.BigEndian.PutUint64(pb.payload, uint64(idx))
	pb.p = codec.Publish{Topic: topic, QoS: qos, Payload: pb.payload}
	if v == codec.V5 {
		pb.p.Props.User = props
		if len(props) > 0 {
			pb.p.Props.Set(codec.PropUser)
		}
		if alias {
			pb.p.Props.TopicAlias = 1
			pb.p.Props.Set(codec.PropTopicAlias)
		}
	}
	return pb
}

// appendBatch appends the next n messages, stamped with send time now
// (unix ns), to out. It allocates nothing once out has grown.
func (pb *publisher) appendBatch(out []byte, n, now int64) []byte {
	p := &pb.p
	for i := int64(0); i < n; i++ {
		binary.BigEndian.PutUint64(pb.payload[8:], uint64(pb.seq))
		binary.BigEndian.PutUint64(pb.payload[16:], uint64(now))
		if p.QoS > 0 {
			p.PacketID = uint16(pb.seq%65535) + 1
		}
		out = p.AppendTo(out, pb.v)
		if pb.alias {
			p.Topic = nil // the broker knows alias 1 from now on
		}
		pb.seq++
	}
	return out
}

// publisherLoop publishes until stop, keeping at most cfg.Window messages
// unreceived (and, for QoS > 0, at most cfg.Window and the broker's
// Receive Maximum unacknowledged), at its share of cfg.Rate.
func publisherLoop(ctx context.Context, pc *pubConn, idx int, topic []byte, props []codec.UserProperty, cfg *LoadConfig,
	start, stop time.Time, sent *atomic.Int64, st *pubStats, received func() int64) error {
	c, r, v := pc.c, pc.r, pc.v
	var acked atomic.Int64 // PUBACK or PUBCOMP received (or a PUBREC with a failure code)
	var wmu sync.Mutex
	readerDone := make(chan struct{})
	if cfg.QoS > 0 || v == codec.V5 { // 5.0: also to see a DISCONNECT's reason code
		go func() { // ends when the connection closes
			defer close(readerDone)
			var a codec.Ack
			for {
				h, body, err := readPacket(r)
				if err != nil {
					return
				}
				switch h.Type {
				case codec.TypePuback, codec.TypePubrec, codec.TypePubcomp:
					if a.Decode(v, h, body) != nil {
						continue
					}
					failed := a.Reason >= 0x80
					if failed {
						st.ackErrors.Add(1)
						st.firstAckReason.CompareAndSwap(0, int32(a.Reason)+1)
					}
					if h.Type != codec.TypePubrec || failed { // a failed PUBREC ends the exchange
						acked.Add(1)
						continue
					}
					wmu.Lock()
					_, err = c.Write(codec.AppendAck(nil, codec.TypePubrel, a.PacketID))
					wmu.Unlock()
					if err != nil {
						return
					}
				case codec.TypeDisconnect:
					var d codec.Disconnect
					_ = d.Decode(v, h, body)
					st.disconnects.Add(1)
					st.firstDisc.CompareAndSwap(0, int32(d.Reason)+1)
					return
				}
			}
		}()
	} else {
		close(readerDone)
	}
	perPub := float64(cfg.Rate) / float64(max(cfg.Publishers, 1))
	inflight := int64(min(cfg.Window, int(pc.receiveMax)))
	pb := newPublisher(v, idx, topic, cfg.QoS, cfg.Payload, props, cfg.TopicAlias && pc.aliasMax > 0)
	out := make([]byte, 0, 64*1024)
	for time.Now().Before(stop) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		seq := pb.seq
		credit := int64(cfg.Window) - (seq - received())
		if cfg.QoS > 0 {
			credit = min(credit, inflight-(seq-acked.Load()))
		}
		if perPub > 0 {
			due := dueCount(time.Since(start), perPub, idx, cfg.Publishers, cfg.Spread)
			credit = min(credit, due-seq)
		}
		if credit <= 0 {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		credit = min(credit, 64)
		out = pb.appendBatch(out[:0], credit, time.Now().UnixNano())
		wmu.Lock()
		_, err := c.Write(out)
		wmu.Unlock()
		if err != nil {
			// A broker that closes with a DISCONNECT says why: give the
			// reader a moment to see it.
			select {
			case <-readerDone:
			case <-time.After(time.Second):
			}
			if d := st.firstDisc.Load(); d > 0 {
				return fmt.Errorf("publisher %d: the broker sent DISCONNECT %s: %w", idx, reasonHex(codec.ReasonCode(d-1)), err)
			}
			return fmt.Errorf("publisher %d: %w", idx, err)
		}
		sent.Store(pb.seq)
	}
	// Wait (bounded) for the last acknowledgements so the broker has them all.
	if cfg.QoS > 0 {
		deadline := time.Now().Add(cfg.Drain)
		for acked.Load() < pb.seq && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// dueCount is how many messages publisher idx of n should have sent by
// elapsed at perPub messages/s: the first at once, then one per period,
// the period shifted by idx/n of itself when spread (dueCount's phases are
// what LoadConfig.Spread describes).
func dueCount(elapsed time.Duration, perPub float64, idx, n int, spread bool) int64 {
	phase := 0.0
	if spread && n > 0 {
		phase = float64(idx) / float64(n)
	}
	return int64(elapsed.Seconds()*perPub+phase) + 1
}
