package engine

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// Strict validation (docs/validation.md). Every rule runs against TinyMQ
// and, where Mosquitto 2.0.11 is installed, against Mosquitto too: the
// same raw bytes, the same observation. A case's mosq field records where
// Mosquitto answers differently, on purpose.

// strictCase is one scenario: run drives a raw client at addr and returns
// what it observed (see observe); want is TinyMQ's answer, mosq
// Mosquitto's when it differs ("" = the same).
type strictCase struct {
	name string
	run  func(t *testing.T, addr string) string
	want string
	mosq string
}

// runStrict runs cases against a fresh TinyMQ and against Mosquitto
// (skipped when it is missing, unless TINYMQ_REQUIRE_INTEROP=1).
func runStrict(t *testing.T, cases []strictCase) {
	t.Helper()
	t.Run("tinymq", func(t *testing.T) {
		b := startBroker(t, nil)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if got := tc.run(t, b.MQTTAddr()); got != tc.want {
					t.Fatalf("observed %q; want %q", got, tc.want)
				}
			})
		}
	})
	t.Run("mosquitto", func(t *testing.T) {
		addr := startMosquitto(t)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				want := tc.want
				if tc.mosq != "" {
					want = tc.mosq
				}
				if got := tc.run(t, addr); got != want {
					t.Fatalf("Mosquitto observed %q; want %q", got, want)
				}
			})
		}
	})
}

// startMosquitto runs /usr/sbin/mosquitto on a free loopback port with a
// minimal anonymous config, waits until it accepts connections and kills
// it (only it) when the test ends.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		bin = requireInterop(t, "mosquitto")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // mosquitto drops to its own user
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// observe sends PINGREQ and reads until PINGRESP ("open") or the end of
// the connection ("closed"), naming the packets before it: "PUBREL(1)
// open", "closed". The broker handles packets in order, so whatever the
// earlier packets caused comes before PINGRESP.
func observe(t *testing.T, rc *rawClient) string {
	t.Helper()
	_, _ = rc.c.Write([]byte{0xc0, 0}) // may fail: closed already
	var seen []string
	for {
		h, body, err := rc.readPacket(5 * time.Second)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("no PINGRESP nor close within 5s (seen %v)", seen)
			}
			return strings.Join(append(seen, "closed"), " ")
		}
		if h.Type == codec.TypePingresp {
			return strings.Join(append(seen, "open"), " ")
		}
		seen = append(seen, describe(h, body))
	}
}

// describe names a packet: type, and the packet id of acks, the return
// code of CONNACK.
func describe(h codec.FixedHeader, body []byte) string {
	switch h.Type {
	case codec.TypeConnack:
		if len(body) == 2 {
			return fmt.Sprintf("CONNACK(%d)", body[1])
		}
	case codec.TypePuback, codec.TypePubrec, codec.TypePubrel, codec.TypePubcomp:
		if len(body) >= 2 {
			return fmt.Sprintf("%v(%d)", h.Type, binary.BigEndian.Uint16(body))
		}
	}
	return h.Type.String()
}

// strictConnected is connected() for any protocol level.
func strictConnected(t *testing.T, addr, id string, v codec.Version) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr)
	if ack := rc.connect(codec.Connect{Version: v, ClientID: []byte(id), CleanStart: true, KeepAlive: 60}); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	return rc
}

// badStrings are UTF-8 strings a client must not send (see
// TestStrictUTF8); okStrings are near misses that are fine.
var (
	badStrings = []struct{ name, s string }{
		{"nul", "a\x00b"},
		{"U+0001", "a\x01b"},
		{"U+001F", "a\x1fb"},
		{"tab", "a\tb"},
		{"U+007F", "a\x7fb"},
		{"U+0080", "a\xc2\x80b"},
		{"U+009F", "a\xc2\x9fb"},
		{"U+FDD0", "a\xef\xb7\x90b"},
		{"U+FFFE", "a\xef\xbf\xbeb"},
		{"U+1FFFF", "a\xf0\x9f\xbf\xbfb"},
		{"ill-formed", "a\xffb"},
		{"surrogate", "a\xed\xa0\x80b"},
	}
	okStrings = []struct{ name, s string }{
		{"U+00A0", "a\xc2\xa0b"},
		{"U+FFFD", "a\xef\xbf\xbdb"},
		{"U+1F600", "a\xf0\x9f\x98\x80b"},
	}
)

