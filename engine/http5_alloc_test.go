//go:build !race

package engine

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// TestAllocsHTTPPublishV5Props asserts that an HTTP publish with MQTT 5
// properties (headers and query, to an MQTT 5 subscriber) allocates
// nothing in steady state, like one without.
func TestAllocsHTTPPublishV5Props(t *testing.T) {
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
	feed(t, b, sub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V5, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("sensor/#")}}}
	feed(t, b, sub, s.AppendTo(nil, codec.V5))
	req := []byte("POST /publish/sensor/temp?qos=0&expiry=60&user=trace:abc HTTP/1.1\r\nHost: broker\r\nContent-Type: text/plain\r\n" +
		"MQTT-Response-Topic: sensor/reply\r\nMQTT-Correlation-Data: AAECAw==\r\nMQTT-Payload-Format: utf8\r\n" +
		"MQTT-User-unit: C\r\nContent-Length: 4\r\n\r\n24.5")
	sub.keepOut, sub.out = true, nil
	before, webBefore := sub.written, web.written
	feed(t, b, web, req)
	if sub.written == before || web.written == webBefore {
		t.Fatal("publish not routed or not answered")
	}
	for _, want := range []string{"sensor/reply", "\x09\x00\x04\x00\x01\x02\x03", "\x01\x01", "\x26\x00\x04unit\x00\x01C\x26\x00\x05trace\x00\x03abc", "\x03\x00\x0atext/plain", "\x02\x00\x00\x00"} {
		if !bytes.Contains(sub.out, []byte(want)) {
			t.Fatalf("subscriber got %q; want it to hold %q", sub.out, want)
		}
	}
	sub.keepOut = false
	allocs := testing.AllocsPerRun(1000, func() {
		web.in = req
		b.OnTraffic(web)
	})
	if allocs != 0 {
		t.Fatalf("HTTP publish with properties: %.2f allocations per request; want 0", allocs)
	}
	if got := sub.written - before; got%1002 != 0 || got/1002 != len(sub.out) {
		t.Fatalf("subscriber got %d bytes for 1002 publishes of %d", got, len(sub.out))
	}
}
