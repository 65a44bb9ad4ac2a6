package engine

// Shared subscriptions ($share/{group}/{filter}): which member of a group
// gets a message, and where a member's messages go when its session ends.
// The groups themselves live in the topic tree; this file is the engine's
// side of its Chooser hook. docs/shared.md describes the behaviour.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
	"github.com/tinymq/tinymq/topic"
)

// Options.SharedStrategy values.
const (
	SharedRoundRobin  = "round_robin"  // the next usable member in turn (default)
	SharedRandom      = "random"       // a usable member at random
	SharedLeastLoaded = "least_loaded" // the usable member with the fewest messages in flight and queued
)

// sharedStrategy is Options.SharedStrategy parsed.
type sharedStrategy uint8

const (
	strategyRoundRobin sharedStrategy = iota
	strategyRandom
	strategyLeastLoaded
)

// parseSharedStrategy maps an Options.SharedStrategy ("" is round_robin).
func parseSharedStrategy(s string) (sharedStrategy, error) {
	switch s {
	case "", SharedRoundRobin:
		return strategyRoundRobin, nil
	case SharedRandom:
		return strategyRandom, nil
	case SharedLeastLoaded:
		return strategyLeastLoaded, nil
	}
	return 0, fmt.Errorf("engine: SharedStrategy %q is not %s, %s or %s", s, SharedRoundRobin, SharedRandom, SharedLeastLoaded)
}

// chooseShared is the subscription tree's Chooser: it picks the member of
// a shared group that gets a message. Members that cannot take one now
// (offline, discarded, queue full, outbound blocked) are passed over; when
// none can, it returns -1 and the tree takes the round-robin pick, which
// queues the message (an offline persistent member) or drops and counts
// it (a full one). Runs wherever Match runs (any loop, the $SYS
// goroutine), under the tree's read lock; it takes each member's
// session.mu in turn, never two at once.
func (b *Broker) chooseShared(members []topic.Sub[*session], rr uint32) int {
	n := uint32(len(members))
	var start uint32
	switch b.sharedStrategy {
	case strategyLeastLoaded:
		best, bestLoad := -1, 0
		for k := range n {
			i := int((rr + k) % n) // ties go round-robin
			if load, ok := b.memberLoad(members[i].Key); ok && (best < 0 || load < bestLoad) {
				best, bestLoad = i, load
				if load == 0 {
					break
				}
			}
		}
		return best
	case strategyRandom:
		start = rand.Uint32N(n)
	default:
		start = rr % n
	}
	for k := range n {
		i := int((start + k) % n)
		if _, ok := b.memberLoad(members[i].Key); ok {
			return i
		}
	}
	return -1
}

// memberLoad reports whether s can take a message now and, if so, how many
// it holds (in flight and queued). Any goroutine; takes s.mu.
func (b *Broker) memberLoad(s *session) (load int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.c == nil || s.blockedLocked(b.opts.MaxOutboundBytes) {
		return 0, false
	}
	if st := s.st; st != nil {
		if len(st.q)+st.onDisk() >= b.opts.MaxQueuedMsgs || st.qBytes+st.dBytes >= b.opts.MaxQueuedBytes {
			return 0, false
		}
		load = len(st.q) + len(st.inflight)
	}
	return load, true
}

// sharedMsg is a QoS 1/2 message a shared-group member held (in flight or
// queued) when its session ended, on its way to another member of the
// group.
type sharedMsg struct {
	m      *message
	grp    topic.GroupID
	qos    uint8 // as it was delivered to the member
	retain bool
}

// takeSharedLocked returns the QoS 1/2 messages s holds that came through
// a shared group, except QoS 2 ones past PUBREC (the client has them).
// Called with s.mu held, just before the session's messages are cleared;
// allocates only when there are some.
func (s *session) takeSharedLocked() []sharedMsg {
	st := s.st
	if st == nil {
		return nil
	}
	var out []sharedMsg
	for _, f := range st.inflight {
		if f.grp != 0 && !f.rel {
			out = append(out, sharedMsg{m: f.m, grp: f.grp, qos: f.qos, retain: f.retain})
		}
	}
	for _, e := range st.q {
		if e.grp != 0 && e.qos > 0 {
			out = append(out, sharedMsg{m: e.m, grp: e.grp, qos: e.qos, retain: e.retain})
		}
	}
	return out
}

// sessionEnd carries the messages an ended member held in the store only
// (its queue past what memory held, persist_queue.go) to its groups'
// other members. The store reads them where it deletes the session
// (persistEnd); they are handed on once that read is done and the
// session's subscriptions are out of the tree, whichever comes last, so
// the ended member is never picked for them.
type sessionEnd struct {
	groups []tagGroup // the session's shared subscriptions, tag to group
	msgs   []sharedMsg
	wait   atomic.Int32 // 2: the store's read and the session leaving the tree
}