// TestStrictUTF8 [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-1.5.4-1] [MQTT-1.5.4-2]:
// a topic name, topic filter (SUBSCRIBE and UNSUBSCRIBE), client id, will
// topic or username with U+0000, ill-formed UTF-8, a control character or
// a non-character closes the connection (a CONNECT without CONNACK).
func TestStrictUTF8(t *testing.T) {
	fields := []struct {
		name string
		run  func(t *testing.T, addr, s string) string
	}{
		{"publish-topic", func(t *testing.T, addr, s string) string {
			rc := strictConnected(t, addr, "u-pub", codec.V311)
			rc.write((&codec.Publish{Topic: []byte(s), Payload: []byte("x")}).AppendTo(nil, codec.V311))
			return observe(t, rc)
		}},
		{"subscribe-filter", func(t *testing.T, addr, s string) string {
			rc := strictConnected(t, addr, "u-sub", codec.V311)
			rc.write((&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(s)}}}).AppendTo(nil, codec.V311))
			return observe(t, rc)
		}},
		{"unsubscribe-filter", func(t *testing.T, addr, s string) string {
			rc := strictConnected(t, addr, "u-unsub", codec.V311)
			rc.write((&codec.Unsubscribe{PacketID: 1, Filters: [][]byte{[]byte(s)}}).AppendTo(nil, codec.V311))
			return observe(t, rc)
		}},
		{"client-id", func(t *testing.T, addr, s string) string {
			rc := dialRaw(t, addr)
			rc.write((&codec.Connect{Version: codec.V311, ClientID: []byte("c" + s), CleanStart: true}).AppendTo(nil))
			return observe(t, rc)
		}},
		{"will-topic", func(t *testing.T, addr, s string) string {
			rc := dialRaw(t, addr)
			rc.write((&codec.Connect{Version: codec.V311, ClientID: []byte("u-will"), CleanStart: true,
				WillFlag: true, WillTopic: []byte(s), WillPayload: []byte("w")}).AppendTo(nil))
			return observe(t, rc)
		}},
		{"username", func(t *testing.T, addr, s string) string {
			rc := dialRaw(t, addr)
			rc.write((&codec.Connect{Version: codec.V311, ClientID: []byte("u-user"), CleanStart: true,
				UsernameFlag: true, Username: []byte(s)}).AppendTo(nil))
			return observe(t, rc)
		}},
	}
	okWant := map[string]string{
		"publish-topic": "open", "subscribe-filter": "SUBACK open", "unsubscribe-filter": "UNSUBACK open",
		"client-id": "CONNACK(0) open", "will-topic": "CONNACK(0) open", "username": "CONNACK(0) open",
	}
	var cases []strictCase
	for _, f := range fields {
		for _, bs := range badStrings {
			cases = append(cases, strictCase{name: f.name + "/" + bs.name, want: "closed",
				run: func(t *testing.T, addr string) string { return f.run(t, addr, bs.s) }})
		}
		for _, ok := range okStrings {
			cases = append(cases, strictCase{name: f.name + "/ok-" + ok.name, want: okWant[f.name],
				run: func(t *testing.T, addr string) string { return f.run(t, addr, ok.s) }})
		}
	}
	runStrict(t, cases)
}

