package engine

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// gatedAuth is a slow Authenticator: each call blocks until the gate is
// open (as PBKDF2 or a remote service would), then accepts password
// "good". It counts its calls.
type gatedAuth struct {
	gate  chan struct{}
	calls atomic.Int32
}

func newGatedAuth(open bool) *gatedAuth {
	g := &gatedAuth{gate: make(chan struct{})}
	if open {
		close(g.gate)
	}
	return g
}

func (g *gatedAuth) Authenticate(cr *Credentials) codec.ReasonCode {
	g.calls.Add(1)
	<-g.gate
	if string(cr.Password) == "good" {
		return codec.Success
	}
	return codec.NotAuthorized
}

// prefixACL is a test Authorizer: user U may write U/# and read U/# and
// shared/#; alice may also write shared/#; anonymous clients may read
// shared/#.
type prefixACL struct{}

func (prefixACL) For(id Identity) Permissions { return prefixPerms{user: id.Username} }

type prefixPerms struct{ user string }

func (p prefixPerms) own(t []byte) bool {
	return p.user != "" && (string(t) == p.user || bytes.HasPrefix(t, []byte(p.user+"/")))
}
func (p prefixPerms) CanWrite(t []byte) bool {
	return p.own(t) || p.user == "alice" && bytes.HasPrefix(t, []byte("shared/"))
}
func (p prefixPerms) CanRead(t []byte) bool {
	return p.own(t) || bytes.HasPrefix(t, []byte("shared/"))
}
func (p prefixPerms) CanSubscribe(f []byte) bool {
	return string(f) == "#" || p.CanRead(bytes.TrimSuffix(bytes.TrimSuffix(f, []byte("#")), []byte("/")))
}

// A slow Authenticator runs off the loop: while verifications are held,
// another client on the same broker (same loops) connects and gets
// answers; the held CONNECTs, pipelined with a PUBLISH in the same write,
// are then accepted and their PUBLISH routed.
func TestAuthOffLoop(t *testing.T) {
	g := newGatedAuth(false)
	b := startBroker(t, func(o *Options) {
		o.Auth = g
		o.APIKey = "key"
		o.Loops = 1
	})
	sub := dialRaw(t, b.MQTTAddr())
	if ack := sub.connect(connectPacket("sub", "admin", "key")); ack.ReturnCode != 0 {
		t.Fatalf("API key CONNACK %d", ack.ReturnCode)
	}
	sub.subscribe(1, codec.Subscription{Filter: []byte("t/#")})

	const held = 8
	var cs []*rawClient
	for i := range held {
		rc := dialRaw(t, b.MQTTAddr())
		p := connectPacket("slow"+string(rune('a'+i)), "u", "good")
		pub := codec.Publish{Topic: []byte("t/x"), Payload: []byte{byte(i)}}
		rc.write(pub.AppendTo(p.AppendTo(nil), codec.V311)) // CONNECT and PUBLISH in one write
		cs = append(cs, rc)
	}
	waitFor(t, 5*time.Second, "all verifications started", func() bool { return g.calls.Load() >= 2 })
	// The loop is free: a client with the API key connects and is answered.
	other := dialRaw(t, b.MQTTAddr())
	if ack := other.connect(connectPacket("other", "x", "key")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d while verifications are held", ack.ReturnCode)
	}
	other.write([]byte{0xC0, 0}) // PINGREQ
	other.expect(codec.TypePingresp, 5*time.Second)
	for _, rc := range cs {
		rc.expectNothing(50 * time.Millisecond) // no CONNACK before the verdict
	}
	close(g.gate)
	seen := map[byte]bool{}
	for _, rc := range cs {
		rc.ver = codec.V311
		h, body := rc.expect(codec.TypeConnack, 5*time.Second)
		var ack codec.Connack
		if err := ack.Decode(codec.V311, h, body); err != nil || ack.ReturnCode != 0 {
			t.Fatalf("held CONNACK %d, %v", ack.ReturnCode, err)
		}
	}
	for range held {
		p := sub.expectPublish(5 * time.Second)
		seen[p.Payload[0]] = true
	}
	if len(seen) != held {
		t.Fatalf("got %d distinct publishes; want %d", len(seen), held)
	}
}