// tagGroup maps a stored group tag to the group it stands for now.
type tagGroup struct {
	tag uint32
	grp topic.GroupID
}

// taken receives the entries the store read (persistEnd). One whose
// group the session had left is dropped and counted; QoS 0 ones are not
// moved. Store writer
// goroutine; never blocks.
func (e *sessionEnd) taken(b *Broker, q []store.Queued) {
	for i := range q {
		x := &q[i]
		var grp topic.GroupID
		for _, g := range e.groups {
			if g.tag == x.Group {
				grp = g.grp
				break
			}
		}
		if x.QoS == 0 {
			continue // at most once: not moved, as from memory (takeSharedLocked)
		}
		if grp == 0 {
			b.sysStats.dropped.Add(1)
			continue
		}
		e.msgs = append(e.msgs, sharedMsg{m: storedMessage(&x.Message), grp: grp, qos: x.QoS, retain: x.Retain})
	}
	e.left(b)
}

// left counts one of the two things e waits for; the last hands the
// messages to a loop's router. Any goroutine.
func (e *sessionEnd) left(b *Broker) {
	if e == nil || e.wait.Add(-1) != 0 {
		return
	}
	b.redistributeAnywhere(e.msgs)
}

// redistribute hands the messages of a member whose session ended to l's
// router, which sends each to another member of its group at the end of
// the batch (router.finish). The member's subscriptions must already be
// out of the tree, so it is not picked again. Runs on l.
func (l *loop) redistribute(msgs []sharedMsg) {
	l.r.shared = append(l.r.shared, msgs...)
}

// redistributeAnywhere is redistribute from outside the loops (the expiry
// sweep): the messages go to a loop's router through Execute. Any
// goroutine.
func (b *Broker) redistributeAnywhere(msgs []sharedMsg) {
	if len(msgs) == 0 {
		return
	}
	ls := b.allLoops()
	if len(ls) == 0 {
		b.orphans.reroute(b, msgs)
		return
	}
	l := ls[rand.IntN(len(ls))]
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		l.redistribute(msgs)
		l.r.finish()
		return nil
	}))
	if err != nil { // shutting down
		b.sysStats.dropped.Add(uint64(len(msgs)))
	}
}

// orphanRouter reroutes ended members' messages before any loop runs (a
// restart that no client has connected to yet: every session is offline,
// so each message is queued for the member picked). Guarded by its mu.
type orphanRouter struct {
	mu sync.Mutex
	r  *router // made on first use; not a loop's
}

// reroute hands msgs to their groups as rerouteShared does and submits
// the records. Any goroutine (the ticker's expiry sweep, the store's
// writer); no I/O.
func (o *orphanRouter) reroute(b *Broker, msgs []sharedMsg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.r == nil {
		o.r = newRouter(b, nil, &b.sysStats)
	}
	o.r.shared = append(o.r.shared, msgs...)
	o.r.rerouteShared()
	o.r.finish()
}

// rerouteShared delivers the messages waiting in r.shared, each to a
// member of its group picked as for a new message (the chooser skips
// members that cannot take it). A message whose group has no member left
// is dropped and counted. The delivery is a new one: a new packet id,
// DUP clear. Runs on r's loop (from finish).
func (r *router) rerouteShared() {
	for i := 0; i < len(r.shared); i++ { // a delivery may close a connection and add more
		x := r.shared[i]
		r.shared[i] = sharedMsg{}
		sub, ok := r.b.subs.PickFrom(x.grp)
		if !ok {
			r.stats.dropped.Add(1)
			continue
		}
		ret := x.retain && sub.Opts&codec.SubOptRetainAsPublished != 0
		r.grp, r.rerouting = x.grp, true
		r.deliverMessage(sub.Key, x.m, min(x.qos, sub.QoS), ret, sub.ID)
		r.grp, r.rerouting = 0, false
	}
	r.shared = r.shared[:0]
}

// deadShared is deliver's answer to a shared-group pick whose session was
// discarded between the pick and the delivery: a QoS 1/2 message goes back
// to the group (once; a second miss drops and counts it). Runs on r's
// loop.
func (r *router) deadShared(qos uint8, retainFlag bool) {
	if r.grp == 0 || qos == 0 || r.l == nil || r.rerouting {
		if r.rerouting {
			r.stats.dropped.Add(1)
		}
		return
	}
	r.shared = append(r.shared, sharedMsg{m: r.owned(), grp: r.grp, qos: qos, retain: retainFlag})
}
