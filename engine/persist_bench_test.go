package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// BenchmarkPersistQoS1Pairs: QoS 1 between persistent sessions (clean
// session 0 on both ends, so every message is stored: a message record,
// an in-flight or queue entry, its deletion on PUBACK), pairs=N
// publisher/subscriber pairs, each publisher keeping window=16 PUBLISHes
// unacknowledged. fsync=off is the in-memory broker. One op is one message
// delivered and acknowledged at both ends; allocs/op count the broker and
// the clients (the clients allocate nothing per message).
func BenchmarkPersistQoS1Pairs(b *testing.B) {
	for _, pairs := range []int{1, 10} {
		for _, mode := range []string{"off", "none", "interval", "always"} {
			b.Run(fmt.Sprintf("pairs=%d/fsync=%s", pairs, mode), func(b *testing.B) {
				benchPersistPairs(b, 1, pairs, mode)
			})
		}
	}
}

// BenchmarkPersistQoS2Pairs: the same at QoS 2 end to end (PUBLISH,
// PUBREC, PUBREL, PUBCOMP at both ends; window=16 exchanges open per
// publisher until their PUBCOMP). With fsync=always this is the price of
// exactly once across a crash: PUBREC and PUBCOMP to the publisher, and
// PUBLISH and PUBREL to the subscriber, each wait for a group commit
// (docs/durability.md "QoS 2 across a crash").
func BenchmarkPersistQoS2Pairs(b *testing.B) {
	for _, mode := range []string{"off", "interval", "always"} {
		b.Run(fmt.Sprintf("pairs=10/fsync=%s", mode), func(b *testing.B) {
			benchPersistPairs(b, 2, 10, mode)
		})
	}
}

func benchPersistPairs(b *testing.B, qos uint8, pairs int, mode string) {
	br := startBroker(b, func(o *Options) {
		if mode == "off" {
			return
		}
		f, err := store.ParseFsync(mode)
		if err != nil {
			b.Fatal(err)
		}
		o.Persistence, o.DataDir, o.Fsync = true, b.TempDir(), f
		o.MaxQueuedMsgs = 1 << 20
	})
	subs := make([]*benchSubscriber, pairs)
	for i := range subs {
		subs[i] = newPersistentBenchSubscriber(b, br.MQTTAddr(), fmt.Sprintf("bsub%d", i), fmt.Sprintf("bp/%d", i), qos)
	}
	pubs := make([]*rawClient, pairs)
	for i := range pubs {
		pubs[i] = connected(b, br.MQTTAddr(), fmt.Sprintf("bpub%d", i), false)
		_ = pubs[i].c.SetReadDeadline(time.Time{})
	}
	per := (b.N + pairs - 1) / pairs
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, pairs)
	for i := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := windowedPublisher(pubs[i].c, pubs[i].r, fmt.Sprintf("bp/%d", i), qos, per, 16); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range subs {
		for s.msgs.Load() < int64(per) {
			if time.Now().After(deadline) {
				b.Fatalf("subscriber got %d of %d", s.msgs.Load(), per)
			}
			time.Sleep(time.Millisecond)
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(per*pairs)/el.Seconds(), "msgs/s")
	for _, s := range subs {
		s.c.Close()
		<-s.done
	}
}

// newPersistentBenchSubscriber is a clean-session-0 subscriber at qos
// that acknowledges everything.
func newPersistentBenchSubscriber(b *testing.B, addr, id, filter string, qos uint8) *benchSubscriber {
	b.Helper()
	rc := dialRaw(b, addr)
	rc.connect(codec.Connect{ClientID: []byte(id), CleanStart: false, KeepAlive: 0})
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	rc.write(sub.AppendTo(nil, codec.V311))
	if h, _, err := rc.readPacket(5 * time.Second); err != nil || h.Type != codec.TypeSuback {
		b.Fatalf("SUBACK: %v %v", h.Type, err)
	}
	_ = rc.c.SetReadDeadline(time.Time{})
	s := &benchSubscriber{c: rc.c, done: make(chan struct{})}
	go s.read(rc.r, true)
	return s
}

// windowedPublisher sends n PUBLISHes of 64 bytes at qos (1 or 2) to
// topic, keeping up to window exchanges open (QoS 2: until PUBCOMP; PUBREL
// answers each PUBREC), and returns once all are complete. Runs on its own
// goroutine (no testing calls).
func windowedPublisher(c net.Conn, r *bufio.Reader, topicName string, qos uint8, n, window int) error {
	p := codec.Publish{Topic: []byte(topicName), QoS: qos, Payload: make([]byte, 64)}
	var out, rels []byte
	sent, acked := 0, 0
	send := func(k int) error {
		out = out[:0]
		for range k {
			p.PacketID = uint16(sent%60000 + 1)
			out = p.AppendTo(out, codec.V311)
			sent++
		}
		_, err := c.Write(out)
		return err
	}
	if err := send(min(window, n)); err != nil {
		return err
	}
	buf := make([]byte, 64*1024)
	var pending []byte
	for acked < n {
		m, err := r.Read(buf)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("publisher: closed after %d of %d acks", acked, n)
			}
			return err
		}
		data := append(pending, buf[:m]...)
		off, got := 0, 0
		rels = rels[:0]
		for off < len(data) {
			h, fn, err := codec.ReadFrame(data[off:], 0)
			if err != nil {
				return err
			}
			if fn == 0 {
				break
			}
			switch h.Type {
			case codec.TypePuback, codec.TypePubcomp:
				got++
			case codec.TypePubrec:
				rels = codec.AppendAck(rels, codec.TypePubrel, uint16(data[off+2])<<8|uint16(data[off+3]))
			}
			off += fn
		}
		pending = append(pending[:0], data[off:]...)
		if len(rels) > 0 {
			if _, err := c.Write(rels); err != nil {
				return err
			}
		}
		acked += got
		if more := min(got, n-sent); more > 0 {
			if err := send(more); err != nil {
				return err
			}
		}
	}
	return nil
}
