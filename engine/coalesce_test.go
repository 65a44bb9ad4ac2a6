package engine

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// publishEach sends n QoS 0 messages on pub, each only once the broker has
// read the one before (its received count went up), so that every message
// is a read, and a wake-up, of its own; then it reads all n on sub, in
// order. It returns how many socket writes the broker made meanwhile.
func publishEach(t *testing.T, b *Broker, pub, sub *rawClient, n int) uint64 {
	t.Helper()
	w0, in0 := b.Stats().SocketWrites, b.Stats().MsgsIn
	for i := range n {
		pub.publish("coalesce/t", fmt.Sprint(i), 0, false, 0)
		waitFor(t, 5*time.Second, "the broker to read the message", func() bool { return b.Stats().MsgsIn >= in0+uint64(i+1) })
	}
	for i := range n {
		p := sub.expectPublish(5 * time.Second)
		if got, want := string(p.Payload), fmt.Sprint(i); got != want {
			t.Fatalf("message %d: payload %q; want %q", i, got, want)
		}
	}
	return b.Stats().SocketWrites - w0
}

// TestWriteCoalesceFewerWrites: with --write-coalesce, messages that reach
// the broker in separate reads leave for their subscriber in fewer writes
// (socket_writes_total) than there were messages, all delivered in order;
// after every read (--write-each-read) and at the end of each wake-up
// (the default: here each message is a wake-up of its own) there is one
// write per message.
func TestWriteCoalesceFewerWrites(t *testing.T) {
	const n = 40
	for _, tc := range []struct {
		name string
		edit func(*Options)
		few  bool
	}{
		{"each-read", func(o *Options) { o.WriteEachRead = true }, false},
		{"round", func(o *Options) {}, false},
		{"coalesce-300ms", func(o *Options) { o.WriteCoalesce = 300 * time.Millisecond }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, func(o *Options) { o.Loops = 1; tc.edit(o) })
			sub := connected(t, b.MQTTAddr(), "sub", true)
			sub.subscribe(1, codec.Subscription{Filter: []byte("coalesce/#")})
			pub := connected(t, b.MQTTAddr(), "pub", true)
			writes := publishEach(t, b, pub, sub, n)
			if tc.few && writes > n/2 {
				t.Fatalf("%d messages in %d writes; want at most %d", n, writes, n/2)
			}
			if !tc.few && writes < n {
				t.Fatalf("%d messages in %d writes; want one write per message", n, writes)
			}
		})
	}
}

// TestWriteCoalesceTimerFlushes: a held message goes out on the loop's
// timer when nothing else happens on the loop.
func TestWriteCoalesceTimerFlushes(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.Loops = 1; o.WriteCoalesce = 20 * time.Millisecond })
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("t")})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range 3 { // the timer is re-armed after each hold
		pub.publish("t", fmt.Sprint(i), 0, false, 0)
		if p := sub.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("payload %q; want %q", p.Payload, fmt.Sprint(i))
		}
	}
}

// TestWriteCoalesceFlushesBeforeClose: output held for a connection leaves
// before the broker closes it (here for a protocol error, a second
// CONNECT). The hold (1 s) is far longer than the test needs to get the
// close: without the flush on close the message would be lost.
func TestWriteCoalesceFlushesBeforeClose(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.Loops = 1; o.WriteCoalesce = time.Second })
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("t")})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	in0 := b.Stats().MsgsIn
	pub.publish("t", "held", 0, false, 0)
	waitFor(t, 5*time.Second, "the broker to read the message", func() bool { return b.Stats().MsgsIn > in0 })
	sub.write((&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "held" {
		t.Fatalf("payload %q; want held", p.Payload)
	}
	sub.expectClosed(5 * time.Second)
}

// TestRoundWritesOncePerWakeup: by default, messages read from several
// publishers in one wake-up of the loop leave for their subscriber in one
// write, at the end of the wake-up, and not before. The round is driven by
// hand (fakeLoop), the rest is the engine's.
func TestRoundWritesOncePerWakeup(t *testing.T) {
	for _, eachRead := range []bool{false, true} {
		o := DefaultOptions()
		o.MQTTAddr = "127.0.0.1:0"
		o.WriteEachRead = eachRead
		b, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		el := fakeLoop{q: new([]gnet.Runnable)}
		sub := &fakeConn{el: el}
		pubs := []*fakeConn{{el: el}, {el: el}, {el: el}}
		for _, c := range append([]*fakeConn{sub}, pubs...) {
			if _, a := b.OnOpen(c); a != gnet.None {
				t.Fatal("OnOpen refused")
			}
		}
		feed(t, b, sub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
		feed(t, b, sub, (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("t")}}}).AppendTo(nil, codec.V311))
		for i, p := range pubs {
			feed(t, b, p, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte(fmt.Sprint("p", i))}).AppendTo(nil))
		}
		el.endRound()
		raw := (&codec.Publish{Topic: []byte("t"), Payload: []byte("x")}).AppendTo(nil, codec.V311)
		before, w0 := sub.written, b.Stats().SocketWrites
		for _, p := range pubs { // one wake-up: three reads
			feed(t, b, p, raw)
		}
		if held := sub.written == before; held == eachRead {
			t.Fatalf("eachRead %v: subscriber written during the round: %v", eachRead, !held)
		}
		el.endRound()
		if got, want := sub.written-before, len(pubs)*len(raw); got != want {
			t.Fatalf("eachRead %v: subscriber got %d bytes; want %d", eachRead, got, want)
		}
		want := uint64(1)
		if eachRead {
			want = uint64(len(pubs))
		}
		if got := b.Stats().SocketWrites - w0; got != want {
			t.Fatalf("eachRead %v: %d writes to the subscriber; want %d", eachRead, got, want)
		}
	}
}

// BenchmarkLoopExecute measures what gnet's EventLoop.Execute costs per
// call on a running broker: the task that ends a round of held output
// (loop.armDeferred) and the mailbox wake-up of another loop (loop.wake) each
// pay it once per round, not per message. gnet wraps the Runnable in a
// closure and its task queue allocates a node per call, so it reports 2
// allocations whatever the caller pre-binds.
func BenchmarkLoopExecute(b *testing.B) {
	br := startBroker(b, func(o *Options) { o.Loops = 1 })
	connected(b, br.MQTTAddr(), "c", true) // the loop's state is made on its first connection
	l := br.allLoops()[0]
	done := make(chan struct{}, 1)
	run := gnet.RunnableFunc(func(context.Context) error {
		select {
		case done <- struct{}{}:
		default:
		}
		return nil
	})
	b.ReportAllocs()
	for b.Loop() {
		if err := l.el.Execute(context.Background(), run); err != nil {
			b.Fatal(err)
		}
		<-done
	}
}

// TestDefaultLoops: one loop on up to two CPUs the runtime may use, one
// per CPU above.
func TestDefaultLoops(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, tc := range []struct{ procs, want int }{{1, 1}, {2, 1}, {3, 3}, {8, 8}} {
		runtime.GOMAXPROCS(tc.procs)
		if got := DefaultLoops(); got != tc.want {
			t.Errorf("GOMAXPROCS %d: %d loops; want %d", tc.procs, got, tc.want)
		}
	}
}
