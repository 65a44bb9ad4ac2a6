//go:build !race

package bench

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tinymq/tinymq/codec"
)

// zeroAllocs fails unless f allocates nothing per call once warmed up.
func zeroAllocs(t *testing.T, what string, f func()) {
	t.Helper()
	f() // grow reused destinations first
	if n := testing.AllocsPerRun(200, f); n != 0 {
		t.Fatalf("%s: %.1f allocations; want 0", what, n)
	}
}

// TestAllocsPublisherBatch: encoding a batch of PUBLISHes allocates
// nothing, at 3.1.1 and at 5 with a topic alias and user properties.
func TestAllocsPublisherBatch(t *testing.T) {
	for _, c := range []struct {
		name  string
		v     codec.Version
		props int
		alias bool
	}{
		{"v311", codec.V311, 0, false},
		{"v5", codec.V5, 0, false},
		{"v5/alias/user-props=2", codec.V5, 2, true},
	} {
		for _, qos := range []uint8{0, 1} {
			pb := newPublisher(c.v, 3, []byte("bench/pairs/3"), qos, 64, benchUserProps(c.props), c.alias)
			out := make([]byte, 0, 64*1024)
			zeroAllocs(t, c.name, func() { out = pb.appendBatch(out[:0], 64, time.Now().UnixNano()) })
		}
	}
}

// TestAllocsSubscriberHandle: decoding, checking, tallying and
// acknowledging deliveries allocates nothing, at 3.1.1 and at 5 with topic
// aliases (set and used) and user properties checked.
func TestAllocsSubscriberHandle(t *testing.T) {
	for _, c := range []struct {
		name  string
		v     codec.Version
		props int
		alias bool
	}{
		{"v311", codec.V311, 0, false},
		{"v5", codec.V5, 0, false},
		{"v5/alias/user-props=2", codec.V5, 2, true},
	} {
		topics := [][]byte{[]byte("bench/fanin/0"), []byte("bench/fanin/1")}
		up := benchUserProps(c.props)
		var aliasMax uint16
		if c.alias {
			aliasMax = subTopicAliasMax
		}
		tl := &tally{recv: make([]atomic.Int64, 2), seen: [][]uint64{make([]uint64, 0, 4096), make([]uint64, 0, 4096)},
			maxSeq: make([]int64, 2), hist: hdrhistogram.New(1, 60_000_000, 3)}
		s := newSubscriber(c.v, tl, topics, up, aliasMax)
		// Two publishers' messages as a broker relays them: with aliases
		// the first of each carries the topic and its alias, the rest
		// only the alias.
		var in []byte
		var seqAt []int // offset of each frame's sequence number
		for i := 0; i < 8; i++ {
			p := i % 2
			pb := newPublisher(c.v, p, topics[p], 1, 64, up, false)
			if c.alias {
				pb.p.Props.TopicAlias = uint16(p + 1)
				pb.p.Props.Set(codec.PropTopicAlias)
				if i >= 2 {
					pb.p.Topic = nil
				}
			}
			in = pb.appendBatch(in, 1, time.Now().UnixNano())
			seqAt = append(seqAt, len(in)-64+8)
		}
		out := make([]byte, 0, 4096)
		var seq uint64
		zeroAllocs(t, c.name, func() {
			for _, o := range seqAt { // new messages each run: the tally's new-message path
				binary.BigEndian.PutUint64(in[o:], seq)
				seq++
			}
			var n int
			n, out, _ = s.handle(in, time.Now().UnixNano(), out[:0])
			if n != len(in) || len(out) != 8*4 {
				t.Fatalf("consumed %d of %d, %d bytes of acks", n, len(in), len(out))
			}
		})
		if s.aliasErrors != 0 || s.topicMismatches != 0 || s.propMismatches != 0 || s.propsChecked == 0 && c.props > 0 {
			t.Fatalf("%s: alias errors %d, topic mismatches %d, prop mismatches %d, checked %d", c.name,
				s.aliasErrors, s.topicMismatches, s.propMismatches, s.propsChecked)
		}
		if got := tl.recv[0].Load() + tl.recv[1].Load(); got < 200*4 {
			t.Fatalf("%s: tallied %d new deliveries", c.name, got)
		}
	}
}
