package engine

import (
	"io"
	"log/slog"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

// FuzzEngineTraffic feeds arbitrary bytes to an in-process broker's packet
// handlers, through OnTraffic on a fake connection, in two reads split at
// a fuzzed index, optionally after a valid CONNECT; a second fake client is
// subscribed to everything. Properties:
//   - no panic;
//   - the engine never peeks or discards more than is buffered;
//   - the connection either survives (still open) or is closed with a
//     recorded reason (a close cause, or a DISCONNECT);
//   - everything the broker writes to either client is well-formed MQTT;
//   - once every connection is closed, only persistent sessions remain, and
//     the subscription tree holds exactly their subscriptions.
//
// Run: go test -run '^$' -fuzz FuzzEngineTraffic -fuzztime 2m -parallel 1 ./engine
func FuzzEngineTraffic(f *testing.F) {
	for _, v := range codectest.Vectors {
		f.Add(v.Raw, true, uint16(len(v.Raw)/2), false)
		if v.Raw[0]>>4 == byte(codec.TypeConnect) {
			f.Add(v.Raw, false, uint16(1), false)
		}
	}
	for _, v := range codectest.BadVectors {
		f.Add(v.Raw, v.Raw[0]>>4 != byte(codec.TypeConnect), uint16(len(v.Raw)-1), false)
	}
	// A session of packets: subscribe, publish at each QoS, acks, unsubscribe,
	// ping, disconnect.
	var seq []byte
	seq = (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("a/#"), QoS: 2}, {Filter: []byte("$share/g/a/+"), QoS: 1}}}).AppendTo(seq, codec.V311)
	for q := uint8(0); q < 3; q++ {
		seq = (&codec.Publish{Topic: []byte("a/b"), Payload: []byte("x"), QoS: q, PacketID: uint16(q), Retain: q == 1}).AppendTo(seq, codec.V311)
	}
	seq = codec.AppendAck(seq, codec.TypePubrel, 2)
	seq = codec.AppendAck(seq, codec.TypePuback, 1)
	seq = (&codec.Unsubscribe{PacketID: 3, Filters: [][]byte{[]byte("a/#")}}).AppendTo(seq, codec.V311)
	seq = codec.AppendPingreq(seq)
	f.Add(seq, true, uint16(7), false)
	f.Add(append(seq, 0xe0, 0), true, uint16(len(seq)), false)
	persistent := (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, ClientID: []byte("p"), WillFlag: true,
		WillTopic: []byte("w"), WillPayload: []byte("bye"), WillQoS: 1}).AppendTo(nil)
	f.Add(append(persistent, seq...), false, uint16(3), false)
	f.Add((&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil), false, uint16(0), false) // takes over the subscriber

	// MQTT 5 seeds: the same session at 5.0, and properties, aliases and
	// AUTH.
	var seq5 []byte
	seq5 = (&codec.Subscribe{PacketID: 1, Props: codec.Properties{SubscriptionIDs: []uint32{9}},
		Subs: []codec.Subscription{{Filter: []byte("a/#"), QoS: 2, RetainAsPublished: true, RetainHandling: 1}, {Filter: []byte("$share/g/a/+"), QoS: 1}}}).AppendTo(seq5, codec.V5)
	for q := uint8(0); q < 3; q++ {
		p := codec.Publish{Topic: []byte("a/b"), Payload: []byte("x"), QoS: q, PacketID: uint16(q), Retain: q == 1}
		p.Props.TopicAlias, p.Props.MessageExpiry, p.Props.ContentType = 1, 5, []byte("t")
		p.Props.User = []codec.UserProperty{{Key: []byte("k"), Value: []byte("v")}}
		p.Props.Set(codec.PropTopicAlias)
		p.Props.Set(codec.PropMessageExpiry)
		p.Props.Set(codec.PropContentType)
		seq5 = p.AppendTo(seq5, codec.V5)
	}
	seq5 = (&codec.Publish{Topic: nil, Payload: []byte("y"), Props: codec.Properties{Present: 1 << codec.PropTopicAlias, TopicAlias: 1}}).AppendTo(seq5, codec.V5)
	seq5 = codec.AppendAck(seq5, codec.TypePubrel, 2)
	seq5 = codec.AppendAck(seq5, codec.TypePubrel, 9)
	seq5 = (&codec.Unsubscribe{PacketID: 3, Filters: [][]byte{[]byte("a/#"), []byte("zz")}}).AppendTo(seq5, codec.V5)
	seq5 = (&codec.Auth{Reason: codec.ReAuthenticate}).AppendTo(seq5, codec.V5)
	f.Add(seq5, true, uint16(9), true)
	d := codec.Disconnect{Reason: codec.DisconnectWithWill}
	d.Props.SessionExpiry = 10
	d.Props.Set(codec.PropSessionExpiry)
	will5 := codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V5, ClientID: []byte("p5"), WillFlag: true,
		WillTopic: []byte("w"), WillPayload: []byte("bye"), WillQoS: 1}
	will5.Props.SessionExpiry = 30
	will5.Props.Set(codec.PropSessionExpiry)
	will5.WillProps.WillDelay = 1
	will5.WillProps.Set(codec.PropWillDelay)
	f.Add(d.AppendTo(append(will5.AppendTo(nil), seq5...), codec.V5), false, uint16(5), true)
	scram := codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V5, CleanStart: true, ClientID: []byte("a5")}
	scram.Props.AuthMethod, scram.Props.AuthData = []byte("SCRAM-SHA-512"), []byte("n,,n=u,r=abc")
	scram.Props.Set(codec.PropAuthMethod)
	scram.Props.Set(codec.PropAuthData)
	f.Add(scram.AppendTo(nil), false, uint16(4), true)

	f.Fuzz(func(t *testing.T, data []byte, withConnect bool, split uint16, v5 bool) {
		ver := codec.V311
		if v5 {
			ver = codec.V5
		}
		o := DefaultOptions()
		o.MQTTAddr = "127.0.0.1:0"
		o.HTTPAddr = ""
		o.MaxPacketSize = 4096
		o.MaxInflight = 4
		o.MaxQueuedMsgs = 8
		o.MaxSubsPerConn = 8
		o.MaxTopicLevels = 8
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		el := fakeLoop{}
		sub := &fakeConn{el: el, keepOut: true}
		c := &fakeConn{el: el, keepOut: true}
		fakes := []*fakeConn{sub, c}
		closed := map[*fakeConn]bool{}
		// closeRequested does what gnet does after an engine-requested
		// Close: OnClose on the loop.
		closeRequested := func() {
			for _, fc := range fakes {
				if fc.closeReq && !closed[fc] {
					closed[fc] = true
					b.OnClose(fc, nil)
				}
			}
		}
		traffic := func(fc *fakeConn, chunk []byte) {
			if closed[fc] {
				return
			}
			fc.in = append(fc.in, chunk...)
			if a := b.OnTraffic(fc); a == gnet.Close {
				closed[fc] = true
				b.OnClose(fc, nil)
			}
			if fc.overDisc || fc.overPeek {
				t.Fatalf("peeked or discarded past the buffer (%d buffered)", len(fc.in))
			}
			closeRequested()
		}
		for _, fc := range fakes {
			if _, a := b.OnOpen(fc); a != gnet.None {
				t.Fatal("OnOpen refused")
			}
		}
		traffic(sub, (&codec.Connect{ProtocolName: []byte("MQTT"), Version: ver, CleanStart: true, ClientID: []byte("sub")}).AppendTo(nil))
		traffic(sub, (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("#"), QoS: 2}, {Filter: []byte("$share/g/#"), QoS: 1}}}).AppendTo(nil, ver))
		if closed[sub] || b.Stats().Subscriptions != 2 {
			t.Fatal("subscriber setup failed")
		}

		input := data
		if withConnect {
			input = append((&codec.Connect{ProtocolName: []byte("MQTT"), Version: ver, CleanStart: true, KeepAlive: 30, ClientID: []byte("fz")}).AppendTo(nil), data...)
		}
		at := int(split) % (len(input) + 1)
		traffic(c, input[:at])
		traffic(c, input[at:])

		cc := c.ctx.(*conn)
		if closed[c] {
			if cc.open {
				t.Fatal("closed connection still marked open")
			}
			if cc.closeReason == closeNone && !cc.cleanDisconnect {
				t.Fatal("connection closed without a recorded reason")
			}
		} else if !cc.open {
			t.Fatal("open connection marked closed")
		}
		for i, fc := range fakes {
			v := codec.V311
			if cc, ok := fc.ctx.(*conn); ok && cc.version == codec.V5 {
				v = codec.V5
			}
			checkWellFormed(t, i, fc.out, v)
		}

		// Close everything; only persistent sessions may remain, with
		// exactly their subscriptions in the tree.
		for _, fc := range fakes {
			if !closed[fc] {
				closed[fc] = true
				b.OnClose(fc, nil)
			}
		}
		subs := 0
		b.sessMu.Lock()
		b.sessions.Range(func(s *session) bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.clean || s.c != nil {
				t.Errorf("session %q (clean %v, online %v) left after every connection closed", s.id, s.clean, s.c != nil)
			}
			subs += len(s.subs)
			return true
		})
		b.sessMu.Unlock()
		if n := b.subs.Count(); n != subs {
			t.Fatalf("the tree holds %d subscriptions; the remaining sessions %d", n, subs)
		}
		if st := b.Stats(); st.Connected != 0 {
			t.Fatalf("%d connections counted after all closed", st.Connected)
		}
	})
}