// TestStrictEmptyTopic [MQTT-4.7.3-1]: a zero-length topic filter in
// SUBSCRIBE or UNSUBSCRIBE, or a zero-length topic in PUBLISH, closes the
// connection; a SUBSCRIBE with a good filter before the empty one gets no
// SUBACK either.
func TestStrictEmptyTopic(t *testing.T) {
	send := func(pkt func() []byte) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			rc := strictConnected(t, addr, "empty", codec.V311)
			rc.write(pkt())
			return observe(t, rc)
		}
	}
	runStrict(t, []strictCase{
		{name: "publish", want: "closed", run: send(func() []byte {
			return (&codec.Publish{Topic: []byte{}, Payload: []byte("x"), QoS: 1, PacketID: 1}).AppendTo(nil, codec.V311)
		})},
		{name: "subscribe", want: "closed", run: send(func() []byte {
			return (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte{}}}}).AppendTo(nil, codec.V311)
		})},
		{name: "subscribe-second", want: "closed", run: send(func() []byte {
			return (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("a")}, {Filter: []byte{}}}}).AppendTo(nil, codec.V311)
		})},
		{name: "unsubscribe", want: "closed", run: send(func() []byte {
			return (&codec.Unsubscribe{PacketID: 1, Filters: [][]byte{{}}}).AppendTo(nil, codec.V311)
		})},
		{name: "unsubscribe-second", want: "closed", run: send(func() []byte {
			return (&codec.Unsubscribe{PacketID: 1, Filters: [][]byte{[]byte("a"), {}}}).AppendTo(nil, codec.V311)
		})},
	})
}

// delivered subscribes a fresh client to a topic at qos, has another
// client publish one message to it at qos (QoS 2: PUBLISH then PUBREL, so
// that Mosquitto, which delivers on PUBREL, delivers too) and returns the
// subscriber with the delivery's packet id.
func delivered(t *testing.T, addr, name string, qos uint8) (*rawClient, uint16) {
	t.Helper()
	topic := "strict/" + name
	sub := strictConnected(t, addr, "s-"+name, codec.V311)
	sub.subscribe(1, codec.Subscription{Filter: []byte(topic), QoS: qos})
	pub := strictConnected(t, addr, "p-"+name, codec.V311)
	pub.publish(topic, "m", qos, false, 7)
	switch qos {
	case 1:
		pub.expect(codec.TypePuback, 5*time.Second)
	case 2:
		pub.expect(codec.TypePubrec, 5*time.Second)
		pub.write(codec.AppendAck(nil, codec.TypePubrel, 7))
		pub.expect(codec.TypePubcomp, 5*time.Second)
	}
	p := sub.expectPublish(5 * time.Second)
	if p.QoS != qos {
		t.Fatalf("delivered at QoS %d; want %d", p.QoS, qos)
	}
	return sub, p.PacketID
}

// TestStrictWrongAck [MQTT-4.3.2-1] [MQTT-4.3.3-1] [MQTT-4.8.0-1]: an
// acknowledgement of the wrong type for a delivery closes the connection:
// PUBREC or PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREC.
// Acks for ids not in flight are ignored (PUBREC gets PUBREL, PUBREL gets
// PUBCOMP), a repeated PUBREC gets PUBREL again: as Mosquitto 2.0.11.
func TestStrictWrongAck(t *testing.T) {
	acks := func(qos uint8, seq ...codec.Type) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			sub, id := delivered(t, addr, strings.ReplaceAll(t.Name(), "/", "-"), qos)
			for _, a := range seq {
				sub.write(codec.AppendAck(nil, a, id))
			}
			return observe(t, sub)
		}
	}
	unknown := func(a codec.Type) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			sub, _ := delivered(t, addr, strings.ReplaceAll(t.Name(), "/", "-"), 1)
			sub.write(codec.AppendAck(nil, a, 999))
			return observe(t, sub)
		}
	}
	const (
		puback  = codec.TypePuback
		pubrec  = codec.TypePubrec
		pubrel  = codec.TypePubrel
		pubcomp = codec.TypePubcomp
	)
	runStrict(t, []strictCase{
		{name: "qos1-pubrec", want: "closed", run: acks(1, pubrec)},
		{name: "qos1-pubcomp", want: "closed", run: acks(1, pubcomp)},
		{name: "qos1-puback", want: "open", run: acks(1, puback)},
		{name: "qos1-puback-twice", want: "open", run: acks(1, puback, puback)},
		{name: "qos1-pubrel-is-inbound", want: "PUBCOMP(1) open", run: acks(1, pubrel)},
		{name: "qos2-puback", want: "closed", run: acks(2, puback)},
		{name: "qos2-pubcomp-before-pubrec", want: "closed", run: acks(2, pubcomp)},
		{name: "qos2-puback-after-pubrec", want: "PUBREL(1) closed", run: acks(2, pubrec, puback)},
		{name: "qos2-pubrec-twice", want: "PUBREL(1) PUBREL(1) open", run: acks(2, pubrec, pubrec)},
		{name: "qos2-complete", want: "PUBREL(1) open", run: acks(2, pubrec, pubcomp)},
		{name: "qos2-pubcomp-twice", want: "PUBREL(1) open", run: acks(2, pubrec, pubcomp, pubcomp)},
		{name: "unknown-puback", want: "open", run: unknown(puback)},
		{name: "unknown-pubrec", want: "PUBREL(999) open", run: unknown(pubrec)},
		{name: "unknown-pubrel", want: "PUBCOMP(999) open", run: unknown(pubrel)},
		{name: "unknown-pubcomp", want: "open", run: unknown(pubcomp)},
	})
}

