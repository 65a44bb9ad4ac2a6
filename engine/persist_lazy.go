package engine

import (
	"context"
	"sync/atomic"
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
// the disk, and the loss stays well inside the interval. Every mode
// writes at once while the store is failing or behind (the publisher's
// acknowledgement then waits for the records: persist.go), and QoS 2
// deliveries are written at once (their PUBREL state must be).
//
// --fsync always promises that what a PUBACK or PUBREC acknowledged
// survives a crash. A copy in flight to an online subscriber is safe
// once it is on disk, or once its subscriber acknowledged it (it was
// delivered: nothing is left to lose). So the copies of a PUBLISH routed
// between ackHold and ackDurable are lazy too, with the sweep period
// lazyDelayAlways, and the publisher's held acknowledgement carries a
// lazyPend that counts them: it is released once every copy was either
// acknowledged by its subscriber or written by the sweep (or at the
// session's disconnect) and that write is durable, and once the
// PUBLISH's other records (offline queues, retained) are durable, as
// before. A subscriber that keeps up then costs the disk nothing, and the
// publisher hears back after its subscribers did instead of after an
// fsync; one that does not keeps the acknowledgement for up to
// 2*lazyDelayAlways plus a sync longer than before.

// lazyDelay is the period of the lazy sweep (interval, none);
// lazyDelayAlways with --fsync always, where the publisher waits.
const (
	lazyDelay       = 50 * time.Millisecond
	lazyDelayAlways = 2 * time.Millisecond
)

// lazyPend gates a held acknowledgement (--fsync always) on the lazy
// copies of its PUBLISH: n copies are neither acknowledged by their
// subscriber nor written, and the ones written are in store batches up to
// seq. Any goroutine.
type lazyPend struct {
	n   atomic.Int32
	seq atomic.Uint64
	l   *loop // the publisher's loop, woken when n reaches 0
}

// settled reports whether the copies p counts are safe with durable up
// to d (a nil p counts none). Runs on p.l.
func (p *lazyPend) settled(d uint64) bool {
	return p == nil || (p.n.Load() == 0 && p.seq.Load() <= d)
}

// written notes that one copy is in store batch seq (or an earlier one).
func (p *lazyPend) written(seq uint64, cur *loop) {
	for {
		old := p.seq.Load()
		if seq <= old || p.seq.CompareAndSwap(old, seq) {
			break
		}
	}
	p.done(cur)
}

// done takes one copy off the count; at 0 the publisher's loop looks at
// its held acknowledgements again: at its next persistFlush when cur, the
// loop running the caller (nil: not known), is that loop, else through a
// task posted to it. Any goroutine.
func (p *lazyPend) done(cur *loop) {
	if p.n.Add(-1) != 0 {
		return
	}
	l := p.l
	if cur == l {
		l.ps.lazy.recheck = true
		return
	}
	l.wakeHeld()
}

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

	// --fsync always (persist.go: ackHold, ackDurable).
	gate    bool        // a PUBLISH's acknowledgement is being decided: its copies may be lazy
	pend    *lazyPend   // that PUBLISH's lazy copies (nil: none yet)
	recheck bool        // a pend reached 0 on this loop: releaseAcks at the next persistFlush
	written []*lazyPend // pends of copies the sweep wrote, for the batch's sequence number
}

// deferInflight marks f, just put in flight to s, lazy instead of writing
// it, when it may be (QoS 1, not --fsync always, the store healthy and
// keeping up, routed on a loop). s.mu held; runs on r's loop.
func (r *router) deferInflight(s *session, f *inflight) bool {
	p := r.b.ps
	l := r.l
	if f.qos != 1 || l == nil || (p.always && !l.ps.lazy.gate) || p.backlog.Load() || p.st.Health() != nil {
		return false
	}
	f.lazy = true
	ll := &l.ps.lazy
	if p.always {
		if ll.pend == nil {
			l.initDurRun() // done may post it from another loop once the pend escapes
			ll.pend = &lazyPend{l: l}
		}
		ll.pend.n.Add(1)
		f.pend = ll.pend
	}
	ll.cur = append(ll.cur, lazyRef{s: s, id: f.id})
	if !ll.armed {
		ll.armed = true
		if ll.timer == nil {
			ll.run = gnet.RunnableFunc(func(context.Context) error {
				l.writeLazy(false)
				l.r.finish()
				return nil
			})
			ll.timer = time.AfterFunc(l.lazyPeriod(), func() {
				if err := l.el.Execute(context.Background(), ll.run); err != nil {
					// The loop is stopping: closeStore writes what waits.
					return
				}
			})
		} else {
			ll.timer.Reset(l.lazyPeriod())
		}
	}
	return true
}

