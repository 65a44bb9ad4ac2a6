package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// Durable state: the engine's side of engine/store (docs/durability.md;
// docs/store.md "What the engine calls, and when" is the plan followed).
//
// Memory stays the source of truth for routing. Every change to a retained
// message or to a persistent session (clean session 0, or a v5 Session
// Expiry Interval above 0) is also appended as a store record to one
// pending store.Batch shared by every loop, in the order memory saw it: the
// record is appended while the lock that guards the change (session.mu) is
// held, and persister.mu is a leaf lock under it. So the records of one
// session keep their order whichever loop wrote them, and a Dequeue never
// overtakes its Enqueue (docs/store.md "Order across loops"). The batch is
// submitted at the end of each unit of loop work (router.finish) and on
// every tick; Submit never blocks. Clean sessions write nothing.
//
// With --fsync always, the PUBACK, PUBREC or PUBCOMP of a QoS 1/2
// exchange that wrote records waits on its loop (loopPersist.held) until
// the store posts that the batch holding them is durable (OnDurable, on
// the store's writer goroutine, wakes the loop). So do, for QoS 2 exactly
// once across a crash (docs/durability.md), the frames for a persistent
// session that carry a QoS 2 PUBLISH or a PUBREL: they leave only once
// the records written before them (the message, its in-flight state, the
// publisher's inbound id) are durable, so that whatever the client saw,
// the broker still knows after a restart. Once anything of a connection
// is held, everything later for it waits behind, so every frame keeps its
// order (MQTT 3.1.1 section 4.6). While the store is failing
// (Store.Health), or its writer queue refused the last batch, every mode
// holds acknowledgements: no acknowledgement for a message the store could
// not take (an MQTT 5 client is refused instead: persist_refuse.go).

// persister is the broker's store and the records not yet submitted.
type persister struct {
	st     *store.Store
	dir    string
	fsync  store.Fsync
	always bool // acknowledgements wait for durability

	mu      sync.Mutex
	batch   *store.Batch    // records not yet submitted; guarded by mu
	lastSeq uint64          // guarded by mu: sequence number of the last batch submitted
	wills   []recoveredWill // guarded by mu: recovered delayed wills not yet taken by a loop

	pending  atomic.Bool   // batch holds records
	hasWills atomic.Bool   // wills is not empty
	durable  atomic.Uint64 // highest sequence number posted durable
	errs     atomic.Uint64 // failed commits and syncs (OnError)
	refused  atomic.Uint64 // submissions refused with ErrQueueFull
	shut     atomic.Bool   // closeStore ran
	backlog  atomic.Bool   // the last Submit was refused: the batch waits on the loops
	refuse   *atomic.Bool  // tests: while true, every Submit is taken as refused (ErrQueueFull)
	log      rateLimiter

	refusedPub atomic.Uint64 // v5 QoS 1/2 PUBLISHes refused while the store failed (persist_refuse.go)
	adminBusy  atomic.Bool   // a checkpoint or compaction runs (storeops.go)
}

// recoveredWill is a delayed will read back at startup, waiting for a loop
// to file it (loop.adoptWills).
type recoveredWill struct {
	s   *session
	m   *message
	due int64 // unix millisecond (delayedWill.due)
}

// heldOut is what a connection may not be sent yet: an acknowledgement
// (PUBACK, PUBREC or PUBCOMP) or, when buf is not nil, encoded frames.
type heldOut struct {
	c    *conn
	buf  *bytebufferpool.ByteBuffer // frames for c; nil: the acknowledgement below
	seq  uint64                     // the store sequence number that must be durable; 0 until the records are submitted
	pend *lazyPend                  // --fsync always: lazy copies that must be acknowledged or durable too (persist_lazy.go)
	id   uint16
	t    codec.Type
	rc   codec.ReasonCode
}

// outHold is a session's part in held frames, allocated the first time
// one of its frames waits (--fsync always only). Guarded by session.mu.
type outHold struct {
	ready *bytebufferpool.ByteBuffer // released frames for s.c, written before wbuf at the next flush
	bytes int32                      // bytes of this session's frames in loops' held lists (blockedLocked)
	hold  bool                       // wbuf holds a frame that may leave only once what was written before it is durable
}

// holdState returns st's outHold, allocating it on first use.
func (st *sessionState) holdState() *outHold {
	if st.hold == nil {
		st.hold = &outHold{}
	}
	return st.hold
}

