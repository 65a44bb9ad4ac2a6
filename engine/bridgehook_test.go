package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
)

// TestBridgeBitNoLocal: a 3.1.1 CONNECT with Mosquitto's bridge bit (level
// 0x84) is accepted, and the client is not sent its own messages back
// (No Local) while retained flags are kept on live messages (Retain As
// Published); a plain 3.1.1 client on the same topic gets its own.
func TestBridgeBitNoLocal(t *testing.T) {
	b := startBroker(t, nil)
	br := dialRaw(t, b.MQTTAddr())
	if ack := br.connect(codec.Connect{ClientID: []byte("br"), CleanStart: true, KeepAlive: 60, Bridge: true}); ack.ReturnCode != 0 {
		t.Fatalf("bridge CONNECT refused: %d", ack.ReturnCode)
	}
	br.subscribe(1, codec.Subscription{Filter: []byte("t/#"), QoS: 1})
	plain := connected(t, b.MQTTAddr(), "plain", true)
	plain.subscribe(1, codec.Subscription{Filter: []byte("t/#"), QoS: 1})

	br.publish("t/own", "x", 0, false, 0)
	if p := plain.expectPublish(5 * time.Second); string(p.Topic) != "t/own" {
		t.Fatalf("plain client got %q", p.Topic)
	}
	plain.publish("t/other", "y", 0, true, 0)
	if p := plain.expectPublish(5 * time.Second); string(p.Topic) != "t/other" {
		t.Fatalf("plain client got %q", p.Topic)
	}
	// The bridge gets only the other client's message, its retain flag kept.
	p := br.expectPublish(5 * time.Second)
	if string(p.Topic) != "t/other" || !p.Retain {
		t.Fatalf("bridge got %q retain=%v; want t/other retained (its own message is No Local)", p.Topic, p.Retain)
	}
	br.expectNothing(200 * time.Millisecond)
	plain.publish("t/x", "z", 0, false, 0)
	plain.expectPublish(5 * time.Second) // its own: no No Local without the bit
}

// TestBridgeCredentialsAndSys: the bridge credentials pass a broker that
// requires a password file, with no ACL in the way; PublishSys publishes
// a retained $SYS value that subscribers (and late subscribers) see, and
// refuses topics outside $SYS/.
func TestBridgeCredentialsAndSys(t *testing.T) {
	dir := t.TempDir()
	h, err := auth.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	pwFile, aclFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(pwFile, []byte("alice:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclFile, []byte("user alice\ntopic read nothing/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pwFile, aclFile })
	user, pass := b.BridgeCredentials()
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(connectPacket("bridge-local", user, string(pass))); ack.ReturnCode != 0 {
		t.Fatalf("bridge credentials refused: %d", ack.ReturnCode)
	}
	if codes := rc.subscribe(1, codec.Subscription{Filter: []byte("any/#"), QoS: 1}); codes[0] >= 0x80 {
		t.Fatalf("bridge subscription refused: %#x", codes[0])
	}
	bad := dialRaw(t, b.MQTTAddr())
	if ack := bad.connect(connectPacket("x", user, "bridge-guess")); ack.ReturnCode == 0 {
		t.Fatal("a wrong bridge password was accepted")
	}

	if err := b.PublishSys("not/sys", []byte("1"), true); err == nil {
		t.Fatal("PublishSys outside $SYS/ accepted")
	}
	rc.subscribe(2, codec.Subscription{Filter: []byte("$SYS/broker/connection/+/state"), QoS: 0})
	if err := b.PublishSys("$SYS/broker/connection/cloud/state", []byte("1"), true); err != nil {
		t.Fatal(err)
	}
	p := rc.expectPublish(5 * time.Second)
	if string(p.Topic) != "$SYS/broker/connection/cloud/state" || string(p.Payload) != "1" {
		t.Fatalf("got %q %q", p.Topic, p.Payload)
	}
	late := dialRaw(t, b.MQTTAddr())
	late.connect(connectPacket("late", user, string(pass)))
	late.subscribe(1, codec.Subscription{Filter: []byte("$SYS/broker/connection/#"), QoS: 0})
	if p := late.expectPublish(5 * time.Second); !p.Retain || string(p.Payload) != "1" {
		t.Fatalf("late subscriber: %+v", p)
	}
}

// TestBridgeInfoQueue: Bridges reports the queue the broker holds for a
// bridge's offline local session and counts what it drops beyond the
// queue bound.
func TestBridgeInfoQueue(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxQueuedMsgs = 3 })
	if b.Bridges() != nil {
		t.Fatal("bridges listed with none configured")
	}
	b.SetBridgeInfo(func() []BridgeInfo {
		return []BridgeInfo{{Name: "cloud", State: "backoff", LocalClientID: "local.edge"}}
	})
	s := connected(t, b.MQTTAddr(), "local.edge", false)
	s.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 1})
	s.write([]byte{0xe0, 0}) // DISCONNECT: the session stays and queues
	s.expectClosed(5 * time.Second)
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range 5 {
		pub.publish("q/x", "m", 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	waitFor(t, 5*time.Second, "queue and drops", func() bool {
		l := b.Bridges()
		return len(l) == 1 && l[0].Queued == 3 && l[0].QueueDropped == 2
	})
	if got := string(b.appendBridgeMetrics(nil)); !strings.Contains(got, `tinymq_bridge_queued_messages{bridge="cloud"} 3`) ||
		!strings.Contains(got, `tinymq_bridge_queue_dropped_total{bridge="cloud"} 2`) || !strings.Contains(got, `tinymq_bridge_up{bridge="cloud"} 0`) {
		t.Fatalf("metrics:\n%s", got)
	}
}

// TestBridgeSys: every SysInterval each bridge's figures are published
// under $SYS/broker/bridge/NAME/, retained.
func TestBridgeSys(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.SysInterval = 50 * time.Millisecond })
	b.SetBridgeInfo(func() []BridgeInfo {
		return []BridgeInfo{{Name: "cloud", State: "connected", Connects: 4, MsgsOut: 7, LocalClientID: "local.x"}}
	})
	rc := connected(t, b.MQTTAddr(), "sys", true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("$SYS/broker/bridge/cloud/#"), QoS: 0})
	want := map[string]string{"state": "connected", "connects": "4", "messages/sent": "7", "queued": "0"}
	got := map[string]string{}
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		p := rc.expectPublish(5 * time.Second)
		name := strings.TrimPrefix(string(p.Topic), "$SYS/broker/bridge/cloud/")
		if w, ok := want[name]; ok && w == string(p.Payload) {
			got[name] = w
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %v; want %v", got, want)
	}
}