// A successful verification is cached: a reconnect with the same
// credentials does not call the Authenticator again; other credentials do.
func TestAuthCache(t *testing.T) {
	g := newGatedAuth(true)
	b := startBroker(t, func(o *Options) { o.Auth = g })
	for range 3 {
		rc := dialRaw(t, b.MQTTAddr())
		if ack := rc.connect(connectPacket("c", "u", "good")); ack.ReturnCode != 0 {
			t.Fatalf("CONNACK %d", ack.ReturnCode)
		}
		rc.c.Close()
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("Authenticate called %d times for one user's three connects; want 1", n)
	}
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(connectPacket("c", "u", "bad")); ack.ReturnCode != codec.ConnRefusedNotAuthorized {
		t.Fatalf("wrong password CONNACK %d; want 5", ack.ReturnCode)
	}
	rc.expectClosed(5 * time.Second)
	if n := g.calls.Load(); n != 2 {
		t.Fatalf("Authenticate called %d times; want 2 (a wrong password is never cached)", n)
	}
	if b.Stats().AuthFailures != 1 {
		t.Fatalf("auth failures %d; want 1", b.Stats().AuthFailures)
	}
}

// Anonymous clients: refused once authentication is configured, unless
// AllowAnonymous says otherwise.
func TestAuthAnonymous(t *testing.T) {
	yes := true
	for _, c := range []struct {
		name string
		edit func(*Options)
		want uint8
	}{
		{"nothing configured", func(*Options) {}, codec.ConnAccepted},
		{"password auth", func(o *Options) { o.Auth = newGatedAuth(true) }, codec.ConnRefusedNotAuthorized},
		{"api key", func(o *Options) { o.APIKey = "k" }, codec.ConnRefusedNotAuthorized},
		{"password auth, anonymous allowed", func(o *Options) { o.Auth = newGatedAuth(true); o.AllowAnonymous = &yes }, codec.ConnAccepted},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := startBroker(t, c.edit)
			rc := dialRaw(t, b.MQTTAddr())
			if ack := rc.connect(connectPacket("anon", "", "")); ack.ReturnCode != c.want {
				t.Fatalf("CONNACK %d; want %d", ack.ReturnCode, c.want)
			}
		})
	}
}

// Repeated failures from one address are answered more slowly; a good
// login from the same address and a failure from another address are not
// slowed.
func TestAuthFailDelay(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.Auth = newGatedAuth(true); o.AuthFailDelayMax = 2 * time.Second })
	fail := func(rc *rawClient) {
		t.Helper()
		rc.write(func() []byte { p := connectPacket("x", "u", "bad"); return p.AppendTo(nil) }())
	}
	for range failFree {
		rc := dialRaw(t, b.MQTTAddr())
		fail(rc)
		rc.expect(codec.TypeConnack, 5*time.Second) // at once
	}
	held := dialRaw(t, b.MQTTAddr())
	fail(held)
	held.expectNothing(400 * time.Millisecond) // the 4th failure is held back
	// Meanwhile a good login from the same address is not slowed...
	good := dialRaw(t, b.MQTTAddr())
	if ack := good.connect(connectPacket("g", "u", "good")); ack.ReturnCode != 0 {
		t.Fatalf("good login CONNACK %d", ack.ReturnCode)
	}
	// ...nor a failure from another address.
	c2, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).Dial("tcp", b.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	other := wrapRaw(t, c2)
	fail(other)
	other.expect(codec.TypeConnack, 5*time.Second)
	held.ver = codec.V311
	h, body := held.expect(codec.TypeConnack, 5*time.Second)
	var ack codec.Connack
	if err := ack.Decode(codec.V311, h, body); err != nil || ack.ReturnCode != codec.ConnRefusedNotAuthorized {
		t.Fatalf("held refusal: code %d, %v", ack.ReturnCode, err)
	}
	held.expectClosed(5 * time.Second)
	if n := b.Snapshot().AuthDelayed; n != 1 {
		t.Fatalf("delayed refusals %d; want 1", n)
	}
}