// TestStrictV31ClientID: MQTT 3.1 (MQIsdp) takes client ids of 1 to 23
// characters; an empty or longer one gets CONNACK 2 (identifier rejected)
// and the connection is closed. Mosquitto 2.0.11 accepts ids longer than
// 23 (documented divergence).
func TestStrictV31ClientID(t *testing.T) {
	conn := func(id string, clean bool) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			rc := dialRaw(t, addr)
			rc.write((&codec.Connect{Version: codec.V31, ProtocolName: []byte("MQIsdp"), ClientID: []byte(id), CleanStart: clean}).AppendTo(nil))
			return observe(t, rc)
		}
	}
	runStrict(t, []strictCase{
		{name: "empty-clean", want: "CONNACK(2) closed", run: conn("", true)},
		{name: "empty-persistent", want: "CONNACK(2) closed", run: conn("", false)},
		{name: "23", want: "CONNACK(0) open", run: conn(strings.Repeat("a", 23), true)},
		{name: "24", want: "CONNACK(2) closed", mosq: "CONNACK(0) open", run: conn(strings.Repeat("b", 24), true)},
		{name: "v311-24", want: "CONNACK(0) open", run: func(t *testing.T, addr string) string {
			rc := dialRaw(t, addr)
			rc.write((&codec.Connect{Version: codec.V311, ClientID: []byte(strings.Repeat("c", 24)), CleanStart: true}).AppendTo(nil))
			return observe(t, rc)
		}},
	})
}

// TestStrictPubrelDup [MQTT-3.6.1-1]: a PUBREL with DUP (0x6a) is a legal
// MQTT 3.1 re-send and is answered with PUBCOMP; in 3.1.1 the PUBREL flags
// are 0010 exactly, and 0x6a closes the connection.
func TestStrictPubrelDup(t *testing.T) {
	rel := func(v codec.Version) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			rc := strictConnected(t, addr, fmt.Sprintf("rel%d", v), v)
			rc.publish("strict/rel", "m", 2, false, 9)
			rc.write([]byte{0x6a, 2, 0, 9})
			return observe(t, rc)
		}
	}
	runStrict(t, []strictCase{
		{name: "v31", want: "PUBREC(9) PUBCOMP(9) open", run: rel(codec.V31)},
		{name: "v311", want: "PUBREC(9) closed", run: rel(codec.V311)},
	})
}