// heldBytes is the bytes of s's frames held for durability (s.mu held).
func (s *session) heldBytes() int {
	if s.st == nil || s.st.hold == nil {
		return 0
	}
	return int(s.st.hold.bytes)
}

// dropOutLocked drops the bytes encoded for s's connection: unsent
// frames and released ones (s.mu held; the connection changed or went).
func (s *session) dropOutLocked() {
	if s.wbuf != nil {
		putBuf(s.wbuf)
		s.wbuf = nil
	}
	if s.st != nil && s.st.hold != nil {
		o := s.st.hold
		if o.ready != nil {
			putBuf(o.ready)
			o.ready = nil
		}
		o.hold = false
	}
}

// takeOutLocked takes s's released frames and whether its wbuf must wait
// for durability (s.mu held). Runs on s's loop (flush).
func (s *session) takeOutLocked() (ready *bytebufferpool.ByteBuffer, hold bool) {
	if s.st == nil || s.st.hold == nil {
		return nil, false
	}
	o := s.st.hold
	ready, hold = o.ready, o.hold
	o.ready, o.hold = nil, false
	return ready, hold
}

// holdOutLocked marks s's pending frames as carrying a QoS 2 PUBLISH or a
// PUBREL: with --fsync always they wait until the records written before
// them are durable, when s is a persistent session (s.mu held). Clean
// sessions are not held: their state ends with the connection, and so
// does the exactly-once promise (docs/durability.md). Any goroutine.
func (b *Broker) holdOutLocked(s *session) {
	if p := b.ps; p != nil && p.always && s.persisted {
		s.state().holdState().hold = true
	}
}

// loopPersist is a loop's durable-state scratch. Owned by the loop, except
// waiting and durPending (atomics read by the store's writer goroutine).
type loopPersist struct {
	wrote      bool            // a record was appended on this loop since ackHold
	held       []heldOut       // in arrival order; seqs never decrease, the unassigned ones at the tail
	heldBy     map[*conn]int32 // held entries per connection
	unassigned int             // held acknowledgements at the tail with seq 0
	pageWant   []*session      // sessions whose queue wants its next page from the store (persist_queue.go)
	lazy       lazyList        // in-flight records not written yet (persist_lazy.go)
	durRun     gnet.Runnable
	waiting    atomic.Bool // held is not empty
	durPending atomic.Bool // a durRun is on its way
}

// openStore opens and loads the data directory when persistence is on.
// Runs in New, before any listener exists.
func (b *Broker) openStore() error {
	o := &b.opts
	if !o.Persistence {
		return nil
	}
	p := &persister{dir: o.DataDir, fsync: o.Fsync, always: o.Fsync == store.FsyncAlways, batch: store.NewBatch(), refuse: o.storeRefuse}
	st, err := store.Open(store.Options{
		Dir:       o.DataDir,
		Fsync:     o.Fsync,
		Interval:  o.FsyncInterval,
		OnDurable: b.onDurable,
		OnError:   b.onStoreError,
		FS:        o.storeFS,
		Window:    o.storeWindow,
	})
	if err != nil {
		return fmt.Errorf("engine: cannot open the data directory %s (--data-dir): %w", o.DataDir, err)
	}
	p.st = st
	b.ps = p
	if err := b.recover(); err != nil {
		_ = st.Close()
		b.ps = nil
		return fmt.Errorf("engine: cannot recover the data directory %s: %w", o.DataDir, err)
	}
	return nil
}

// closeStore submits what is pending and closes the store, once. Runs in
// Stop after the loops ended, or in a Start that failed.
func (b *Broker) closeStore() error {
	p := b.ps
	if p == nil || !p.shut.CompareAndSwap(false, true) {
		return nil
	}
	for _, l := range b.allLoops() {
		l.writeLazy(true) // the loops have stopped (persist_lazy.go)
	}
	p.flush()
	p.mu.Lock()
	if p.batch.Len() > 0 {
		b.log.Error("store: records not submitted at shutdown", "records", p.batch.Len())
	}
	p.mu.Unlock()
	if err := p.st.Close(); err != nil {
		return fmt.Errorf("engine: closing the data directory %s: %w", p.dir, err)
	}
	return nil
}

