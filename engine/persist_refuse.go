package engine

import (
	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// Refusing MQTT 5 publishes the failed store cannot keep
// (docs/durability.md "Guarantees while the disk is failing").
//
// While the store has failed (Store.Health is not nil: a commit or sync
// failed and the writer is retrying; a writer that is merely behind does
// not count), a QoS 1/2 PUBLISH from an MQTT 5 client that would have to
// be stored (it is retained, or a persistent session it matches gets it at
// QoS 1/2) is refused: nothing of it is kept or routed, and PUBACK/PUBREC
// carries 0x97 Quota exceeded when the disk is full (ENOSPC, EDQUOT) or
// 0x80 Unspecified error for any other I/O error. The publisher knows at
// once that the broker did not take the message and keeps it. A 3.x
// client has no way to hear a refusal: its PUBLISH is routed as usual and
// its acknowledgement held until the store works again (persist.go). A
// PUBLISH that needs no record (clean-session subscribers only) and every
// QoS 0 PUBLISH are routed as usual.

// storeRefusal is the reason code refusing a v5 client's QoS 1/2 PUBLISH
// because the store has failed, or 0 to take it. Before prepare (prepared
// false) it refuses a retained PUBLISH, which writes in prepare; after it,
// one whose matches include a persistent session that would store it, and
// then it drops what prepare made current. Runs on l.
func (l *loop) storeRefusal(retain, prepared bool) codec.ReasonCode {
	p := l.b.ps
	if p == nil {
		return 0
	}
	err := p.st.Health()
	if err == nil {
		return 0
	}
	if !prepared && !retain {
		return 0
	}
	if prepared && !l.r.wouldStore() {
		return 0
	}
	if prepared {
		l.r.dropPrepared()
	}
	p.refusedPub.Add(1)
	l.ps.wrote = false // nothing of it is waiting for the store: the refusal goes out now
	if store.NoSpace(err) {
		return codec.QuotaExceeded
	}
	return codec.UnspecifiedError
}

// wouldStore reports whether routing the prepared PUBLISH would write a
// store record: a persistent session among the matches that gets it at
// QoS 1/2 (or queues QoS 0 with --queue-qos0). Runs on r's loop; takes
// each matched session's lock.
func (r *router) wouldStore() bool {
	for i := range r.matches {
		sub := &r.matches[i]
		s := sub.Key
		if sub.Opts&codec.SubOptNoLocal != 0 && s == r.cur.from {
			continue
		}
		q := min(r.cur.qos, sub.QoS)
		s.mu.Lock()
		stores := s.persisted && !s.dead && !s.sse && (q > 0 || (s.c == nil && r.b.opts.QueueQoS0))
		s.mu.Unlock()
		if stores {
			return true
		}
	}
	return false
}

// dropPrepared forgets the PUBLISH prepare made current without routing
// it (route's cleanup, with no delivery). Runs on r's loop.
func (r *router) dropPrepared() {
	for i := range r.matches {
		r.matches[i].Key = nil
	}
	r.matches = r.matches[:0]
	r.resetEncodings()
}