// lazyPeriod is the sweep period of l's broker. Any goroutine.
func (l *loop) lazyPeriod() time.Duration {
	if l.b.ps.always {
		return lazyDelayAlways
	}
	return lazyDelay
}

// wakeHeld has l look at its held acknowledgements again, through the
// task onDurable posts (one on its way at a time). Any goroutine.
func (l *loop) wakeHeld() {
	ps := &l.ps
	if ps.durPending.CompareAndSwap(false, true) { // durRun set: deferInflight
		if err := l.el.Execute(context.Background(), ps.durRun); err != nil {
			ps.durPending.Store(false) // shutting down
		}
	}
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
	ll.written = l.b.writeLazyRefs(ll.prev, ll.mids, ll.written)
	ll.prev, ll.cur = ll.cur, ll.prev[:0]
	if all {
		ll.written = l.b.writeLazyRefs(ll.prev, ll.mids, ll.written)
		ll.prev = ll.prev[:0]
		if ll.timer != nil {
			ll.timer.Stop()
		}
		ll.armed = false
	} else if ll.armed = len(ll.prev) > 0; ll.armed {
		ll.timer.Reset(l.lazyPeriod())
	}
	clear(ll.mids)
	if len(ll.written) > 0 {
		seq := l.b.ps.flushSeq()
		cur := l // the timer's task: its finish runs persistFlush
		if all {
			cur = nil
		}
		for i, pd := range ll.written {
			pd.written(seq, cur)
			ll.written[i] = nil
		}
		ll.written = ll.written[:0]
	}
}

// flushSeq submits the pending batch and returns a sequence number whose
// durability covers every record appended before: the batch's, or, when
// the store refused it (it stays pending, and only this persister
// submits), the number its next accepted submission gets. Any goroutine.
func (p *persister) flushSeq() uint64 {
	seq, ok := p.flush()
	if !ok {
		p.mu.Lock()
		seq = p.lastSeq + 1
		p.mu.Unlock()
	}
	return seq
}

// writeLazyRefs writes the entries refs name that are still lazy; mids
// shares one message record among the sessions a message went to. It
// appends to pends the lazyPends of what it wrote (--fsync always), which
// wait for the sequence number of the batch. Takes each session's mu.
func (b *Broker) writeLazyRefs(refs []lazyRef, mids map[*message]uint64, pends []*lazyPend) []*lazyPend {
	for i := range refs {
		s := refs[i].s
		s.mu.Lock()
		if s.persisted && s.st != nil {
			for j := range s.st.inflight {
				if f := &s.st.inflight[j]; f.id == refs[i].id && f.lazy {
					if pd := b.writeInflightLocked(s, f, mids); pd != nil {
						pends = append(pends, pd)
					}
					break
				}
			}
		}
		s.mu.Unlock()
		refs[i] = lazyRef{}
	}
	return pends
}

// writeLazyLocked writes every lazy entry of s (s.mu held; mids may be
// nil). Any goroutine.
func (b *Broker) writeLazyLocked(s *session, mids map[*message]uint64) {
	if s.st == nil {
		return
	}
	var pends []*lazyPend
	for j := range s.st.inflight {
		if f := &s.st.inflight[j]; f.lazy {
			if pd := b.writeInflightLocked(s, f, mids); pd != nil {
				pends = append(pends, pd)
			}
		}
	}
	if len(pends) > 0 {
		seq := b.ps.flushSeq()
		for _, pd := range pends {
			pd.written(seq, nil)
		}
	}
}

// writeInflightLocked writes lazy entry f of s with its message record
// (a new one, or the one this sweep already wrote for the message:
// mids), and returns the lazyPend the copy counted in (nil: none), which
// the caller settles with the batch's sequence number. s.mu held.
func (b *Broker) writeInflightLocked(s *session, f *inflight, mids map[*message]uint64) *lazyPend {
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
	pd := f.pend
	f.pend = nil
	return pd
}

// forgetLazyLocked drops the lazy marks of a discarded session's entries:
// nothing of them may be written after its records were deleted. s.mu
// held.
func (s *session) forgetLazyLocked() {
	if s.st == nil {
		return
	}
	for j := range s.st.inflight {
		f := &s.st.inflight[j]
		if f.lazy && f.pend != nil {
			f.pend.done(nil) // the session is gone: nothing of it to wait for
		}
		f.lazy, f.pend = false, nil
	}
}
