package store

import (
	"encoding/binary"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
)

// The overlay: records the writer holds in memory for one commit window
// before they reach pebble (docs/store.md, "The commit window").
//
// A QoS 1 message between two online persistent sessions is put (message
// record, in-flight entry, reference key) and deleted (PUBACK) within
// milliseconds. Committing both to pebble costs a memtable insert of each
// key and its tombstone, a flush and a compaction that drops them again:
// most of the CPU of a persistent QoS 1 stream. The writer applies each
// batch to the overlay instead, a map from key to the key's final state in
// the window; a delete of a key the overlay set, and that pebble does not
// hold, cancels the set, so a message acknowledged within the window
// writes nothing at all. At the end of the window (FsyncInterval and
// FsyncNone: Interval; FsyncAlways: one group commit) the overlay is
// written to pebble in one batch, atomically.
//
// Whether pebble holds a key is known without reading, from the order the
// engine writes in (docs/store.md, "Order across loops"): a message record
// with an id above the highest on disk at open (idFloor) is new; an entry
// or reference key that references a message whose record is still in the
// overlay (never written to pebble) is new, because an entry is set in the
// batch that puts its message or a later one, the key's previous holder
// was deleted before it (a tombstone, which the overlay keeps, or written
// to pebble already), and a flush takes the whole overlay. Every other key
// (retained, session header, subscriptions, wills, QoS 2 ids, entries of
// recovered messages) is taken to exist in pebble: its delete is written.
//
// Only the writer goroutine touches the overlay. Reads (Queue, Message)
// ask the writer to flush it first (Store.flushForRead), so they see every
// committed batch.

// ovEntry is a key's state in the overlay.
type ovEntry struct {
	val   []byte // aliases the Batch that set it (held until the overlay is flushed)
	del   bool   // a delete: written to pebble as a tombstone
	fresh bool   // pebble holds no value under the key: a delete cancels the set
}

// overlay is the window's records. Writer goroutine.
type overlay struct {
	m     map[string]int32    // key -> its entry in ents
	ents  []ovEntry           // entries; a cancelled one's slot goes to free
	free  []int32             // unused slots of ents
	bytes int                 // keys and values held, for the flush bound
	churn int                 // cancellations since the map was made
	gc    map[uint64]struct{} // untracked messages that lost a reference in the window (collect after the flush)

	// Counters since open, for tests and docs: sets that reached pebble,
	// and sets a delete cancelled in the overlay.
	written, cancelled uint64
}

// b2s views k as a string for a map lookup or delete (not kept: a map
// keeps a string of its own, string(k)).
func b2s(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return unsafe.String(&k[0], len(k))
}

func (o *overlay) empty() bool { return len(o.m) == 0 }

func (o *overlay) add(key []byte, e ovEntry) {
	if o.m == nil {
		o.m = make(map[string]int32)
	}
	o.bytes += len(key) + len(e.val)
	var i int32
	if n := len(o.free); n > 0 {
		i = o.free[n-1]
		o.free = o.free[:n-1]
		o.ents[i] = e
	} else {
		i = int32(len(o.ents))
		o.ents = append(o.ents, e)
	}
	o.m[string(key)] = i
}

// set records key = val. fresh says whether pebble holds no value under
// key, when the overlay has no entry for it (an entry decides otherwise).
func (o *overlay) set(key, val []byte, fresh bool) {
	if i, ok := o.m[b2s(key)]; ok {
		e := &o.ents[i]
		o.bytes += len(val) - len(e.val)
		e.val, e.del = val, false
		return
	}
	o.add(key, ovEntry{val: val, fresh: fresh})
}

// del records the deletion of key: a set pebble never saw is cancelled,
// anything else becomes a tombstone.
func (o *overlay) del(key []byte) {
	i, ok := o.m[b2s(key)]
	if !ok {
		o.add(key, ovEntry{del: true})
		return
	}
	e := &o.ents[i]
	o.bytes -= len(e.val)
	if e.fresh {
		o.bytes -= len(key)
		delete(o.m, b2s(key))
		*e = ovEntry{}
		o.free = append(o.free, i)
		o.cancelled++
		if o.churn++; o.churn > 4*len(o.m)+4096 {
			o.rebuild()
		}
		return
	}
	e.val, e.del = nil, true
}

// rebuild moves the live entries to a new map. A map that keeps taking
// and cancelling keys (a steady QoS 1 stream) fills with deleted slots
// that lengthen every probe; a window may see millions of them.
func (o *overlay) rebuild() {
	m := make(map[string]int32, len(o.m))
	for k, i := range o.m {
		m[k] = i
	}
	o.m, o.churn = m, 0
}

