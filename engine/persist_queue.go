package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/engine/store"
)

// Offline queues live in the store, not in memory (docs/durability.md,
// "Memory"). A persistent session's queue is one sequence of positions
// (sessionState.qTail counts them out); every entry is written to the
// store when it is queued (persistQueued). While the session is offline,
// or while its queue still continues in the store, an entry is kept on
// disk only: the queue in memory holds positions up to spill.after, the
// store holds (spill.after, qTail]. When the client is back and the memory
// queue runs dry, its loop asks the store's reader goroutine for the next
// page (Store.RequestQueue) and appends it when it arrives through the
// loop's task queue; once the pages reach qTail the queue is in memory
// again. Positions are contiguous, so "reached qTail" needs no count of
// what the store holds; entries the store skipped (expired, or their
// message missing) are recognised by a short page read when everything up
// to the request was already committed.

// spill is the part of a session's queue that is in the store only.
// Guarded by the session's mu.
type spill struct {
	on     bool
	paging bool   // a page request is out
	after  uint64 // last position in memory (or sent); the store holds (after, qTail]
	groups int    // entries in the store only that record a shared group (an upper bound); shared.go hands them on at the session's end
}

// pageSize is the number of queued messages one page brings back.
const pageSize = 128

// onDisk is the number of queued messages in the store only (an upper
// bound: the store may have dropped expired ones).
func (st *sessionState) onDisk() int {
	if !st.spill.on {
		return 0
	}
	return int(st.qTail - st.spill.after)
}

// spillLocked moves s's memory queue to the store: every entry of a
// persistent session is there already. s.mu held; the session is going
// offline.
func (s *session) spillLocked() {
	st := s.st
	if st == nil || len(st.q) == 0 || st.q[0].pos == 0 {
		return
	}
	if !st.spill.on {
		st.spill = spill{on: true, after: st.q[0].pos - 1}
	} else {
		st.spill.after = st.q[0].pos - 1
	}
	for i := range st.q {
		if st.q[i].grp != 0 {
			st.spill.groups++
		}
	}
	clear(st.q)
	st.dBytes += st.qBytes
	st.q, st.qBytes = nil, 0
}

// wantPageLocked asks s's loop for the next page of a queue that goes on
// in the store; the request is made at the end of the loop's batch
// (persistFlush). s.mu held, s online; runs on s's loop.
func (s *session) wantPageLocked(b *Broker) {
	st := s.st
	if b.ps == nil || st == nil || !st.spill.on || st.spill.paging || s.c == nil {
		return
	}
	if st.onDisk() == 0 {
		st.spill, st.dBytes = spill{}, 0 // everything was paged back
		return
	}
	st.spill.paging = true
	l := s.c.l
	l.ps.pageWant = append(l.ps.pageWant, s)
}

// requestPages sends the page requests this loop's batch wanted. Runs on
// l, after the batch's records were submitted (seq covers them) or, when
// submitted is false, refused by a full writer queue (they are still
// pending, and no page read now can see them).
func (l *loop) requestPages(seq uint64, submitted bool) {
	p := l.b.ps
	// The page will see every entry queued so far. A refused flush
	// returns seq 0, which every Committed() passes: taking that for
	// complete made a short page skip the entries still pending (their
	// messages were acknowledged, and lost).
	committed := submitted && p.st.Committed() >= seq
	for i, s := range l.ps.pageWant {
		l.ps.pageWant[i] = nil
		s.mu.Lock()
		st := s.st
		if st == nil || !st.spill.on || !st.spill.paging {
			s.mu.Unlock()
			continue
		}
		after, tail := st.spill.after, st.qTail
		s.mu.Unlock()
		err := p.st.RequestQueue(s.id, after, pageSize, func(page []store.Queued, err error) {
			// The store's reader goroutine: hand the page to the loop.
			run := gnet.RunnableFunc(func(context.Context) error {
				l.applyPage(s, page, err, after, tail, committed)
				return nil
			})
			if l.el.Execute(context.Background(), run) != nil {
				s.mu.Lock()
				if s.st != nil {
					s.st.spill.paging = false // shutting down
				}
				s.mu.Unlock()
			}
		})
		if err != nil {
			// The reader is busy (or the store closed): asked again when
			// the connection's queue is next drained (the tick's recheck).
			s.mu.Lock()
			st.spill.paging = false
			s.mu.Unlock()
		}
	}
	l.ps.pageWant = l.ps.pageWant[:0]
}

// applyPage appends a page of s's queue read from the store after
// position after, and sends what the in-flight window allows. tail was
// the queue's last position when the page was asked for, complete whether
// every entry up to it was committed then. Runs on l.
func (l *loop) applyPage(s *session, page []store.Queued, err error, after, tail uint64, complete bool) {
	b := l.b
	s.mu.Lock()
	st := s.st
	if st == nil || !st.spill.on || st.spill.after != after {
		s.mu.Unlock()
		return // discarded or paged meanwhile
	}
	st.spill.paging = false
	if err == nil && len(page) == 0 && !(complete && st.qTail == tail) {
		// Nothing new yet: the last entries were not committed when the
		// page was read. The tick's recheck of the connection asks again.
		s.mu.Unlock()
		return
	}
	if err != nil || s.c == nil || s.c.l != l {
		// A read error, or the client left (or moved): its next drain
		// asks again.
		s.mu.Unlock()
		if err != nil && b.logLimiter.allow(b.now.Load()) {
			b.log.Error("store: reading a queue failed", "client", s.id, "err", err.Error())
		}
		return
	}
	for i := range page {
		q := &page[i]
		if q.Pos <= st.spill.after {
			continue
		}
		m := storedMessage(&q.Message)
		st.q = append(st.q, queued{m: m, qos: q.QoS, retain: q.Retain, pos: q.Pos, mid: q.MsgID, sid: subID(s, m.topic),
			grp: s.groupOf(q.Group)})
		if q.Group != 0 {
			st.spill.groups = max(st.spill.groups-1, 0)
		}
		st.qBytes += len(m.payload)
		st.dBytes = max(st.dBytes-len(m.payload), 0)
		st.spill.after = q.Pos
	}
	if len(page) < pageSize && complete && st.qTail == tail {
		// A short page of a store that had everything: the positions left
		// were dropped by the store (expired, message missing).
		st.spill.after = st.qTail
	}
	if st.spill.after >= st.qTail {
		st.spill, st.dBytes = spill{}, 0
	}
	wrote := s.drainLocked(b)
	s.mu.Unlock()
	if wrote {
		l.r.markDirty(s, l)
	}
	l.r.finish()
}