// onDurable is the store's OnDurable: it wakes the loops holding
// acknowledgements. Store writer goroutine; never blocks.
func (b *Broker) onDurable(seq uint64) {
	p := b.ps
	if p == nil {
		return
	}
	p.durable.Store(seq)
	for _, l := range b.allLoops() {
		ps := &l.ps
		if ps.waiting.Load() && ps.durPending.CompareAndSwap(false, true) {
			if err := l.el.Execute(context.Background(), ps.durRun); err != nil {
				ps.durPending.Store(false) // shutting down
			}
		}
	}
}

// onStoreError is the store's OnError: counted, and logged at most once a
// second. Store writer goroutine or pebble's; never blocks.
func (b *Broker) onStoreError(err error) {
	p := b.ps
	if p == nil {
		return
	}
	p.errs.Add(1)
	if p.log.allow(time.Now().Unix()) {
		b.log.Error("store: write failed; until it works again, QoS 1/2 publishes that need it are held (3.x) or refused (MQTT 5)",
			"dir", p.dir, "err", err.Error())
	}
}

// StoreHealth is nil while the store takes writes (or persistence is off),
// the store's last error otherwise. Any goroutine.
func (b *Broker) StoreHealth() error {
	if b.ps == nil {
		return nil
	}
	return b.ps.st.Health()
}

// begin locks the pending batch for appending records. Any goroutine
// (under the session's lock when the records are a session's).
func (p *persister) begin() *store.Batch {
	p.mu.Lock()
	return p.batch
}

// end unlocks the pending batch; l, when not nil, is the loop that wrote.
func (p *persister) end(l *loop) {
	p.pending.Store(true)
	p.mu.Unlock()
	if l != nil {
		l.ps.wrote = true
	}
}

