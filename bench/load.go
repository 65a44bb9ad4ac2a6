package bench

import (
	"bufio"
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
	c.Payload = max(c.Payload, headerLen)
	if c.Window <= 0 {
		c.Window = 256
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	return nil
}

// RunLoad runs a fanin, fanout or pairs scenario against cfg.Addr.
func RunLoad(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	var res LoadResult
	if err := cfg.Normalize(); err != nil {
		return res, err
	}
	pubTopic, subFilter, receives, _ := cfg.topology()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tallies := make([]*tally, cfg.Subscribers)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	for s := range tallies {
		t := &tally{recv: make([]atomic.Int64, cfg.Publishers), seen: make([][]uint64, cfg.Publishers),
			maxSeq: make([]int64, cfg.Publishers), hist: hdrhistogram.New(1, 60_000_000, 3)}
		tallies[s] = t
		c, r, err := dialMQTT(cfg.Addr, fmt.Sprintf("bench-sub-%d", s))
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
		if err := subscribeOne(c, r, subFilter(s), cfg.QoS); err != nil {
			return res, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); subscriberLoop(c, r, t) }()
	}

	// received(p): deliveries of publisher p at its slowest subscriber.
	received := func(p int) int64 {
		m := int64(-1)
		for s, t := range tallies {
			if receives(s, p) {
				if v := t.recv[p].Load(); m < 0 || v < m {
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
	sent := make([]atomic.Int64, cfg.Publishers)
	start := time.Now()
	stop := start.Add(cfg.Duration)
	var pwg sync.WaitGroup
	errCh := make(chan error, cfg.Publishers)
	for p := 0; p < cfg.Publishers; p++ {
		c, r, err := dialMQTT(cfg.Addr, fmt.Sprintf("bench-pub-%d", p))
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
		pwg.Add(1)
		go func(p int) {
			defer pwg.Done()
			if err := publisherLoop(ctx, c, r, p, pubTopic(p), &cfg, start, stop, &sent[p], func() int64 { return received(p) }); err != nil {
				errCh <- err
			}
		}(p)
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
					for _, tl := range tallies {
						for p := range tl.recv {
							total += tl.recv[p].Load()
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
		for s := range tallies {
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
		for _, t := range tallies {
			for p := range t.recv {
				total += t.recv[p].Load()
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
	for _, t := range tallies {
		end = max(end, t.last.Load())
	}
	if cfg.BrokerPID > 0 {
		if st, err := ReadProc(cfg.BrokerPID); err == nil {
			res.BrokerCPU = st.CPUSeconds - cpu0
			res.BrokerRSSAfter = st.RSSBytes
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	wg.Wait()
	for _, t := range tallies {
		merged.Merge(t.hist)
		res.Duplicates += t.dups
		res.OutOfOrder += t.reorder
		for p := range t.recv {
			res.Delivered += t.recv[p].Load()
		}
	}
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
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	p := codec.Connect{Version: codec.V311, CleanStart: true, KeepAlive: 60, ClientID: []byte(id)}
	if key != "" {
		p.UsernameFlag, p.Username, p.PasswordFlag, p.Password = true, []byte("bench"), true, []byte(key)
	}
	if _, err := c.Write(p.AppendTo(nil)); err != nil {
		c.Close()
		return nil, nil, err
	}
	r := bufio.NewReaderSize(c, 256*1024)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, body, err := readPacket(r)
	if err != nil || h.Type != codec.TypeConnack || len(body) < 2 || body[1] != 0 {
		c.Close()
		return nil, nil, fmt.Errorf("connect %s: %v %v", id, h.Type, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, r, nil
}

// subscribeOne subscribes c to filter and waits (at most 10 s) for the
// SUBACK.
func subscribeOne(c net.Conn, r *bufio.Reader, filter string, qos uint8) error {
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	if _, err := c.Write(sub.AppendTo(nil, codec.V311)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if h, _, err := readPacket(r); err != nil || h.Type != codec.TypeSuback {
		return fmt.Errorf("subscribe %s: %v %v", filter, h.Type, err)
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

// subscriberLoop reads deliveries, acknowledges them and tallies them.
func subscriberLoop(c net.Conn, r *bufio.Reader, t *tally) {
	buf := make([]byte, 0, 512*1024)
	tmp := make([]byte, 256*1024)
	out := make([]byte, 0, 64*1024)
	var p codec.Publish
	for {
		n, err := r.Read(tmp)
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		buf = append(buf, tmp[:n]...)
		off := 0
		out = out[:0]
		for {
			h, fn, err := codec.ReadFrame(buf[off:], 0)
			if err != nil || fn == 0 {
				break
			}
			body := buf[off+h.HeaderLen : off+fn]
			switch h.Type {
			case codec.TypePublish:
				if p.Decode(codec.V311, h, body) == nil {
					if len(p.Payload) >= headerLen {
						pl := p.Payload
						t.record(int(binary.BigEndian.Uint64(pl)), int64(binary.BigEndian.Uint64(pl[8:])),
							int64(binary.BigEndian.Uint64(pl[16:])), now)
					}
					switch p.QoS {
					case 1:
						out = codec.AppendAck(out, codec.TypePuback, p.PacketID)
					case 2:
						out = codec.AppendAck(out, codec.TypePubrec, p.PacketID)
					}
				}
			case codec.TypePubrel:
				var a codec.Ack
				if a.Decode(codec.V311, h, body) == nil {
					out = codec.AppendAck(out, codec.TypePubcomp, a.PacketID)
				}
			}
			off += fn
		}
		buf = append(buf[:0], buf[off:]...)
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

// publisherLoop publishes until stop, keeping at most cfg.Window messages
// unreceived (and, for QoS > 0, unacknowledged), at its share of cfg.Rate.
func publisherLoop(ctx context.Context, c net.Conn, r *bufio.Reader, idx int, topic string, cfg *LoadConfig,
	start, stop time.Time, sent *atomic.Int64, received func() int64) error {
	var acked atomic.Int64 // PUBACK or PUBCOMP received
	var wmu sync.Mutex
	if cfg.QoS > 0 {
		go func() { // ends when the connection closes
			for {
				h, body, err := readPacket(r)
				if err != nil {
					return
				}
				switch h.Type {
				case codec.TypePuback, codec.TypePubcomp:
					acked.Add(1)
				case codec.TypePubrec:
					wmu.Lock()
					_, err = c.Write(codec.AppendAck(nil, codec.TypePubrel, binary.BigEndian.Uint16(body)))
					wmu.Unlock()
					if err != nil {
						return
					}
				}
			}
		}()
	}
	perPub := float64(cfg.Rate) / float64(max(cfg.Publishers, 1))
	payload := make([]byte, cfg.Payload)
	binary.BigEndian.PutUint64(payload, uint64(idx))
	p := codec.Publish{Topic: []byte(topic), QoS: cfg.QoS, Payload: payload}
	out := make([]byte, 0, 64*1024)
	var seq int64
	for time.Now().Before(stop) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		credit := int64(cfg.Window) - (seq - received())
		if cfg.QoS > 0 {
			credit = min(credit, int64(cfg.Window)-(seq-acked.Load()))
		}
		if perPub > 0 {
			due := int64(time.Since(start).Seconds()*perPub) + 1
			credit = min(credit, due-seq)
		}
		if credit <= 0 {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		credit = min(credit, 64)
		out = out[:0]
		now := time.Now().UnixNano()
		for i := int64(0); i < credit; i++ {
			binary.BigEndian.PutUint64(payload[8:], uint64(seq))
			binary.BigEndian.PutUint64(payload[16:], uint64(now))
			if cfg.QoS > 0 {
				p.PacketID = uint16(seq%65535) + 1
			}
			out = p.AppendTo(out, codec.V311)
			seq++
		}
		wmu.Lock()
		_, err := c.Write(out)
		wmu.Unlock()
		if err != nil {
			return fmt.Errorf("publisher %d: %w", idx, err)
		}
		sent.Store(seq)
	}
	// Wait (bounded) for the last acknowledgements so the broker has them all.
	if cfg.QoS > 0 {
		deadline := time.Now().Add(cfg.Drain)
		for acked.Load() < seq && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