// ACLs through a pluggable Authorizer: a denied publish is acknowledged
// and dropped, a subscription through which nothing may be read is
// refused, a broader one delivers only what may be read (live and
// retained), and a will on a denied topic refuses the CONNECT.
func TestACLEnforced(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.Auth = newGatedAuth(true); o.ACL = prefixACL{} })
	admin := dialRaw(t, b.MQTTAddr())
	if ack := admin.connect(connectPacket("alice-1", "alice", "good")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	bob := dialRaw(t, b.MQTTAddr())
	if ack := bob.connect(connectPacket("bob-1", "bob", "good")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	// alice publishes a retained message on her own topic first.
	admin.publish("alice/r", "mine", 1, true, 1)
	admin.expect(codec.TypePuback, 5*time.Second)

	codes := bob.subscribe(1, codec.Subscription{Filter: []byte("#"), QoS: 1},
		codec.Subscription{Filter: []byte("alice/#"), QoS: 1})
	if codes[0] != 1 || codes[1] != codec.ReasonCode(codec.SubackFailure) {
		t.Fatalf("SUBACK %v; want [1 0x80]", codes)
	}
	// bob publishes where he may not: PUBACK, then nothing is delivered.
	bob.publish("alice/x", "forged", 1, false, 2)
	bob.expect(codec.TypePuback, 5*time.Second)
	admin.subscribe(2, codec.Subscription{Filter: []byte("alice/#")})
	admin.expectPublish(5 * time.Second) // its own retained message
	// Live: bob's '#' gets shared/ and bob/ topics, not alice's.
	admin.publish("alice/secret", "no", 0, false, 0)
	admin.publish("shared/news", "yes", 0, false, 0)
	if p := bob.expectPublish(5 * time.Second); string(p.Topic) != "shared/news" {
		t.Fatalf("bob got %q; want shared/news only (retained alice/r and live alice/secret are not his)", p.Topic)
	}
	bob.publish("bob/own", "ok", 0, false, 0)
	if p := bob.expectPublish(5 * time.Second); string(p.Topic) != "bob/own" {
		t.Fatalf("bob got %q; want bob/own", p.Topic)
	}
	if p := admin.expectPublish(5 * time.Second); string(p.Topic) != "alice/secret" {
		t.Fatalf("alice got %q; want alice/secret (bob's forged publish must be dropped)", p.Topic)
	}
	sn := b.Snapshot()
	if sn.ACLDenied["publish"] != 1 || sn.ACLDenied["subscribe"] != 1 || sn.ACLDenied["deliver"] < 2 {
		t.Fatalf("ACL denials %v; want publish 1, subscribe 1, deliver >= 2", sn.ACLDenied)
	}

	// A will on a topic the client may not write refuses the CONNECT.
	w := dialRaw(t, b.MQTTAddr())
	p := connectPacket("bob-2", "bob", "good")
	p.WillFlag, p.WillTopic, p.WillPayload = true, []byte("alice/will"), []byte("x")
	if ack := w.connect(p); ack.ReturnCode != codec.ConnRefusedNotAuthorized {
		t.Fatalf("will on a denied topic: CONNACK %d; want 5", ack.ReturnCode)
	}
}

// HTTP callers: the API key as bearer is the administrator, Basic
// credentials a user checked off the loop (the request is served once the
// verdict is in), and the ACL applies to HTTP publishes and streams.
func TestHTTPBasicAuthAndACL(t *testing.T) {
	g := newGatedAuth(false)
	b := startBroker(t, func(o *Options) {
		o.HTTPAddr = "127.0.0.1:0"
		o.Auth = g
		o.APIKey = "key"
		o.ACL = prefixACL{}
	})
	base := "http://" + b.HTTPAddr()
	do := func(method, path, user, pass, bearer string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader("v"))
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wg sync.WaitGroup
	var held int
	wg.Add(1)
	go func() { defer wg.Done(); held = do("POST", "/publish/carol/t", "carol", "good", "") }()
	waitFor(t, 5*time.Second, "the Basic verification to start", func() bool { return g.calls.Load() == 1 })
	// The loop is not blocked: the administrator is served meanwhile.
	if code := do("GET", "/api/v1/stats", "", "", "key"); code != 200 {
		t.Fatalf("API key stats: %d; want 200", code)
	}
	close(g.gate)
	wg.Wait()
	if held != 202 {
		t.Fatalf("held Basic publish: %d; want 202", held)
	}
	for _, c := range []struct {
		method, path, user, pass, bearer string
		want                             int
	}{
		{"POST", "/publish/carol/t", "carol", "good", "", 202},     // cached now
		{"POST", "/publish/dave/t", "carol", "good", "", 403},      // ACL
		{"POST", "/publish/carol/t", "carol", "bad", "", 401},      // wrong password
		{"POST", "/publish/carol/t", "", "", "", 401},              // anonymous refused
		{"POST", "/publish/carol/t", "", "", "wrong", 401},         // wrong key
		{"POST", "/publish/anything/t", "", "", "key", 202},        // the key may do everything
		{"GET", "/api/v1/clients", "carol", "good", "", 403},       // management needs the key
		{"GET", "/retained/dave/t", "carol", "good", "", 403},      // not readable
		{"GET", "/retained/shared/none", "carol", "good", "", 404}, // readable, absent
	} {
		if got := do(c.method, c.path, c.user, c.pass, c.bearer); got != c.want {
			t.Errorf("%s %s as %q/%q bearer %q: %d; want %d", c.method, c.path, c.user, c.pass, c.bearer, got, c.want)
		}
	}
}

// wrapRaw turns a dialled connection into a rawClient.
func wrapRaw(t testing.TB, c net.Conn) *rawClient {
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
}

// MQTT over WebSocket waits for a slow Authenticator too: the CONNECT and
// a SUBSCRIBE and PUBLISH in the same frame are held until the verdict,
// then handled in order.
func TestAuthOffLoopWebSocket(t *testing.T) {
	g := newGatedAuth(false)
	b := startHTTPBroker(t, func(o *Options) { o.Auth = g })
	w, _ := dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	p := connectPacket("ws-auth", "u", "good")
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("w/#"), QoS: 1}}}
	pub := codec.Publish{Topic: []byte("w/self"), Payload: []byte("hi"), QoS: 1, PacketID: 2}
	raw := pub.AppendTo(sub.AppendTo(p.AppendTo(nil), codec.V311), codec.V311)
	w.frame(true, wsOpBinary, raw)
	waitFor(t, 5*time.Second, "the verification to start", func() bool { return g.calls.Load() == 1 })
	if _, _, err := w.readFrame(100 * time.Millisecond); err == nil {
		t.Fatal("an answer before the verdict")
	}
	close(g.gate)
	want := []codec.Type{codec.TypeConnack, codec.TypeSuback}
	for _, typ := range want {
		if h, _ := w.packet(5 * time.Second); h.Type != typ {
			t.Fatalf("got %v; want %v", h.Type, typ)
		}
	}
	seen := map[codec.Type]bool{}
	for range 2 {
		h, _ := w.packet(5 * time.Second)
		seen[h.Type] = true
	}
	if !seen[codec.TypePuback] || !seen[codec.TypePublish] {
		t.Fatalf("after SUBACK got %v; want PUBACK and the PUBLISH", seen)
	}
}