// flush submits the pending batch. It returns a sequence number at or
// above that of every record appended before the call, and false when the
// store refused the batch (it stays pending, and later records are
// appended behind it). Any goroutine; never blocks.
func (p *persister) flush() (uint64, bool) {
	if !p.pending.Load() {
		p.mu.Lock()
		seq := p.lastSeq
		p.mu.Unlock()
		return seq, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.batch.Len() == 0 {
		p.pending.Store(false)
		return p.lastSeq, true
	}
	var seq uint64
	err := store.ErrQueueFull
	if p.refuse == nil || !p.refuse.Load() {
		seq, err = p.st.Submit(p.batch)
	}
	if err != nil {
		// ErrQueueFull: the writer is behind or failing; retried at the
		// next flush or tick. ErrClosed: shutting down.
		p.refused.Add(1)
		p.backlog.Store(true)
		return 0, false
	}
	p.backlog.Store(false)
	p.batch = store.NewBatch()
	p.lastSeq = seq
	p.pending.Store(false)
	return seq, true
}

// persistFlush submits the pending records and gives this loop's held
// acknowledgements the sequence number to wait for, releasing those
// already durable. l is nil for the $SYS router. Runs on l.
func (b *Broker) persistFlush(l *loop) {
	p := b.ps
	if p == nil {
		return
	}
	if l == nil {
		p.flush()
		return
	}
	released := l.submitHeld(p)
	if ps := &l.ps; ps.lazy.recheck {
		ps.lazy.recheck = false // a lazy copy a held acknowledgement waited for is settled (persist_lazy.go)
		if !released && len(ps.held) > 0 {
			l.releaseAcks()
		}
	}
}

// submitHeld submits the pending records, gives the acknowledgements held
// since the last submission their sequence number and releases what is
// durable already (reporting whether it looked). Runs on l.
func (l *loop) submitHeld(p *persister) bool {
	ps := &l.ps
	if !p.pending.Load() && ps.unassigned == 0 && len(ps.pageWant) == 0 {
		return false
	}
	seq, ok := p.flush()
	if len(ps.pageWant) > 0 {
		l.requestPages(seq, ok)
	}
	if !ok || ps.unassigned == 0 {
		return false
	}
	for i := len(ps.held) - ps.unassigned; i < len(ps.held); i++ {
		ps.held[i].seq = seq
	}
	ps.unassigned = 0
	if p.durable.Load() >= seq {
		l.releaseAcks()
		return true
	}
	return false
}

// ackHold prepares the acknowledgement of an inbound QoS 1/2 PUBLISH (or
// the PUBCOMP of a PUBREL): it
// reports whether the acknowledgement must be decided after the
// deliveries (ackDurable), which is when it may have to wait for the
// store. Runs on l.
func (l *loop) ackHold() bool {
	p := l.b.ps
	if p == nil {
		return false
	}
	l.ps.wrote = false
	l.ps.lazy.gate, l.ps.lazy.pend = p.always, nil // persist_lazy.go
	// A refused batch (the writer is behind) holds acknowledgements in
	// every mode too: publishers slow down instead of messages being
	// acknowledged that the store has not even taken (store.md).
	return p.always || p.backlog.Load() || p.st.Health() != nil
}

// ackAfterStore makes the acknowledgement being decided (between ackHold
// and ackDurable) wait for what the store holds already, though this
// packet wrote nothing: a PUBREC for a re-sent QoS 2 PUBLISH, or a
// PUBCOMP, of a persistent session. The exchange's records may have been
// written for an earlier connection whose acknowledgement was still held
// when it closed; acknowledged now, a crash could lose them. Runs on l.
func (l *loop) ackAfterStore(s *session) {
	if l.b.ps != nil && s.persisted {
		l.ps.wrote = true
	}
}

// ackDurable sends PUBACK, PUBREC or PUBCOMP after ackHold: at once when
// it wrote no record and c has nothing held, otherwise once the store says
// its records are durable. Frames already encoded for c go before it into
// the held list, so that they keep their order. Runs on c's loop.
func (l *loop) ackDurable(c *conn, t codec.Type, id uint16, rc codec.ReasonCode) {
	ps := &l.ps
	pend := ps.lazy.pend // persist_lazy.go: lazy copies the acknowledgement waits for
	ps.lazy.gate, ps.lazy.pend = false, nil
	if !ps.wrote && pend == nil && ps.heldBy[c] == 0 {
		c.sendAck(t, id, rc)
		return
	}
	s := c.s
	s.mu.Lock()
	var w *bytebufferpool.ByteBuffer
	if s.c == c && s.wbuf != nil {
		w = s.wbuf
		s.wbuf = nil
		s.state().holdState().bytes += int32(len(w.B))
		if s.st.hold.hold {
			s.st.hold.hold = false // the whole of w waits anyway
		}
	}
	s.mu.Unlock()
	if w != nil {
		l.hold(heldOut{c: c, buf: w})
	}
	l.hold(heldOut{c: c, id: id, t: t, rc: rc, pend: pend})
}

// hold appends h to the held list (h.seq 0: assigned when the records
// are submitted). Runs on l.
func (l *loop) hold(h heldOut) {
	ps := &l.ps
	if ps.heldBy == nil {
		ps.heldBy = make(map[*conn]int32)
	}
	l.initDurRun()
	ps.held = append(ps.held, h)
	ps.heldBy[h.c]++
	if h.seq == 0 {
		ps.unassigned++
	}
	ps.waiting.Store(true)
}

// initDurRun makes the task onDurable posts to l, before l first sets
// waiting (the atomic orders the write before onDurable's read). Runs on l.
func (l *loop) initDurRun() {
	if l.ps.durRun == nil {
		l.ps.durRun = gnet.RunnableFunc(func(context.Context) error { l.durableRun(); return nil })
	}
}

// holdOutbound decides what flush writes to c now: ready (frames released
// from the held list) first, then buf, unless buf must wait: it carries a
// QoS 2 PUBLISH or PUBREL for a persistent session (hold, --fsync always:
// until everything written to the store before it is durable), or
// something of c's is held already (it queues behind, in order). It
// returns nil when there is nothing to write now. Runs on c's loop.
func (l *loop) holdOutbound(c *conn, s *session, ready, buf *bytebufferpool.ByteBuffer, hold bool) *bytebufferpool.ByteBuffer {
	ps := &l.ps
	if buf != nil && (hold || ps.heldBy[c] > 0) {
		p := l.b.ps
		l.initDurRun()
		ps.waiting.Store(true) // before durable is read: onDurable checks waiting after storing it
		seq, ok := p.flush()   // the records buf depends on were appended before: seq covers them
		if ok {
			for i := len(ps.held) - ps.unassigned; i < len(ps.held); i++ {
				ps.held[i].seq = seq
			}
			ps.unassigned = 0
		}
		durable := ok && p.durable.Load() >= seq
		if !durable || ps.heldBy[c] > 0 {
			s.mu.Lock()
			s.state().holdState().bytes += int32(len(buf.B))
			s.mu.Unlock()
			if !ok {
				seq = 0
			}
			l.hold(heldOut{c: c, buf: buf, seq: seq})
			buf = nil
		}
		if durable {
			l.releaseAcks() // what just got its sequence number may be durable already
		} else if len(ps.held) == 0 {
			ps.waiting.Store(false)
		}
	}
	if ready == nil {
		return buf
	}
	if buf != nil {
		ready.B = append(ready.B, buf.B...)
		putBuf(buf)
	}
	return ready
}

// durableRun releases the held frames the store's last durability post
// covers. Runs on l (posted by onDurable).
func (l *loop) durableRun() {
	l.ps.durPending.Store(false)
	l.releaseAcks()
	l.r.finish()
}

// releaseAcks releases the held entries whose records are durable, in
// order: each goes to its session's ready frames, which the connection's
// next flush writes before anything newer (finish follows every caller).
// An entry for a connection that closed, or whose session moved on, is
// dropped: the session's state re-sends on reconnect. Runs on l.
func (l *loop) releaseAcks() {
	ps := &l.ps
	d := l.b.ps.durable.Load()
	i := 0
	for ; i < len(ps.held); i++ {
		h := &ps.held[i]
		if h.seq == 0 || h.seq > d || !h.pend.settled(d) {
			break
		}
		if n := ps.heldBy[h.c] - 1; n > 0 {
			ps.heldBy[h.c] = n
		} else {
			delete(ps.heldBy, h.c)
		}
		l.release(h)
	}
	if i > 0 {
		n := copy(ps.held, ps.held[i:])
		clear(ps.held[n:])
		ps.held = ps.held[:n]
	}
	if len(ps.held) == 0 {
		ps.waiting.Store(false)
	}
}

// release moves one held entry to its session's ready frames. Runs on l.
func (l *loop) release(h *heldOut) {
	c := h.c
	s := c.s
	if !c.open && h.buf == nil {
		return
	}
	s.mu.Lock()
	live := c.open && s.c == c
	var o *outHold
	if live || (s.st != nil && s.st.hold != nil) {
		o = s.state().holdState()
	}
	if h.buf != nil && o != nil {
		// A session cleared meanwhile starts from 0 again: never below.
		o.bytes = max(0, o.bytes-int32(len(h.buf.B)))
	}
	if live {
		switch {
		case h.buf == nil:
			if o.ready == nil {
				o.ready = bytebufferpool.Get()
			}
			o.ready.B = appendAck(o.ready.B, h.t, h.id, h.rc, c.version)
		case o.ready == nil:
			o.ready, h.buf = h.buf, nil
		default:
			o.ready.B = append(o.ready.B, h.buf.B...)
		}
	}
	s.mu.Unlock()
	if h.buf != nil {
		putBuf(h.buf)
		h.buf = nil
	}
	if live {
		l.r.markDirty(s, l)
	}
}

// persistTick submits what is pending (a refused batch is retried here),
// releases what became durable, and files recovered delayed wills. Runs on
// l (tick).
func (l *loop) persistTick() {
	p := l.b.ps
	if p == nil {
		return
	}
	l.b.persistFlush(l)
	if len(l.ps.held) > 0 {
		l.releaseAcks()
	}
	if p.hasWills.Load() {
		p.mu.Lock()
		ws := p.wills
		p.wills = nil
		p.hasWills.Store(false)
		p.mu.Unlock()
		for _, w := range ws {
			l.delayed = append(l.delayed, delayedWill{s: w.s, m: w.m, due: w.due})
		}
	}
}

// storeMessage is m as the store keeps it (slices alias m; the batch
// copies them).
func storeMessage(m *message) store.Message {
	var exp int64
	if m.expiry != 0 {
		exp = int64(m.expiry) * 1000
	}
	return store.Message{Topic: m.topic, Payload: m.payload, Props: m.props(), QoS: m.qos, Retain: m.retain, Expiry: exp}
}

// persistRetained records a retained message set or replaced (m), or
// deleted (m nil). $SYS values are not stored: they are made afresh. Any
// goroutine.
func (b *Broker) persistRetained(topicName []byte, m *message) {
	p := b.ps
	if p == nil || isSysTopic(topicName) {
		return
	}
	bt := p.begin()
	if m == nil {
		bt.DeleteRetained(topicName)
	} else {
		sm := storeMessage(m)
		sm.Topic, sm.Retain = topicName, true
		bt.SetRetained(&sm)
	}
	p.end(nil)
}

// wroteRetained notes that the current PUBLISH wrote a retained record,
// so that its acknowledgement waits for it (ackDurable). Runs on r's loop.
func (r *router) wroteRetained(topicName []byte) {
	if r.b.ps != nil && r.l != nil && !isSysTopic(topicName) {
		r.l.ps.wrote = true
	}
}

// storeID is the store's message id of the current PUBLISH, putting the
// message record into bt on first need (once per PUBLISH however many
// sessions reference it). Runs on r's loop, bt locked.
func (r *router) storeID(bt *store.Batch) uint64 {
	if r.mid == 0 {
		r.mid = r.b.ps.st.NextMessageID()
		sm := storeMessage(r.owned())
		bt.PutMessage(r.mid, &sm)
	}
	return r.mid
}

// persistQueued records the message just queued for s (s.mu held). Runs
// on r's loop.
func (r *router) persistQueued(s *session) {
	p := r.b.ps
	if p == nil || !s.persisted {
		return
	}
	st := s.st
	last := len(st.q) - 1
	e := &st.q[last]
	// Offline, or behind a queue that goes on in the store: the entry is
	// kept in the store only (persist_queue.go), and the bound counts
	// what is there.
	toDisk := s.c == nil || st.spill.on
	total := last + st.onDisk() // with e: qTail counts it already
	if !st.spill.on {
		total++
	}
	// qBytes counts e already (enqueueLocked); dBytes is what the store
	// holds only.
	if toDisk && (total > r.b.opts.MaxQueuedMsgs || st.qBytes+st.dBytes > r.b.opts.MaxQueuedBytes) {
		st.qBytes -= len(e.m.payload)
		st.q[last] = queued{}
		st.q = st.q[:last]
		st.qTail--
		if s.fullSince == 0 {
			s.fullSince = uint32(r.b.now.Load())
		}
		r.stats.dropped.Add(1)
		r.stats.droppedQueueFull.Add(1)
		r.b.bridges.drop(s.id)
		return
	}
	bt := p.begin()
	e.mid = r.storeID(bt)
	tag := s.tagOf(e.grp)
	bt.EnqueueGroup(s.id, e.pos, e.mid, e.qos, e.retain, len(e.m.payload), tag)
	p.end(r.l)
	if toDisk {
		if !st.spill.on {
			st.spill = spill{on: true, after: e.pos - 1}
		}
		if tag != 0 {
			st.spill.groups++
		}
		st.qBytes -= len(e.m.payload)
		st.dBytes += len(e.m.payload)
		st.q[last] = queued{}
		st.q = st.q[:last]
	}
}

// persistSent records the message just put in flight to s (s.mu held).
// Runs on r's loop.
func (r *router) persistSent(s *session) {
	p := r.b.ps
	if p == nil || !s.persisted {
		return
	}
	f := &s.st.inflight[len(s.st.inflight)-1]
	if r.deferInflight(s, f) { // persist_lazy.go
		return
	}
	bt := p.begin()
	f.mid = r.storeID(bt)
	bt.SetInflightGroup(s.id, f.id, f.mid, f.qos, f.retain, store.PublishSent, s.tagOf(f.grp))
	p.end(r.l)
	if f.qos == 2 {
		r.b.holdOutLocked(s) // exactly once: out once the message and its in-flight record are durable
	}
}

// persistDequeued records that queued entry e left s's queue: dropped, or
// sent (in flight with packet id id when id is not 0). s.mu held; any
// goroutine.
func (b *Broker) persistDequeued(s *session, e *queued, id uint16) {
	p := b.ps
	if p == nil || !s.persisted || e.pos == 0 {
		return
	}
	bt := p.begin()
	bt.Dequeue(s.id, e.pos, e.mid)
	if id != 0 && e.mid != 0 {
		bt.SetInflightGroup(s.id, id, e.mid, e.qos, e.retain, store.PublishSent, s.tagOf(e.grp))
	}
	p.end(nil)
	if id != 0 && e.qos == 2 {
		b.holdOutLocked(s) // out once it is in flight in the store, no longer queued
	}
}

// persistPubrec records that in-flight QoS 2 message f got PUBREC (PUBREL
// sent); the PUBREL waits until that is durable (--fsync always): a
// client that got PUBREL completes and forgets the id, so the broker must
// not send the PUBLISH again after a crash. s.mu held; any goroutine.
func (b *Broker) persistPubrec(s *session, f *inflight) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	b.holdOutLocked(s)
	if f.mid == 0 {
		return
	}
	bt := p.begin()
	bt.SetInflightGroup(s.id, f.id, f.mid, f.qos, f.retain, store.PubrelSent, s.tagOf(f.grp))
	p.end(nil)
}

