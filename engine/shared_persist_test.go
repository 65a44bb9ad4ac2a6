package engine

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// Shared-group members with persistence on (docs/shared.md "When a
// member's session ends"): the messages an offline member holds in the
// store, and those it holds after a restart, go to the group's other
// members when its session ends.

// storedLoad reports a session's in-flight count, the queued messages in
// memory and those in the store only (ok false: no such session).
func storedLoad(b *Broker, id string) (inflight, inMem, onDisk int, ok bool) {
	s := b.sessionByID(id)
	if s == nil {
		return 0, 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st == nil {
		return 0, 0, 0, true
	}
	return len(s.st.inflight), len(s.st.q), s.st.onDisk(), true
}

// offline waits until the session id has no connection.
func offline(t *testing.T, b *Broker, id string) {
	t.Helper()
	waitFor(t, 5*time.Second, id+" offline", func() bool {
		s := b.sessionByID(id)
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.c == nil
	})
}

// v5Drain reads n messages on v (paho acknowledges them) and returns
// their payloads sorted.
func v5Drain(t *testing.T, v *v5c, n int) []string {
	t.Helper()
	var got []string
	for range n {
		got = append(got, string(v.next(5*time.Second).Payload))
	}
	sort.Strings(got)
	return got
}

// A persistent member goes offline; while every member is offline the
// group's messages are queued round-robin, into the store. When the
// member's session expires (v5 Session Expiry), the messages its queue
// held in the store go to the other member, which gets them all on its
// return.
func TestSharedPersistExpiryHandsOnStoredQueue(t *testing.T) {
	// --session-expiry only makes the expiry sweep visit every session
	// each tick: both members are v5, with their own Session Expiry.
	b := persistentBroker(t, t.TempDir(), store.FsyncInterval, func(o *Options) { o.SessionExpiry = time.Second })
	long := &paho.Connect{CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	bm := connectV5(t, b.MQTTAddr(), "b", long)
	bm.sub("$share/g/t", 1, nil)
	a := connectV5(t, b.MQTTAddr(), "a", &paho.Connect{CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(2)}})
	a.sub("$share/g/t", 1, nil)
	for _, v := range []*v5c{a, bm} {
		if err := v.c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect: %v", err)
		}
	}
	offline(t, b, "a")
	offline(t, b, "b")
	pub := connected(t, b.MQTTAddr(), "pub", true)
	var want []string
	for i := range 6 {
		want = append(want, fmt.Sprint("m", i))
		pub.publish("t", want[i], 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	// No member can take them now: round-robin, 3 each, in the store.
	if f, inMem, onDisk, _ := storedLoad(b, "a"); f != 0 || inMem != 0 || onDisk != 3 {
		t.Fatalf("a holds %d in flight, %d queued in memory, %d in the store; want 0, 0, 3", f, inMem, onDisk)
	}
	if _, _, onDisk, _ := storedLoad(b, "b"); onDisk != 3 {
		t.Fatalf("b holds %d in the store; want 3", onDisk)
	}
	waitFor(t, 10*time.Second, "a's session to expire", func() bool { _, _, _, ok := storedLoad(b, "a"); return !ok })
	// a's three go to b (offline too: queued for it).
	waitFor(t, 5*time.Second, "a's messages queued for b", func() bool {
		_, inMem, onDisk, _ := storedLoad(b, "b")
		return inMem+onDisk == 6
	})
	resume := &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	bm = connectV5(t, b.MQTTAddr(), "b", resume)
	if got := v5Drain(t, bm, 6); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("b got %v; want %v", got, want)
	}
	bm.none(300 * time.Millisecond)
	if d := b.Stats().Dropped; d != 0 {
		t.Fatalf("%d dropped; want 0", d)
	}
}

// The same across a restart: a member's in-flight message and its stored
// queue are rebuilt with their group, so when its session expires after
// the restart (--session-expiry) they reach the other member. A plain
// persistent session's queue is untouched by all this: it gets every
// message, in order, and one that expires hands nothing to the group.
func TestSharedPersistRestartThenExpiry(t *testing.T) {
	dir := t.TempDir()
	opts := func(o *Options) { o.SessionExpiry = 5 * time.Second }
	b := persistentBroker(t, dir, store.FsyncInterval, opts)
	long := &paho.Connect{CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	bm := connectV5(t, b.MQTTAddr(), "b", long)
	bm.sub("$share/g/t", 1, nil)
	plain := connectV5(t, b.MQTTAddr(), "plain", long)
	plain.sub("t", 1, nil)
	short := sharedRaw(t, b, "short", false, "t", 1) // plain, 3.1.1: expires with a
	for _, v := range []*v5c{bm, plain} {
		if err := v.c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatalf("disconnect: %v", err)
		}
	}
	short.write([]byte{0xe0, 0})
	short.expectClosed(5 * time.Second)
	offline(t, b, "b")
	offline(t, b, "plain")
	offline(t, b, "short")
	a := sharedRaw(t, b, "a", false, "$share/g/t", 1) // 3.1.1: --session-expiry
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("t", "f0", 1, false, 1) // a is the only live member
	pub.expect(codec.TypePuback, 5*time.Second)
	if p := a.expectPublish(5 * time.Second); string(p.Payload) != "f0" {
		t.Fatalf("a got %q; want f0", p.Payload)
	}
	a.c.Close() // never acknowledged: f0 stays in flight
	offline(t, b, "a")
	want := []string{"f0"}
	for i := range 4 {
		want = append(want, fmt.Sprint("q", i))
		pub.publish("t", want[i+1], 1, false, uint16(i+2))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if f, _, onDisk, _ := storedLoad(b, "a"); f != 1 || onDisk != 2 {
		t.Fatalf("a holds %d in flight, %d in the store; want 1 and 2", f, onDisk)
	}
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncInterval, opts)
	if f, _, onDisk, ok := storedLoad(b, "a"); !ok || f != 1 || onDisk != 2 {
		t.Fatalf("after restart a holds %d in flight, %d in the store (session %v); want 1 and 2", f, onDisk, ok)
	}
	waitFor(t, 15*time.Second, "a's and short's sessions to expire", func() bool {
		_, _, _, okA := storedLoad(b, "a")
		_, _, _, okS := storedLoad(b, "short")
		return !okA && !okS
	})
	waitFor(t, 5*time.Second, "a's messages queued for b", func() bool {
		_, inMem, onDisk, _ := storedLoad(b, "b")
		return inMem+onDisk == 5
	})
	resume := &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	bm = connectV5(t, b.MQTTAddr(), "b", resume)
	if got := v5Drain(t, bm, 5); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("b got %v; want %v (its own two, and a's in-flight and stored ones)", got, want)
	}
	bm.none(300 * time.Millisecond) // nothing of short's plain queue
	plain = connectV5(t, b.MQTTAddr(), "plain", resume)
	for _, w := range want {
		if m := plain.next(5 * time.Second); string(m.Payload) != w {
			t.Fatalf("plain got %q; want %q (every message, in order)", m.Payload, w)
		}
	}
	plain.none(200 * time.Millisecond)
}
