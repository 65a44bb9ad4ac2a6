//go:build !race

package engine

import (
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// TestAllocsRoutedQoS0 asserts that routing a QoS 0 PUBLISH to a local
// subscriber allocates nothing in steady state: decode, match, encode,
// buffer and write.
func TestAllocsRoutedQoS0(t *testing.T) {
	routedQoS0Allocs(t, codec.V311, codec.Publish{Topic: []byte("sensor/kitchen/temp"), Payload: []byte("24.5")}, false)
}

// TestAllocsRoutedQoS0Round is the same with the default write batching:
// the subscriber's output waits for the end of the loop's round (a task
// the test runs after each read, as gnet would). The engine allocates
// nothing per message or per round; gnet's Execute, which queues the
// round's task, allocates 2 objects per round, not per message (see
// BenchmarkLoopExecute).
func TestAllocsRoutedQoS0Round(t *testing.T) {
	routedQoS0Allocs(t, codec.V311, codec.Publish{Topic: []byte("sensor/kitchen/temp"), Payload: []byte("24.5")}, true)
}

// TestAllocsRoutedQoS0V5 is the same at MQTT 5: a v5 publisher (with a
// content type and correlation data, no user properties) to a v5
// subscriber.
func TestAllocsRoutedQoS0V5(t *testing.T) {
	p := codec.Publish{Topic: []byte("sensor/kitchen/temp"), Payload: []byte("24.5")}
	p.Props.ContentType, p.Props.CorrelationData = []byte("text/plain"), []byte{1, 2, 3}
	p.Props.Set(codec.PropContentType)
	p.Props.Set(codec.PropCorrelationData)
	routedQoS0Allocs(t, codec.V5, p, false)
}

// routedQoS0Allocs routes p from a publisher to a subscriber, both at
// protocol level v, and fails unless the steady state allocates nothing
// and the subscriber gets exactly the bytes it was sent (same properties,
// same size) every time. round: output waits for the end of the round (the
// default); otherwise it is written after each read (--write-each-read).
func routedQoS0Allocs(t *testing.T, v codec.Version, p codec.Publish, round bool) {
	o := DefaultOptions()
	o.MQTTAddr = "127.0.0.1:0"
	o.WriteEachRead = !round
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	el := fakeLoop{q: new([]gnet.Runnable)}
	feed := func(t *testing.T, b *Broker, c *fakeConn, raw []byte) {
		t.Helper()
		feed(t, b, c, raw)
		el.endRound()
	}
	sub := &fakeConn{el: el}
	pub := &fakeConn{el: el}
	for _, c := range []*fakeConn{sub, pub} {
		if _, a := b.OnOpen(c); a != gnet.None {
			t.Fatal("OnOpen refused")
		}
	}
	feed(t, b, sub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: v, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("sensor/+/temp")}}}
	feed(t, b, sub, s.AppendTo(nil, v))
	feed(t, b, pub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: v, CleanStart: true, ClientID: []byte("pub")}).AppendTo(nil))
	raw := p.AppendTo(nil, v)
	before := sub.written
	feed(t, b, pub, raw) // warm up pools and scratch slices; AllocsPerRun adds one more run
	if sub.written-before != len(raw) {
		t.Fatalf("subscriber received %d bytes; want %d", sub.written-before, len(raw))
	}
	rounds := 0
	allocs := testing.AllocsPerRun(1000, func() {
		pub.in = raw
		b.OnTraffic(pub)
		if len(*el.q) > 0 {
			rounds++
		}
		el.endRound()
	})
	if round != (rounds == 1001) {
		t.Fatalf("round %v: %d of 1001 reads queued a round task", round, rounds)
	}
	if allocs != 0 {
		t.Fatalf("routing a %v QoS 0 PUBLISH: %.2f allocations; want 0", v, allocs)
	}
	if got, want := sub.written-before, 1002*len(raw); got != want {
		t.Fatalf("subscriber got %d bytes; want %d", got, want)
	}
}

// TestAllocsHTTPPublish asserts that an HTTP publish (request parse,
// routing to an MQTT subscriber, 202 response) allocates nothing in steady
// state on a keep-alive connection.
func TestAllocsHTTPPublish(t *testing.T) {
	o := DefaultOptions()
	o.MQTTAddr = "127.0.0.1:0"
	o.HTTPAddr = "127.0.0.1:0"
	o.WriteEachRead = true // the subscriber's bytes are counted after each read
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	b.mqttPort, b.httpPort = 1883, 7800
	b.refreshDate(time.Now())
	el := fakeLoop{}
	sub := &fakeConn{el: el}
	web := &fakeConn{el: el, local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7800}}
	for _, c := range []*fakeConn{sub, web} {
		if _, a := b.OnOpen(c); a != gnet.None {
			t.Fatal("OnOpen refused")
		}
	}
	feed(t, b, sub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("sensor/#")}}}
	feed(t, b, sub, s.AppendTo(nil, codec.V311))
	req := []byte("POST /publish/sensor/temp?qos=0 HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer x\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n24.5")
	before, webBefore := sub.written, web.written
	feed(t, b, web, req)
	if sub.written == before || web.written == webBefore {
		t.Fatal("publish not routed or not answered")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		web.in = req
		b.OnTraffic(web)
	})
	if allocs != 0 {
		t.Fatalf("HTTP publish: %.2f allocations per request; want 0", allocs)
	}
	one := (&codec.Publish{Topic: []byte("sensor/temp"), Payload: []byte("24.5")}).AppendTo(nil, codec.V311)
	if got, want := sub.written-before, 1002*len(one); got != want {
		t.Fatalf("subscriber got %d bytes; want %d", got, want)
	}
}
