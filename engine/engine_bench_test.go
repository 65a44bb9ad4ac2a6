package engine

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// benchSubscriber connects, subscribes to filter and counts the bytes it
// reads into a fixed buffer (so the client side allocates nothing per
// message). If ack is set it answers every QoS 1 PUBLISH with PUBACK.
type benchSubscriber struct {
	c     net.Conn
	bytes atomic.Int64
	msgs  atomic.Int64
	done  chan struct{}
}

func newBenchSubscriber(b *testing.B, addr, id, filter string, qos uint8, ack bool) *benchSubscriber {
	b.Helper()
	rc := dialRaw(b, addr)
	rc.connect(codec.Connect{ClientID: []byte(id), CleanStart: true})
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	rc.write(sub.AppendTo(nil, codec.V311))
	if h, _, err := rc.readPacket(5 * time.Second); err != nil || h.Type != codec.TypeSuback {
		b.Fatalf("SUBACK: %v %v", h.Type, err)
	}
	_ = rc.c.SetReadDeadline(time.Time{})
	s := &benchSubscriber{c: rc.c, done: make(chan struct{})}
	go s.read(rc.r, ack)
	return s
}

func (s *benchSubscriber) read(r io.Reader, ack bool) {
	defer close(s.done)
	buf := make([]byte, 256*1024)
	var pending []byte
	acks := make([]byte, 0, 64*1024)
	for {
		n, err := r.Read(buf)
		if err != nil {
			return
		}
		s.bytes.Add(int64(n))
		data := buf[:n]
		if len(pending) > 0 {
			pending = append(pending, data...)
			data = pending
		}
		acks = acks[:0]
		off := 0
		for off < len(data) {
			h, fn, err := codec.ReadFrame(data[off:], 0)
			if err != nil || fn == 0 {
				break
			}
			switch {
			case h.Type == codec.TypePublish:
				s.msgs.Add(1)
				if ack && h.QoS() > 0 {
					body := data[off+h.HeaderLen : off+fn]
					tl := int(body[0])<<8 | int(body[1])
					id := uint16(body[2+tl])<<8 | uint16(body[3+tl])
					t := codec.TypePuback
					if h.QoS() == 2 {
						t = codec.TypePubrec
					}
					acks = codec.AppendAck(acks, t, id)
				}
			case ack && h.Type == codec.TypePubrel && fn == 4:
				acks = codec.AppendAck(acks, codec.TypePubcomp, uint16(data[off+2])<<8|uint16(data[off+3]))
			}
			off += fn
		}
		pending = append(pending[:0], data[off:]...)
		if len(acks) > 0 {
			if _, err := s.c.Write(acks); err != nil {
				return
			}
		}
	}
}

// publishBatch encodes n PUBLISHes to topic with payload size.
func publishBatch(topicName string, qos uint8, payload, n int) []byte {
	var out []byte
	p := codec.Publish{Topic: []byte(topicName), QoS: qos, Payload: make([]byte, payload)}
	for i := 0; i < n; i++ {
		if qos > 0 {
			p.PacketID = uint16(i%60000 + 1)
		}
		out = p.AppendTo(out, codec.V311)
	}
	return out
}

// BenchmarkPublishQoS0 measures routed QoS 0 messages per second and
// allocations per routed message, over loopback, with subscribers spread
// across both event loops.
func BenchmarkPublishQoS0(b *testing.B) {
	// acl=file: an ACL file whose anonymous section grants the bench
	// topics (and a few other rules), so that every PUBLISH is checked for
	// write and every delivery for read.
	aclPath := filepath.Join(b.TempDir(), "acl")
	if err := os.WriteFile(aclPath, []byte("topic deny bench/secret\ntopic read other/#\ntopic write up/+\ntopic readwrite bench/#\npattern read clients/%c/#\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		subs int
		acl  string
	}{{1, "none"}, {1, "file"}, {1000, "none"}, {1000, "file"}} {
		subs := c.subs
		b.Run(fmt.Sprintf("subs=%d/payload=64B/acl=%s", subs, c.acl), func(b *testing.B) {
			br := startBroker(b, func(o *Options) {
				o.MaxOutboundBytes = 64 << 20
				if c.acl == "file" {
					o.ACLFile = aclPath
				}
			})
			addr := br.MQTTAddr()
			ss := make([]*benchSubscriber, subs)
			for i := range ss {
				ss[i] = newBenchSubscriber(b, addr, fmt.Sprintf("sub-%d", i), "bench/t", 0, false)
			}
			pub := dialRaw(b, addr)
			pub.connect(codec.Connect{ClientID: []byte("pub"), CleanStart: true})
			go func() { _, _ = io.Copy(io.Discard, pub.c) }()
			const batch = 64
			raw := publishBatch("bench/t", 0, 64, batch)
			per := int64(len(raw) / batch)
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			sent := 0
			for sent < b.N {
				k := min(batch, b.N-sent)
				if _, err := pub.c.Write(raw[:int64(k)*per]); err != nil {
					b.Fatal(err)
				}
				sent += k
				// Bounded in-flight: stay within 8 batches of the slowest
				// subscriber, so nothing is dropped as a slow consumer. A
				// subscriber that makes no progress for 10 s has stalled
				// (the run itself may take as long as b.N asks).
				last, since := ss[0].msgs.Load(), time.Now()
				for int64(sent-8*batch) > ss[0].msgs.Load() && int64(sent-8*batch) > 0 {
					if n := ss[0].msgs.Load(); n != last {
						last, since = n, time.Now()
					} else if time.Since(since) > 10*time.Second {
						b.Fatal("subscriber stalled")
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			want := int64(b.N)
			deadline := time.Now().Add(time.Minute)
			for _, s := range ss {
				for s.msgs.Load() < want {
					if time.Now().After(deadline) {
						b.Fatalf("delivered %d of %d (dropped %d)", s.msgs.Load(), want, br.Stats().Dropped)
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N*subs)/el.Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkQoS1RoundTrip measures QoS 1 messages per second end to end: a
// publisher with a window of 32 unacknowledged messages, a subscriber that
// acknowledges every delivery.
func BenchmarkQoS1RoundTrip(b *testing.B) {
	br := startBroker(b, nil)
	addr := br.MQTTAddr()
	sub := newBenchSubscriber(b, addr, "sub", "bench/q1", 1, true)
	pub := dialRaw(b, addr)
	pub.connect(codec.Connect{ClientID: []byte("pub"), CleanStart: true})
	var acked atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64*1024)
		var n4 int64
		for {
			n, err := pub.r.Read(buf)
			if err != nil {
				return
			}
			n4 += int64(n)
			acked.Store(n4 / 4) // PUBACK is 4 bytes
		}
	}()
	_ = pub.c.SetReadDeadline(time.Time{})
	const window = 32
	raw := publishBatch("bench/q1", 1, 64, 60000)
	per := len(raw) / 60000
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		for int64(sent)-acked.Load() >= window {
			time.Sleep(5 * time.Microsecond)
		}
		k := min(window-int(int64(sent)-acked.Load()), b.N-sent)
		i := sent % 60000
		k = min(k, 60000-i)
		if _, err := pub.c.Write(raw[i*per : (i+k)*per]); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	deadline := time.Now().Add(time.Minute)
	for acked.Load() < int64(b.N) || sub.msgs.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("acked %d delivered %d of %d", acked.Load(), sub.msgs.Load(), b.N)
		}
		time.Sleep(20 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	pub.c.Close()
	wg.Wait()
}