// checkWellFormed fails unless out is a sequence of whole, decodable
// server-to-client MQTT packets at protocol level v.
func checkWellFormed(t *testing.T, who int, out []byte, v codec.Version) {
	t.Helper()
	for len(out) > 0 {
		h, n, err := codec.ReadFrame(out, 0)
		if err != nil || n == 0 {
			t.Fatalf("client %d: broker wrote a bad frame (% x...): %v", who, out[:min(len(out), 16)], err)
		}
		body := out[h.HeaderLen:n]
		var derr error
		switch h.Type {
		case codec.TypeConnack:
			var a codec.Connack
			if derr = a.Decode(codec.V311, h, body); derr != nil {
				derr = a.Decode(codec.V5, h, body) // the refusal of a 5.0 CONNECT is in 5.0's format
			}
		case codec.TypePublish:
			var p codec.Publish
			derr = p.Decode(v, h, body)
		case codec.TypePuback, codec.TypePubrec, codec.TypePubrel, codec.TypePubcomp:
			var a codec.Ack
			derr = a.Decode(v, h, body)
		case codec.TypeSuback:
			var a codec.Suback
			derr = a.Decode(v, h, body)
		case codec.TypeUnsuback:
			var a codec.Unsuback
			derr = a.Decode(v, h, body)
		case codec.TypePingresp:
		case codec.TypeDisconnect, codec.TypeAuth:
			if v != codec.V5 {
				t.Fatalf("client %d: broker sent %v to a 3.x client", who, h.Type)
			}
			var d codec.Disconnect
			derr = d.Decode(v, h, body)
			if h.Type == codec.TypeAuth {
				var a codec.Auth
				derr = a.Decode(v, h, body)
			}
		default:
			t.Fatalf("client %d: broker sent %v", who, h.Type)
		}
		if derr != nil {
			t.Fatalf("client %d: broker's %v does not decode: %v", who, h.Type, derr)
		}
		out = out[n:]
	}
}
