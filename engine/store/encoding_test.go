package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestMessageEncodingRoundTripAndRefusal(t *testing.T) {
	for _, m := range []Message{
		{Topic: []byte("a"), Payload: []byte("p"), QoS: 2, Retain: true, ContentType: []byte("ct"), Props: []byte{9}, Expiry: -5},
		{Topic: []byte("b"), Payload: []byte{}},
	} {
		v := appendMessage(nil, &m)
		var got Message
		if err := decodeMessage(v, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cloneMessage(got), cloneMessage(m)) {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
		bad := append([]byte(nil), v...)
		bad[0] = valueVersion + 1
		if err := decodeMessage(bad, &got); !errors.Is(err, errCorrupt) {
			t.Fatalf("unknown value version accepted: %v", err)
		}
		if err := decodeMessage(v[:3], &got); !errors.Is(err, errCorrupt) && len(m.Topic) > 0 {
			t.Fatalf("truncated value accepted: %+v %v", got, err)
		}
	}
	var h SessionInfo
	if err := decodeHeader([]byte{valueVersion + 1, 4, 0, 0}, &h); !errors.Is(err, errCorrupt) {
		t.Fatalf("header of unknown version accepted: %v", err)
	}
}

// Close commits and syncs what Submit accepted, in interval mode too, and
// posts it durable.
func TestCloseFlushesQueued(t *testing.T) {
	dir := t.TempDir()
	var durable uint64
	s := openT(t, Options{Dir: dir, Fsync: FsyncInterval, Interval: time.Hour, OnDurable: func(n uint64) { durable = n }})
	var last uint64
	for i := 0; i < 100; i++ {
		b := NewBatch()
		b.SetRetained(&Message{Topic: []byte{'t', byte(i)}, Payload: []byte("v")})
		last = submitRetry(s, b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if durable != last { // Close waited for the writer: no race on durable
		t.Fatalf("durable %d after Close, want %d", durable, last)
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	if _, st := loadAll(t, s); st.Retained != 100 {
		t.Fatalf("%d retained after Close and reopen, want 100", st.Retained)
	}
}
