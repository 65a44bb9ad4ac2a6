package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/engine/store"
)

// Lazy in-flight records (--fsync interval and none).
//
// A QoS 1 message sent to an online persistent session used to write its
// message record and in-flight entry at once, and the subscriber's PUBACK
// deleted them a few milliseconds later: three records encoded on the
// loop, decoded and cancelled again in the store's commit window, for a
// message that never needed the disk. Now such an entry is only marked
// lazy and noted on the sending loop; the PUBACK of a lazy entry writes
// nothing, and every lazyDelay the loop writes the entries noted one
// period before that are still in flight (between lazyDelay and
// 2*lazyDelay after they were sent). A session that goes offline writes
// its lazy entries first (persistOffline), a discarded one forgets them
// (persistDiscard), and a clean shutdown writes them all (closeStore).
//
// What it costs: a process crash can lose, beyond the store's window, an
// unacknowledged QoS 1 message in flight to an online subscriber for up to
// 2*lazyDelay; interval's and none's acknowledgements never waited for
// the disk, and the loss stays well inside the interval. --fsync always
// writes at once (its PUBACK promises the subscriber's copy is on disk),
// and so does every mode while the store is failing or behind (the
// publisher's acknowledgement then waits for the records: persist.go).
// QoS 2 deliveries are written at once (their PUBREL state must be).

// lazyDelay is the period of the lazy sweep.
const lazyDelay = 50 * time.Millisecond

// lazyRef names an in-flight entry (session and packet id) that was lazy
// when noted; the sweep writes it if it still is.
type lazyRef struct {
	s  *session
	id uint16
}

// lazyList is a loop's lazy entries: cur noted in this period, prev in
// the last one (written at the next sweep). Touched only on its loop.
type lazyList struct {
	cur, prev []lazyRef
	armed     bool        // timer will run a sweep
	timer     *time.Timer // fires every lazyDelay while entries wait
	run       gnet.Runnable
	mids      map[*message]uint64 // a sweep's store ids, one per message however many sessions it went to
}

// deferInflight marks f, just put in flight to s, lazy instead of writing
// it, when it may be (QoS 1, not --fsync always, the store healthy and
// keeping up, routed on a loop). s.mu held; runs on r's loop.
func (r *router) deferInflight(s *session, f *inflight) bool {
	p := r.b.ps
	l := r.l
	if f.qos != 1 || l == nil || p.always || p.backlog.Load() || p.st.Health() != nil {
		return false
	}
	f.lazy = true
	ll := &l.ps.lazy
	ll.cur = append(ll.cur, lazyRef{s: s, id: f.id})
	if !ll.armed {
		ll.armed = true
		if ll.timer == nil {
			ll.run = gnet.RunnableFunc(func(context.Context) error {
				l.writeLazy(false)
				l.r.finish()
				return nil
			})
			ll.timer = time.AfterFunc(lazyDelay, func() {
				if err := l.el.Execute(context.Background(), ll.run); err != nil {
					// The loop is stopping: closeStore writes what waits.
					return
				}
			})
		} else {
			ll.timer.Reset(lazyDelay)
		}
	}
	return true
}

// writeLazy writes the lazy entries noted one period ago that are still
// lazy (all of them when all is set: shutdown, the loops stopped), and
// re-arms the timer while entries wait. Runs on l (its timer's task), or
// in closeStore once every loop has stopped.
func (l *loop) writeLazy(all bool) {
	ll := &l.ps.lazy
	if ll.mids == nil {
		ll.mids = make(map[*message]uint64)
	}
	l.b.writeLazyRefs(ll.prev, ll.mids)
	ll.prev, ll.cur = ll.cur, ll.prev[:0]
	if all {
		l.b.writeLazyRefs(ll.prev, ll.mids)
		ll.prev = ll.prev[:0]
		if ll.timer != nil {
			ll.timer.Stop()
		}
		ll.armed = false
	} else if ll.armed = len(ll.prev) > 0; ll.armed {
		ll.timer.Reset(lazyDelay)
	}
	clear(ll.mids)
}

// writeLazyRefs writes the entries refs name that are still lazy; mids
// shares one message record among the sessions a message went to. Takes
// each session's mu.
func (b *Broker) writeLazyRefs(refs []lazyRef, mids map[*message]uint64) {
	for i := range refs {
		s := refs[i].s
		s.mu.Lock()
		if s.persisted && s.st != nil {
			for j := range s.st.inflight {
				if f := &s.st.inflight[j]; f.id == refs[i].id && f.lazy {
					b.writeInflightLocked(s, f, mids)
					break
				}
			}
		}
		s.mu.Unlock()
		refs[i] = lazyRef{}
	}
}

// writeLazyLocked writes every lazy entry of s (s.mu held; mids may be
// nil). Any goroutine.
func (b *Broker) writeLazyLocked(s *session, mids map[*message]uint64) {
	if s.st == nil {
		return
	}
	for j := range s.st.inflight {
		if f := &s.st.inflight[j]; f.lazy {
			b.writeInflightLocked(s, f, mids)
		}
	}
}

// writeInflightLocked writes lazy entry f of s with its message record
// (a new one, or the one this sweep already wrote for the message:
// mids). s.mu held.
func (b *Broker) writeInflightLocked(s *session, f *inflight, mids map[*message]uint64) {
	p := b.ps
	bt := p.begin()
	mid, ok := mids[f.m]
	if !ok {
		mid = p.st.NextMessageID()
		sm := storeMessage(f.m)
		bt.PutMessage(mid, &sm)
		if mids != nil {
			mids[f.m] = mid
		}
	}
	f.mid, f.lazy = mid, false
	bt.SetInflightGroup(s.id, f.id, mid, f.qos, f.retain, store.PublishSent, s.tagOf(f.grp))
	p.end(nil)
}

// forgetLazyLocked drops the lazy marks of a discarded session's entries:
// nothing of them may be written after its records were deleted. s.mu
// held.
func (s *session) forgetLazyLocked() {
	if s.st == nil {
		return
	}
	for j := range s.st.inflight {
		s.st.inflight[j].lazy = false
	}
}
