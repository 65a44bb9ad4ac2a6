package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/codec"
)

// Shared subscriptions ($share/{group}/{filter}): docs/shared.md.

// sessionLoad reports a session's in-flight and queued counts (ok false
// when the broker has no session of that id).
func sessionLoad(b *Broker, id string) (inflight, queued int, ok bool) {
	s := b.sessionByID(id)
	if s == nil {
		return 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflightLocked(), s.queuedLocked(), true
}

// sharedRaw connects a raw 3.1.1 client and subscribes it to filter.
func sharedRaw(t *testing.T, b *Broker, id string, clean bool, filter string, qos uint8) *rawClient {
	t.Helper()
	rc := connected(t, b.MQTTAddr(), id, clean)
	if codes := rc.subscribe(1, codec.Subscription{Filter: []byte(filter), QoS: qos}); len(codes) != 1 || codes[0] != codec.ReasonCode(qos) {
		t.Fatalf("%s: SUBACK %v", id, codes)
	}
	return rc
}

// publish3 publishes through a 3.1.1 paho client and waits for the
// acknowledgement.
func publish3(t *testing.T, c mqtt.Client, topicName, payload string, qos byte, retain bool) {
	t.Helper()
	if tok := c.Publish(topicName, qos, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", payload, tok.Error())
	}
}

// One member of the group gets each message, whatever its protocol
// version: a 3.1.1 and two v5 members share 60 QoS 1 messages (round-robin:
// 20 each), a plain subscriber gets all 60.
func TestSharedEachMessageToOneMember(t *testing.T) {
	b := startBroker(t, nil)
	m3 := pahoClient(t, b.MQTTAddr(), "m3", true)
	got3 := pahoSubscribe(t, m3, "$share/workers/jobs/+", 1)
	m5a := connectV5(t, b.MQTTAddr(), "m5a", nil)
	m5a.sub("$share/workers/jobs/+", 1, nil)
	m5b := connectV5(t, b.MQTTAddr(), "m5b", nil)
	m5b.sub("$share/workers/jobs/#", 1, nil) // another group: same name, other filter
	m5c := connectV5(t, b.MQTTAddr(), "m5c", nil)
	m5c.sub("$share/workers/jobs/+", 1, nil)
	plain := pahoClient(t, b.MQTTAddr(), "plain", true)
	gotPlain := pahoSubscribe(t, plain, "jobs/+", 1)

	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	const n = 60
	for i := range n {
		publish3(t, pub, "jobs/x", fmt.Sprint(i), 1, false)
	}
	seen := map[string]string{} // payload -> member, for the jobs/+ group
	count := map[string]int{}
	take := func(who, payload string) {
		if prev, dup := seen[payload]; dup {
			t.Fatalf("message %s went to %s and %s", payload, prev, who)
		}
		seen[payload] = who
		count[who]++
	}
	deadline := time.After(10 * time.Second)
	other := 0 // the jobs/# group, a member of its own
	for len(seen) < n || other < n {
		select {
		case m := <-got3:
			take("m3", m.payload)
		case m := <-m5a.msgs:
			take("m5a", string(m.Payload))
		case m := <-m5c.msgs:
			take("m5c", string(m.Payload))
		case <-m5b.msgs:
			other++
		case <-deadline:
			t.Fatalf("after 10 s: %d of %d messages reached the group (%v), %d the other group", len(seen), n, count, other)
		}
	}
	for _, who := range []string{"m3", "m5a", "m5c"} {
		if count[who] != n/3 {
			t.Errorf("round-robin spread %v; want %d each", count, n/3)
			break
		}
	}
	for range n {
		next(t, gotPlain)
	}
	m5a.none(200 * time.Millisecond)
	m5c.none(0)
	select {
	case m := <-got3:
		t.Fatalf("extra message %q", m.payload)
	case <-m5b.msgs:
		t.Fatal("extra message for the other group")
	default:
	}
}

// An offline persistent member is passed over while another is live;
// only when no member can take a message does the round-robin one get it
// (queued, for an offline persistent member).
func TestSharedSkipsOfflineMember(t *testing.T) {
	b := startBroker(t, nil)
	off := sharedRaw(t, b, "off", false, "$share/g/t", 1)
	off.write([]byte{0xe0, 0}) // DISCONNECT: persistent session stays, offline
	off.expectClosed(5 * time.Second)
	offline(t, b, "off")
	live := sharedRaw(t, b, "live", true, "$share/g/t", 1)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	for i := range 10 {
		publish3(t, pub, "t", fmt.Sprint(i), 1, false)
		p := live.expectPublish(5 * time.Second)
		if string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("live got %q; want %d", p.Payload, i)
		}
		live.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	if _, q, ok := sessionLoad(b, "off"); !ok || q != 0 {
		t.Fatalf("offline member queued %d (session %v); want 0: skipped for the live one", q, ok)
	}
	// No live member: the round-robin pick (off, when it comes up) queues.
	live.write([]byte{0xe0, 0})
	live.expectClosed(5 * time.Second)
	waitFor(t, 5*time.Second, "live's session to end", func() bool { _, _, ok := sessionLoad(b, "live"); return !ok })
	for i := range 3 {
		publish3(t, pub, "t", fmt.Sprint("q", i), 1, false)
	}
	if _, q, _ := sessionLoad(b, "off"); q != 3 {
		t.Fatalf("offline member queued %d; want 3 (the only member left)", q)
	}
	back := connected(t, b.MQTTAddr(), "off", false)
	for i := range 3 {
		if p := back.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint("q", i) {
			t.Fatalf("returning member got %q; want q%d", p.Payload, i)
		}
	}
	back.expectNothing(200 * time.Millisecond)
}

// A member whose session ends (DISCONNECT of a clean session) with QoS 1
// messages unacknowledged and queued: they reach the group's other
// member, as new messages.
func TestSharedRedeliverOnDisconnect(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxInflight = 2 })
	a := sharedRaw(t, b, "a", true, "$share/g/jobs", 1)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	for i := range 3 {
		publish3(t, pub, "jobs", fmt.Sprint(i), 1, false)
	}
	for i := range 2 { // the in-flight window; the third waits in a's queue
		if p := a.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("a got %q; want %d", p.Payload, i)
		}
	}
	if f, q, _ := sessionLoad(b, "a"); f != 2 || q != 1 {
		t.Fatalf("a holds %d in flight, %d queued; want 2 and 1", f, q)
	}
	other := connectV5(t, b.MQTTAddr(), "other", nil)
	other.sub("$share/g/jobs", 1, nil)
	other.none(100 * time.Millisecond) // a is live and can take them: nothing moves yet
	a.write([]byte{0xe0, 0})           // never acknowledged
	got := map[string]bool{}
	for range 3 {
		m := other.next(5 * time.Second)
		if m.QoS != 1 || m.Topic != "jobs" {
			t.Fatalf("redistributed %+v; want QoS 1 on jobs", m)
		}
		got[string(m.Payload)] = true
	}
	if !got["0"] || !got["1"] || !got["2"] {
		t.Fatalf("other got %v; want 0, 1 and 2", got)
	}
	other.none(200 * time.Millisecond)
}