// msgFresh reports whether message id's record is in the overlay and was
// never written to pebble: then no key referencing it is in pebble either.
func (o *overlay) msgFresh(id uint64) bool {
	var k [9]byte
	i, ok := o.m[b2s(messageKey(k[:0], id))]
	return ok && o.ents[i].fresh && !o.ents[i].del
}

// write adds the overlay's records to pb.
func (o *overlay) write(pb *pebble.Batch) error {
	for k, i := range o.m {
		e := &o.ents[i]
		kb := unsafe.Slice(unsafe.StringData(k), len(k)) // pebble copies it
		if e.del {
			if err := pb.Delete(kb, nil); err != nil {
				return err
			}
			continue
		}
		o.written++
		if err := pb.Set(kb, e.val, nil); err != nil {
			return err
		}
	}
	return nil
}

// reset empties the overlay (after a flush, or a failure that replays the
// batches instead). Its values must not be used after it.
func (o *overlay) reset() {
	clear(o.m)
	o.churn = 0
	clear(o.gc)
	clear(o.ents)
	o.ents, o.free = o.ents[:0], o.free[:0]
	o.bytes = 0
}

// ovApply applies one op of a plain batch (no reads) to the overlay. The
// reference counts change in w.cnt as in a pebble commit (applier.apply);
// the caller ends the segment with ovFinish. Writer goroutine.
func (w *applier) ovApply(k opKind, key, val []byte, id uint64) error {
	o := &w.s.ov
	switch k {
	case opSet:
		w.ovPut(key)
		fresh := len(key) == 9 && key[0] == prefixMessage && binary.BigEndian.Uint64(key[1:]) > w.s.idFloor
		o.set(key, val, fresh)
		return nil
	case opDel:
		o.del(key)
		return nil
	case opSetRef:
		fresh := o.msgFresh(id)
		o.set(key, val, fresh)
		if _, _, pubrel, _, err := decodeEntry(val); err == nil && !pubrel {
			w.ovRef(id, 1)
		}
		o.set(w.ovRefKey(id, key), nil, fresh)
		return nil
	case opDelRef:
		if id == 0 {
			return errCorrupt // Batch.op marks it a read: it never comes here
		}
		o.del(w.ovRefKey(id, key))
		w.ovRef(id, -1)
		o.del(key)
		return nil
	}
	return errCorrupt
}

// ovRefKey is refOf in a scratch buffer of its own (set and del copy it
// into the arena when they keep it).
func (w *applier) ovRefKey(id uint64, key []byte) []byte {
	w.rk = append(binary.BigEndian.AppendUint64(append(w.rk[:0], prefixRef), id), key[1:]...)
	return w.rk
}

// ovPut notes a new message record: tracked from here (while fewer than
// maxTracked are), with no reference yet. The window cannot fail between
// an op and its segment's end (nothing is written to pebble), so the
// counts change in Store.refs directly, not in a commit's scratch.
func (w *applier) ovPut(key []byte) {
	if len(key) != 9 || key[0] != prefixMessage {
		return
	}
	id := binary.BigEndian.Uint64(key[1:])
	if _, ok := w.s.refs[id]; !ok && len(w.s.refs) < maxTracked {
		w.s.refs[id] = 0
	}
}

// ovRef notes a reference added (+1) or dropped (-1) to message id, as
// applier.ref does for a pebble commit.
func (w *applier) ovRef(id uint64, d int32) {
	c, ok := w.s.refs[id]
	if !ok {
		if d < 0 {
			o := &w.s.ov
			if o.gc == nil {
				o.gc = make(map[uint64]struct{})
			}
			o.gc[id] = struct{}{}
		}
		return
	}
	c += d
	w.s.refs[id] = c
	if c == 0 && d < 0 {
		w.zeroed = append(w.zeroed, id)
	}
}

// ovFinish ends a segment of overlay ops (a group of batches, or the ops
// before a batch that reads): each tracked message whose last reference
// went is deleted (cancelled, when its record never left the overlay); a
// count back above 0 by the end keeps it (a queue entry moved in flight).
// Writer goroutine.
func (w *applier) ovFinish() {
	o := &w.s.ov
	var k [9]byte
	for _, id := range w.zeroed {
		if c, ok := w.s.refs[id]; !ok || c != 0 {
			continue // referenced again, or already deleted
		}
		delete(w.s.refs, id)
		o.del(messageKey(k[:0], id))
	}
	w.zeroed = w.zeroed[:0]
}