// persistAcked records that in-flight message f is done (PUBACK, or
// PUBCOMP). s.mu held; any goroutine.
func (b *Broker) persistAcked(s *session, f *inflight) {
	p := b.ps
	if p == nil || !s.persisted || f.lazy {
		if f.lazy && f.pend != nil {
			var cur *loop // the subscriber's loop, handling its PUBACK
			if s.c != nil {
				cur = s.c.l
			}
			f.pend.done(cur) // the subscriber has it: the publisher's acknowledgement need not wait for the disk
			f.pend = nil
		}
		return // a lazy entry never reached the store (persist_lazy.go)
	}
	bt := p.begin()
	bt.DeleteInflight(s.id, f.id, f.mid)
	p.end(nil)
}

// persistQoS2In records an inbound QoS 2 packet id awaiting PUBREL (add)
// or released. s.mu held; runs on s's loop l.
func (l *loop) persistQoS2In(s *session, id uint16, add bool) {
	p := l.b.ps
	if p == nil || !s.persisted {
		return
	}
	bt := p.begin()
	if add {
		bt.AddQoS2In(s.id, id)
	} else {
		bt.DeleteQoS2In(s.id, id)
	}
	p.end(l)
}

// persistSub records a subscription granted to s (s.mu held). Runs on s's
// loop.
func (b *Broker) persistSub(s *session, e *subEntry) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	bt := p.begin()
	bt.SetSubscription(s.id, &store.Subscription{Filter: []byte(e.filter), QoS: e.qos, Options: e.opts, ID: e.id, Group: e.tag})
	p.end(nil)
}