// A persistent member that drops off keeps its messages (it may return);
// when its session is then discarded (a clean connect with its id), they
// go to the other member as new deliveries (DUP clear, new packet ids).
func TestSharedRedeliverOnDiscard(t *testing.T) {
	b := startBroker(t, nil)
	a := sharedRaw(t, b, "a", false, "$share/g/jobs", 1)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	publish3(t, pub, "jobs", "x", 1, false)
	a.expectPublish(5 * time.Second)
	bm := sharedRaw(t, b, "b", true, "$share/g/jobs", 1)
	a.c.Close() // a network drop: the session lives on, offline
	offline(t, b, "a")
	bm.expectNothing(300 * time.Millisecond) // kept for a's return
	if f, _, _ := sessionLoad(b, "a"); f != 1 {
		t.Fatalf("offline a holds %d in flight; want 1", f)
	}
	connected(t, b.MQTTAddr(), "a", true) // discards a's session
	p := bm.expectPublish(5 * time.Second)
	if string(p.Payload) != "x" || p.QoS != 1 || p.Dup {
		t.Fatalf("b got %+v; want x, QoS 1, DUP clear", p)
	}
	bm.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	waitFor(t, 5*time.Second, "b's acknowledgement", func() bool { f, _, _ := sessionLoad(b, "b"); return f == 0 })
	bm.expectNothing(200 * time.Millisecond)
}