// TestStrictAckBeforeDelivery [MQTT-4.3.2-2] [MQTT-4.3.3-2]: the PUBACK or
// PUBREC of a PUBLISH (which never waits for durability today) goes out
// before that message's delivery on the publisher's own connection.
// Mosquitto 2.0.11 sends the QoS 1 delivery first; it delivers QoS 2 on
// PUBREL, so its PUBREC comes first too.
func TestStrictAckBeforeDelivery(t *testing.T) {
	self := func(qos uint8) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			rc := strictConnected(t, addr, fmt.Sprintf("self%d", qos), codec.V311)
			rc.subscribe(1, codec.Subscription{Filter: []byte("strict/self"), QoS: qos})
			rc.publish("strict/self", "m", qos, false, 5)
			if qos == 2 {
				h, body, err := rc.readPacket(5 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				first := describe(h, body)
				rc.write(codec.AppendAck(nil, codec.TypePubrel, 5))
				return first + " " + observe(t, rc)
			}
			return observe(t, rc)
		}
	}
	runStrict(t, []strictCase{
		{name: "qos1", want: "PUBACK(5) PUBLISH open", mosq: "PUBLISH PUBACK(5) open", run: self(1)},
		{name: "qos2", want: "PUBREC(5) PUBLISH PUBCOMP(5) open", run: self(2)},
	})
}

// TestStrictTakeoverWill [MQTT-3.1.4-2] [MQTT-3.1.2-8]: a connection taken
// over by one that resumes its session (clean session 0 on both) ends
// without its will, as Mosquitto 2.0.11 does; when either side asks for a
// clean session the old session ends and its will is published.
func TestStrictTakeoverWill(t *testing.T) {
	takeover := func(oldClean, newClean bool) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			id := fmt.Sprintf("tk-%v-%v", oldClean, newClean)
			watch := strictConnected(t, addr, "watch-"+id, codec.V311)
			watch.subscribe(1, codec.Subscription{Filter: []byte("will/" + id)})
			old := dialRaw(t, addr)
			if ack := old.connect(codec.Connect{ClientID: []byte(id), CleanStart: oldClean, KeepAlive: 60,
				WillFlag: true, WillTopic: []byte("will/" + id), WillPayload: []byte("gone")}); ack.ReturnCode != 0 {
				t.Fatalf("CONNACK %d", ack.ReturnCode)
			}
			nc := dialRaw(t, addr)
			ack := nc.connect(codec.Connect{ClientID: []byte(id), CleanStart: newClean, KeepAlive: 60})
			old.expectClosed(5 * time.Second)
			res := fmt.Sprintf("present=%v", ack.SessionPresent)
			// A will is routed as the old connection closes: wait up to 5 s
			// for one that the rule expects, 0.5 s to see that none comes.
			wait := 500 * time.Millisecond
			if oldClean || newClean {
				wait = 5 * time.Second
			}
			h, body, err := watch.readPacket(wait)
			switch {
			case err == nil:
				res += " watcher=" + describe(h, body)
			case isTimeout(err):
				res += " watcher=nothing"
			default:
				t.Fatalf("watcher: %v", err)
			}
			nc.write([]byte{0xe0, 0}) // DISCONNECT: leave no session behind
			return res
		}
	}
	runStrict(t, []strictCase{
		{name: "persistent-persistent", want: "present=true watcher=nothing", run: takeover(false, false)},
		{name: "clean-clean", want: "present=false watcher=PUBLISH", run: takeover(true, true)},
		{name: "persistent-clean", want: "present=false watcher=PUBLISH", run: takeover(false, true)},
		{name: "clean-persistent", want: "present=false watcher=PUBLISH", run: takeover(true, false)},
	})
}