// persistUnsub records a subscription removed (s.mu held). Runs on s's
// loop.
func (b *Broker) persistUnsub(s *session, filter []byte) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	bt := p.begin()
	bt.DeleteSubscription(s.id, filter)
	p.end(nil)
}

// persistOnline records a session attached to a connection (s.mu held): a
// persistent one gets its header with no expiry and loses a pending will
// (the client came back); one that became clean is deleted, unless its
// queue is still in the store (then at its disconnect). Runs on the
// connection's loop.
func (b *Broker) persistOnline(s *session) {
	p := b.ps
	if p == nil {
		return
	}
	if s.clean {
		if !s.persisted || s.st == nil || s.st.onDisk() == 0 {
			b.persistDiscard(s)
			return
		}
		// A session resumed with v5 Session Expiry 0 ends with this
		// connection (its disconnect discards it), but its queue is still
		// in the store, to be paged in: its records stay until then. The
		// header has no deadline and expiry 0, so after a crash it
		// expires at the restart.
	}
	wasStored := s.persisted
	s.persisted = true
	var props [4]byte
	bt := p.begin()
	bt.SetSession(s.id, &store.SessionInfo{ProtocolVersion: uint8(s.version), Props: sessionProps(&props, s)})
	if wasStored {
		bt.DeleteWill(s.id)
	}
	p.end(nil)
}