// A persistent member's session that expires (SessionExpiry) hands its
// messages on too, from the expiry sweep.
func TestSharedRedeliverOnExpiry(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.SessionExpiry = time.Second })
	a := sharedRaw(t, b, "a", false, "$share/g/jobs", 2)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	publish3(t, pub, "jobs", "x", 2, false)
	if p := a.expectPublish(5 * time.Second); p.QoS != 2 {
		t.Fatalf("a got QoS %d; want 2", p.QoS)
	}
	bm := sharedRaw(t, b, "b", true, "$share/g/jobs", 1)
	a.c.Close()
	p := bm.expectPublish(10 * time.Second) // after the 1 s expiry and its sweep
	if string(p.Payload) != "x" || p.QoS != 1 {
		t.Fatalf("b got %+v; want x at b's granted QoS 1", p)
	}
	if _, _, ok := sessionLoad(b, "a"); ok {
		t.Fatal("a's session still there")
	}
}

// Strategies: round-robin alternates; least_loaded prefers the idle member
// over one sitting on an unacknowledged message (round-robin would not);
// random spreads.
func TestSharedStrategies(t *testing.T) {
	t.Run("round_robin", func(t *testing.T) {
		b := startBroker(t, nil)
		x := sharedRaw(t, b, "x", true, "$share/g/rr", 0)
		y := sharedRaw(t, b, "y", true, "$share/g/rr", 0)
		pub := pahoClient(t, b.MQTTAddr(), "pub", true)
		for i := range 6 {
			publish3(t, pub, "rr", fmt.Sprint(i), 1, false)
		}
		for i := range 3 {
			if p := x.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint(2*i) {
				t.Fatalf("x got %q; want %d", p.Payload, 2*i)
			}
			if p := y.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint(2*i+1) {
				t.Fatalf("y got %q; want %d", p.Payload, 2*i+1)
			}
		}
	})
	t.Run("least_loaded", func(t *testing.T) {
		b := startBroker(t, func(o *Options) { o.SharedStrategy = SharedLeastLoaded })
		busy := sharedRaw(t, b, "busy", true, "$share/g/ll", 1) // never acknowledges
		idle := sharedRaw(t, b, "idle", true, "$share/g/ll", 1)
		pub := pahoClient(t, b.MQTTAddr(), "pub", true)
		publish3(t, pub, "ll", "first", 1, false) // a tie: the round-robin one, busy
		if p := busy.expectPublish(5 * time.Second); string(p.Payload) != "first" {
			t.Fatalf("busy got %q", p.Payload)
		}
		for i := range 4 {
			publish3(t, pub, "ll", fmt.Sprint(i), 1, false)
			p := idle.expectPublish(5 * time.Second)
			if string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("idle got %q; want %d", p.Payload, i)
			}
			idle.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
			waitFor(t, 5*time.Second, "idle's acknowledgement", func() bool { f, _, _ := sessionLoad(b, "idle"); return f == 0 })
		}
		busy.expectNothing(100 * time.Millisecond)
		if f, _, _ := sessionLoad(b, "busy"); f != 1 {
			t.Fatalf("busy holds %d; want 1", f)
		}
	})
	t.Run("random", func(t *testing.T) {
		b := startBroker(t, func(o *Options) { o.SharedStrategy = SharedRandom })
		ms := []*rawClient{
			sharedRaw(t, b, "r0", true, "$share/g/rnd", 0),
			sharedRaw(t, b, "r1", true, "$share/g/rnd", 0),
			sharedRaw(t, b, "r2", true, "$share/g/rnd", 0),
		}
		pub := pahoClient(t, b.MQTTAddr(), "pub", true)
		const n = 90
		for i := range n {
			publish3(t, pub, "rnd", fmt.Sprint(i), 1, false)
		}
		seen := map[string]bool{}
		counts := make([]int, len(ms))
		waitFor(t, 10*time.Second, "all messages", func() bool {
			for i, m := range ms {
				for {
					h, body, err := m.readPacket(time.Millisecond)
					if err != nil {
						break
					}
					var p codec.Publish
					if err := p.Decode(codec.V311, h, body); err != nil {
						t.Fatalf("PUBLISH: %v", err)
					}
					if seen[string(p.Payload)] {
						t.Fatalf("message %s twice", p.Payload)
					}
					seen[string(p.Payload)] = true
					counts[i]++
				}
			}
			return len(seen) == n
		})
		// Each share is binomial(90, 1/3): below 5 has odds of about 1e-9.
		for i, c := range counts {
			if c < 5 {
				t.Fatalf("random spread %v: member %d got %d", counts, i, c)
			}
		}
	})
	if _, err := New(Options{MQTTAddr: "127.0.0.1:0", SharedStrategy: "fastest"}); err == nil || !strings.Contains(err.Error(), "SharedStrategy") {
		t.Errorf("unknown strategy: err %v", err)
	}
}