// TestStrictQoS2DupResend [MQTT-4.3.3-2]: a QoS 2 PUBLISH re-sent with DUP
// while its PUBREL is pending is acknowledged again with PUBREC and never
// delivered twice.
func TestStrictQoS2DupResend(t *testing.T) {
	runStrict(t, []strictCase{{name: "dup", want: "PUBREC(3) PUBREC(3) PUBCOMP(3) open deliveries=1", run: func(t *testing.T, addr string) string {
		sub := strictConnected(t, addr, "dup-sub", codec.V311)
		sub.subscribe(1, codec.Subscription{Filter: []byte("strict/dup/#"), QoS: 2})
		pub := strictConnected(t, addr, "dup-pub", codec.V311)
		pub.publish("strict/dup/m", "once", 2, false, 3)
		pub.write((&codec.Publish{Dup: true, QoS: 2, Topic: []byte("strict/dup/m"), Payload: []byte("once"), PacketID: 3}).AppendTo(nil, codec.V311))
		pub.write(codec.AppendAck(nil, codec.TypePubrel, 3))
		res := observe(t, pub)
		pub.publish("strict/dup/end", "end", 0, false, 0) // after the message in per-publisher order
		n := 0
		for {
			p := sub.expectPublish(5 * time.Second)
			if string(p.Topic) == "strict/dup/end" {
				break
			}
			n++
		}
		return fmt.Sprintf("%s deliveries=%d", res, n)
	}}})
}

// TestStrictCountedAndLogged: each strict-validation close counts in the
// malformed counter and logs one line that says what was wrong.
func TestStrictCountedAndLogged(t *testing.T) {
	var lc *logCapture
	b := startBroker(t, func(o *Options) { lc = capture(o) })
	cases := []struct {
		send func(rc *rawClient)
		log  string
	}{
		{func(rc *rawClient) { rc.publish("a\x01b", "x", 0, false, 0) }, "control character"},
		{func(rc *rawClient) { rc.publish("a\xef\xbf\xbfb", "x", 0, false, 0) }, "non-character"},
		{func(rc *rawClient) {
			rc.write((&codec.Unsubscribe{PacketID: 1, Filters: [][]byte{{}}}).AppendTo(nil, codec.V311))
		}, "zero-length topic filter"},
		{func(rc *rawClient) { rc.write(codec.AppendAck(nil, codec.TypePubrec, 1)) }, "PUBREC or PUBCOMP for a QoS 1 delivery"},
	}
	for i, tc := range cases {
		rc := strictConnected(t, b.MQTTAddr(), fmt.Sprintf("cnt%d", i), codec.V311)
		if i == 3 { // a QoS 1 delivery in flight to this client, id 1
			rc.subscribe(1, codec.Subscription{Filter: []byte("strict/cnt"), QoS: 1})
			rc.publish("strict/cnt", "m", 1, false, 2)
			rc.expect(codec.TypePuback, 5*time.Second)
			if p := rc.expectPublish(5 * time.Second); p.PacketID != 1 {
				t.Fatalf("delivery id %d; want 1", p.PacketID)
			}
		}
		tc.send(rc)
		rc.expectClosed(5 * time.Second)
		waitFor(t, 2*time.Second, "malformed counter", func() bool { return b.Stats().Malformed == uint64(i+1) })
		if !strings.Contains(lc.String(), tc.log) {
			t.Fatalf("log lacks %q:\n%s", tc.log, lc.String())
		}
	}
}

// TestStrictServerOnlyPackets [MQTT-4.8.0-1]: packets only a server sends
// (CONNACK, SUBACK, UNSUBACK, PINGRESP) and 5.0's AUTH on a 3.1.1
// connection are protocol violations: the connection is closed.
// Mosquitto 2.0.11 closes on CONNACK and AUTH but ignores SUBACK, UNSUBACK
// and PINGRESP; TinyMQ closes on all of them (docs/validation.md).
func TestStrictServerOnlyPackets(t *testing.T) {
	send := func(raw ...byte) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			rc := strictConnected(t, addr, "srv-only", codec.V311)
			rc.write(raw)
			return observe(t, rc)
		}
	}
	runStrict(t, []strictCase{
		{name: "connack", want: "closed", run: send(0x20, 2, 0, 0)},
		{name: "suback", want: "closed", mosq: "open", run: send(0x90, 3, 0, 1, 0)},
		{name: "unsuback", want: "closed", mosq: "open", run: send(0xb0, 2, 0, 1)},
		{name: "pingresp", want: "closed", mosq: "open", run: send(0xd0, 0)},
		{name: "auth", want: "closed", run: send(0xf0, 0)},
	})
}