// sessionProps is what a session header keeps beyond the protocol version
// and deadline: a v5 session's Session Expiry Interval (4 bytes, big
// endian), so that a session that was online when the broker crashed
// (its header has no deadline) expires that long after the restart. nil
// for 3.x sessions.
func sessionProps(dst *[4]byte, s *session) []byte {
	v := s.v5()
	if v == nil {
		return nil
	}
	binary.BigEndian.PutUint32(dst[:], v.expiry)
	return dst[:]
}

// persistOffline records a persistent session going offline (s.mu held):
// its header with the expiry deadline. Runs on the connection's loop.
func (b *Broker) persistOffline(s *session) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	var deadline int64
	if e := s.expirySecs(b); e != neverExpires {
		deadline = (b.now.Load() + int64(e)) * 1000
	}
	var props [4]byte
	b.writeLazyLocked(s, nil) // offline: what is in flight must be in the store (persist_lazy.go)
	bt := p.begin()
	bt.SetSession(s.id, &store.SessionInfo{ProtocolVersion: uint8(s.version), Expiry: deadline, Props: sessionProps(&props, s)})
	p.end(nil)
	s.spillLocked() // the queue waits in the store (persist_queue.go)
}

// persistDiscard deletes a discarded session's records (s.mu held): clean
// connect over it, clean disconnect, expiry. Any goroutine.
func (b *Broker) persistDiscard(s *session) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	s.persisted = false
	s.forgetLazyLocked() // persist_lazy.go
	bt := p.begin()
	bt.DeleteSession(s.id)
	p.end(nil)
}