// Retained messages are not sent on a shared subscription (MQTT 5.0
// §4.8.2), for 3.1.1 and v5 members, while a plain subscription gets them.
func TestSharedNoRetained(t *testing.T) {
	b := startBroker(t, nil)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	publish3(t, pub, "state/x", "on", 1, true)
	m3 := sharedRaw(t, b, "m3", true, "$share/g/state/+", 1)
	m5 := connectV5(t, b.MQTTAddr(), "m5", nil)
	m5.sub("$share/g/state/#", 1, nil)
	plain := sharedRaw(t, b, "plain", true, "state/+", 1)
	if p := plain.expectPublish(5 * time.Second); string(p.Payload) != "on" || !p.Retain {
		t.Fatalf("plain subscriber got %+v; want the retained message", p)
	}
	m3.expectNothing(200 * time.Millisecond)
	m5.none(0)
	// Live messages do reach them.
	pub2 := connectV5(t, b.MQTTAddr(), "pub5", nil)
	pub2.pub(&paho.Publish{Topic: "state/x", QoS: 1, Payload: []byte("live")})
	if p := m3.expectPublish(5 * time.Second); string(p.Payload) != "live" {
		t.Fatalf("m3 got %q", p.Payload)
	}
	if m := m5.next(5 * time.Second); string(m.Payload) != "live" {
		t.Fatalf("m5 got %q", m.Payload)
	}
}

// The last member's session ends with a message unacknowledged: with
// nobody left in the group it is dropped, and counted.
func TestSharedLastMemberGoneDropsCounted(t *testing.T) {
	b := startBroker(t, nil)
	a := sharedRaw(t, b, "a", true, "$share/g/jobs", 1)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	publish3(t, pub, "jobs", "x", 1, false)
	a.expectPublish(5 * time.Second)
	before := b.Stats().Dropped
	a.write([]byte{0xe0, 0})
	waitFor(t, 5*time.Second, "the drop to be counted", func() bool { return b.Stats().Dropped == before+1 })
	if n := b.subs.Count(); n != 0 {
		t.Fatalf("%d subscriptions left; want 0", n)
	}
}

// A v5 member with Session Expiry 0 (the session ends with the
// connection) that never acknowledges (paho.golang with manual acks)
// disconnects: its two messages reach the other member.
func TestSharedRedeliverV5ExpiryZero(t *testing.T) {
	b := startBroker(t, nil)
	a, err := dialV5(t, b.MQTTAddr(), &paho.Connect{ClientID: "a5", CleanStart: true}, func(c *paho.ClientConfig) {
		c.EnableManualAcknowledgment = true
	})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	a.sub("$share/g/jobs", 1, nil)
	pub := connectV5(t, b.MQTTAddr(), "pub5", nil)
	for _, p := range []string{"x", "y"} {
		pub.pub(&paho.Publish{Topic: "jobs", QoS: 1, Payload: []byte(p)})
		if m := a.next(5 * time.Second); string(m.Payload) != p {
			t.Fatalf("a got %q; want %s", m.Payload, p)
		}
	}
	if f, _, _ := sessionLoad(b, "a5"); f != 2 {
		t.Fatalf("a holds %d in flight; want 2 (never acknowledged)", f)
	}
	other := sharedRaw(t, b, "other", true, "$share/g/jobs", 1)
	if err := a.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	got := map[string]bool{}
	for range 2 {
		p := other.expectPublish(5 * time.Second)
		if p.Dup {
			t.Errorf("%s re-delivered with DUP; want a new message", p.Payload)
		}
		got[string(p.Payload)] = true
	}
	if !got["x"] || !got["y"] {
		t.Fatalf("other got %v; want x and y", got)
	}
}