// Over TLS the held CONNECT's followers wait as plaintext: once the
// verdict is in they are handled without a new read.
func TestAuthOffLoopTLS(t *testing.T) {
	ca := newTestCA(t, "auth-ca")
	g := newGatedAuth(false)
	b := startTLSBroker(t, ca, func(o *Options) { o.Auth = g })
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca))
	p := connectPacket("tls-auth", "u", "good")
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("t/#")}}}
	rc.write(sub.AppendTo(p.AppendTo(nil), codec.V311))
	waitFor(t, 5*time.Second, "the verification to start", func() bool { return g.calls.Load() == 1 })
	rc.expectNothing(100 * time.Millisecond)
	close(g.gate)
	rc.expect(codec.TypeConnack, 5*time.Second)
	rc.expect(codec.TypeSuback, 5*time.Second)
}

// Cache keys keep apart credentials whose bytes concatenate alike, change
// with the generation (a reload), and cost no allocation.
func TestAuthCacheKey(t *testing.T) {
	var a authCache
	a.init()
	var scratch []byte
	k1 := a.keyOf(&scratch, []byte("a\x00b"), []byte("c"))
	k2 := a.keyOf(&scratch, []byte("a"), []byte("b\x00c"))
	if k1 == k2 {
		t.Fatal("(a\\0b, c) and (a, b\\0c) share a cache key")
	}
	if k := a.keyOf(&scratch, []byte("a\x00b"), []byte("c")); k != k1 {
		t.Fatal("the same credentials got another key")
	}
	a.forget()
	if k := a.keyOf(&scratch, []byte("a\x00b"), []byte("c")); k == k1 {
		t.Fatal("a reload kept the old key")
	}
	for _, c := range scratch[:cap(scratch)] {
		if c != 0 {
			t.Fatal("the password is left in the scratch buffer")
		}
	}
	if n := testing.AllocsPerRun(100, func() { a.keyOf(&scratch, []byte("user"), []byte("password")) }); n != 0 {
		t.Fatalf("keyOf: %.1f allocations; want 0", n)
	}
}