// persistEnd deletes the records of a session that ended (s.mu held,
// before its state is cleared and its subscriptions leave the tree):
// clean connect over it, clean disconnect, expiry. When its queue goes
// on in the store with entries that came through a shared group, the
// store reads those where it deletes them (DeleteSessionTaking) and the
// returned sessionEnd hands them to the groups' other members; call its
// left once the session's subscriptions are out of the tree. nil
// otherwise. Any goroutine.
func (b *Broker) persistEnd(s *session) *sessionEnd {
	p := b.ps
	st := s.st
	if p == nil || !s.persisted || st == nil || !st.spill.on || st.spill.groups == 0 || st.onDisk() == 0 {
		b.persistDiscard(s)
		return nil
	}
	s.persisted = false
	s.forgetLazyLocked() // persist_lazy.go
	e := &sessionEnd{}
	for i := range s.subs {
		if x := &s.subs[i]; x.tag != 0 && x.grp != 0 {
			e.groups = append(e.groups, tagGroup{tag: x.tag, grp: x.grp})
		}
	}
	e.wait.Store(2)
	bt := p.begin()
	bt.DeleteSessionTaking(s.id, st.spill.after, func(q []store.Queued) { e.taken(b, q) })
	p.end(nil)
	return e
}

// persistWill records a v5 will waiting for its delay, due at unix
// millisecond due (s.mu held). Runs on the connection's loop.
func (b *Broker) persistWill(s *session, w *message, due int64) {
	p := b.ps
	if p == nil || !s.persisted {
		return
	}
	sm := storeMessage(w)
	sm.Expiry = 0
	if w.expiry != 0 {
		// A will's expiry is an interval until it is published
		// (will5): stored as the deadline it will have then.
		sm.Expiry = due + int64(w.expiry)*1000
	}
	bt := p.begin()
	bt.SetWill(s.id, &store.Will{Message: sm, Deadline: due})
	p.end(nil)
}

// persistWillDone deletes a delayed will published or cancelled (s.mu
// held). Runs on a loop.
func (b *Broker) persistWillDone(s *session) {
	p := b.ps
	if p == nil {
		return
	}
	bt := p.begin()
	bt.DeleteWill(s.id)
	p.end(nil)
}

// StoreStats are the store's counters for /metrics.
type StoreStats struct {
	Enabled bool   `json:"enabled"`
	Fsync   string `json:"fsync,omitempty"`
	Errors  uint64 `json:"errors"`  // failed commits and syncs
	Refused uint64 `json:"refused"` // submissions refused: writer queue full
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
	Durable uint64 `json:"durable_seq"`

	RefusedPublishes uint64 `json:"refused_publishes"` // v5 QoS 1/2 PUBLISHes refused (0x97/0x80) while failing

	WindowWritten   uint64 `json:"window_written"`   // records the commit window wrote to pebble
	WindowCancelled uint64 `json:"window_cancelled"` // records cancelled inside the window: never written
}

// storeStats reads the store's counters. Any goroutine.
func (b *Broker) storeStats() StoreStats {
	p := b.ps
	if p == nil {
		return StoreStats{Healthy: true}
	}
	st := StoreStats{Enabled: true, Fsync: p.fsync.String(), Errors: p.errs.Load(), Refused: p.refused.Load(),
		Durable: p.durable.Load(), Healthy: true, RefusedPublishes: p.refusedPub.Load()}
	ov := p.st.Overlay()
	st.WindowWritten, st.WindowCancelled = ov.Written, ov.Cancelled
	if err := p.st.Health(); err != nil {
		st.Healthy, st.Error = false, err.Error()
	}
	return st
}

// b2f is 1 for true, 0 for false (a Prometheus gauge).
func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
