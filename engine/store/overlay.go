package store

import (
	"encoding/binary"
	"slices"
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

	// Entries (queue, in flight) only: the message the set references
	// (its reference key 'x' id ... goes with it), and the messages whose
	// reference keys under this entry must be deleted (its previous
	// values, on disk).
	id    uint64
	drop  uint64   // first such message, 0: none
	drops []uint64 // more (an entry re-used within one window)

	// Message records put in this window: their reference count is kept
	// here (counted), not in Store.refs, until the window is written.
	refs    int32
	counted bool
}

// dropRef notes that the reference key of message id under this entry
// must be deleted.
func (e *ovEntry) dropRef(id uint64) {
	switch {
	case id == 0 || id == e.drop || slices.Contains(e.drops, id):
	case e.drop == 0:
		e.drop = id
	default:
		e.drops = append(e.drops, id)
	}
}

// overlay is the window's records, in three maps sharing one slice of
// entries: message records by id; queue and in-flight entries by key,
// each carrying its reference key (derived, not stored); every other key.
// Writer goroutine.
type overlay struct {
	msgs  map[uint64]int32    // message id -> entry
	m     map[string]int32    // key -> entry (entries and plain keys)
	ents  []ovEntry           // entries; a cancelled one's slot goes to free
	free  []int32             // unused slots of ents
	bytes int                 // keys and values held, for the flush bound
	churn int                 // cancellations since the maps were made
	gc    map[uint64]struct{} // untracked messages that lost a reference in the window (collect after the flush)

	keys []string // write's scratch
	ids  []uint64 // write's scratch
	k    []byte   // write's key scratch

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

func (o *overlay) empty() bool { return len(o.m) == 0 && len(o.msgs) == 0 }

func (o *overlay) slot(e ovEntry) int32 {
	if n := len(o.free); n > 0 {
		i := o.free[n-1]
		o.free = o.free[:n-1]
		o.ents[i] = e
		return i
	}
	o.ents = append(o.ents, e)
	return int32(len(o.ents) - 1)
}

func (o *overlay) cancel(i int32, size int) {
	o.bytes -= size
	o.ents[i] = ovEntry{}
	o.free = append(o.free, i)
	o.cancelled++
	o.churn++
}

func (o *overlay) addKey(key []byte, e ovEntry) {
	if o.m == nil {
		o.m = make(map[string]int32)
	}
	o.bytes += len(key) + len(e.val)
	o.m[string(key)] = o.slot(e)
}

// set records key = val (a plain key: no reference). fresh says whether
// pebble holds no value under key, when the overlay has no entry for it.
func (o *overlay) set(key, val []byte, fresh bool) {
	if i, ok := o.m[b2s(key)]; ok {
		e := &o.ents[i]
		o.bytes += len(val) - len(e.val)
		e.val, e.del = val, false
		return
	}
	o.addKey(key, ovEntry{val: val, fresh: fresh})
}

// del records the deletion of a plain key: a set pebble never saw is
// cancelled, anything else becomes a tombstone.
func (o *overlay) del(key []byte) {
	i, ok := o.m[b2s(key)]
	if !ok {
		o.addKey(key, ovEntry{del: true})
		return
	}
	e := &o.ents[i]
	if e.fresh {
		delete(o.m, b2s(key))
		o.cancel(i, len(key)+len(e.val))
		o.maybeRebuild()
		return
	}
	o.bytes -= len(e.val)
	e.val, e.del = nil, true
}

// setRef records entry key = val, referencing message id (whose record,
// when fresh, never reached pebble: then neither did the entry).
func (o *overlay) setRef(key, val []byte, id uint64, fresh bool) {
	if i, ok := o.m[b2s(key)]; ok {
		e := &o.ents[i]
		if e.del {
			e.del = false
		} else if e.id != id && !e.fresh {
			e.dropRef(e.id) // replaced: the old reference goes
		}
		o.bytes += len(val) - len(e.val)
		e.val, e.id = val, id
		return
	}
	if o.m == nil {
		o.m = make(map[string]int32)
	}
	o.bytes += len(key) + len(val)
	o.m[string(key)] = o.slot(ovEntry{val: val, id: id, fresh: fresh})
}

// delRef records the deletion of entry key, which references message id.
func (o *overlay) delRef(key []byte, id uint64) {
	i, ok := o.m[b2s(key)]
	if !ok {
		e := ovEntry{del: true}
		e.dropRef(id)
		o.addKey(key, e)
		return
	}
	e := &o.ents[i]
	if e.fresh && !e.del {
		delete(o.m, b2s(key))
		o.cancel(i, len(key)+len(e.val))
		o.maybeRebuild()
		return
	}
	if !e.del {
		e.dropRef(e.id)
	}
	e.dropRef(id)
	o.bytes -= len(e.val)
	e.val, e.del, e.id = nil, true, 0
}

// putMsg records message record id; fresh (new: above every id on disk
// at open) records are counted in the window.
func (o *overlay) putMsg(id uint64, val []byte, fresh bool) {
	if i, ok := o.msgs[id]; ok {
		e := &o.ents[i]
		o.bytes += len(val) - len(e.val)
		e.val, e.del = val, false
		return
	}
	if o.msgs == nil {
		o.msgs = make(map[uint64]int32)
	}
	o.bytes += 9 + len(val)
	o.msgs[id] = o.slot(ovEntry{val: val, fresh: fresh, counted: fresh})
}

// keepCounts takes the counts of the window's messages into refs once the
// window is in pebble (while fewer than maxTracked are tracked).
func (o *overlay) keepCounts(refs map[uint64]int32) {
	for id, i := range o.msgs {
		if e := &o.ents[i]; e.counted && !e.del && len(refs) < maxTracked {
			refs[id] = e.refs
		}
	}
}

// delMsg records the deletion of message record id.
func (o *overlay) delMsg(id uint64) {
	i, ok := o.msgs[id]
	if !ok {
		if o.msgs == nil {
			o.msgs = make(map[uint64]int32)
		}
		o.bytes += 9
		o.msgs[id] = o.slot(ovEntry{del: true})
		return
	}
	e := &o.ents[i]
	if e.fresh {
		delete(o.msgs, id)
		o.cancel(i, 9+len(e.val))
		return
	}
	o.bytes -= len(e.val)
	e.val, e.del = nil, true
}

// maybeRebuild moves the live entries to a new map once many were
// cancelled: a map that keeps taking and cancelling keys (a steady QoS 1
// stream) fills with deleted slots that lengthen every probe, and a
// window may see millions of them.
func (o *overlay) maybeRebuild() {
	if o.churn <= 4*(len(o.m)+len(o.msgs))+4096 {
		return
	}
	m := make(map[string]int32, len(o.m))
	for k, i := range o.m {
		m[k] = i
	}
	ms := make(map[uint64]int32, len(o.msgs))
	for id, i := range o.msgs {
		ms[id] = i
	}
	o.m, o.msgs, o.churn = m, ms, 0
}

// write adds the overlay's records to pb, in key order: pebble inserts a
// batch into its memtable (a skiplist) in batch order, and keys in order
// find their place from the one before. Reference keys ('x') are written
// after the rest.
func (o *overlay) write(pb *pebble.Batch) error {
	ids := o.ids[:0]
	for id := range o.msgs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		e := &o.ents[o.msgs[id]]
		o.k = messageKey(o.k[:0], id)
		if err := o.put(pb, o.k, e); err != nil {
			return err
		}
	}
	keys := o.keys[:0]
	for k := range o.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e := &o.ents[o.m[k]]
		kb := unsafe.Slice(unsafe.StringData(k), len(k)) // pebble copies it
		if err := o.put(pb, kb, e); err != nil {
			return err
		}
	}
	for _, k := range keys {
		e := &o.ents[o.m[k]]
		if e.id == 0 && e.drop == 0 {
			continue
		}
		kb := unsafe.Slice(unsafe.StringData(k), len(k))
		if !e.del && e.id != 0 {
			if err := pb.Set(o.refKey(e.id, kb), nil, nil); err != nil {
				return err
			}
		}
		if err := o.dropRefs(pb, kb, e, e.drop); err != nil {
			return err
		}
		for _, d := range e.drops {
			if err := o.dropRefs(pb, kb, e, d); err != nil {
				return err
			}
		}
	}
	clear(keys)
	o.keys, o.ids = keys[:0], ids[:0]
	return nil
}

// dropRefs deletes the reference key of message d under entry key k,
// unless it is the one the entry sets.
func (o *overlay) dropRefs(pb *pebble.Batch, k []byte, e *ovEntry, d uint64) error {
	if d == 0 || (d == e.id && !e.del) {
		return nil
	}
	return pb.Delete(o.refKey(d, k), nil)
}

func (o *overlay) refKey(id uint64, key []byte) []byte {
	o.k = append(binary.BigEndian.AppendUint64(append(o.k[:0], prefixRef), id), key[1:]...)
	return o.k
}

func (o *overlay) put(pb *pebble.Batch, k []byte, e *ovEntry) error {
	if e.del {
		return pb.Delete(k, nil)
	}
	o.written++
	return pb.Set(k, e.val, nil)
}

// reset empties the overlay (after a flush, or a failure that replays the
// batches instead). Its values must not be used after it.
func (o *overlay) reset() {
	clear(o.m)
	clear(o.msgs)
	clear(o.gc)
	clear(o.ents)
	o.ents, o.free = o.ents[:0], o.free[:0]
	o.bytes, o.churn = 0, 0
}

// ovApply applies one op of a plain batch (no reads) to the overlay. The
// reference counts change in the window's message entries, or in
// Store.refs for a message written before (ovRef); the caller ends the
// segment with ovFinish. The window cannot fail between an op and its
// segment's end (nothing is written to pebble), so the counts change in
// place, not in a commit's scratch. Writer goroutine.
func (w *applier) ovApply(k opKind, key, val []byte, id uint64) error {
	o := &w.s.ov
	switch k {
	case opSet:
		if len(key) == 9 && key[0] == prefixMessage {
			mid := binary.BigEndian.Uint64(key[1:])
			fresh := mid > w.s.idFloor
			if !fresh {
				w.ovPut(mid)
			}
			o.putMsg(mid, val, fresh)
			return nil
		}
		o.set(key, val, false)
		return nil
	case opDel:
		if len(key) == 9 && key[0] == prefixMessage {
			o.delMsg(binary.BigEndian.Uint64(key[1:]))
			return nil
		}
		o.del(key)
		return nil
	case opSetRef:
		mi, inWindow := o.msgs[id]
		o.setRef(key, val, id, inWindow && o.ents[mi].fresh && !o.ents[mi].del)
		if _, _, pubrel, _, err := decodeEntry(val); err == nil && !pubrel {
			w.ovCount(id, mi, inWindow, 1)
		}
		return nil
	case opDelRef:
		if id == 0 {
			return errCorrupt // Batch.op marks it a read: it never comes here
		}
		mi, inWindow := o.msgs[id]
		o.delRef(key, id)
		w.ovCount(id, mi, inWindow, -1)
		return nil
	}
	return errCorrupt
}

// ovPut notes a new message record: tracked from here (while fewer than
// maxTracked are), with no reference yet. The window cannot fail between
// an op and its segment's end (nothing is written to pebble), so the
// counts change in Store.refs directly, not in a commit's scratch.
func (w *applier) ovPut(id uint64) {
	if _, ok := w.s.refs[id]; !ok && len(w.s.refs) < maxTracked {
		w.s.refs[id] = 0
	}
}

// ovCount notes a reference added (+1) or dropped (-1) to message id,
// whose entry in the window is mi when inWindow.
func (w *applier) ovCount(id uint64, mi int32, inWindow bool, d int32) {
	if inWindow {
		if e := &w.s.ov.ents[mi]; e.counted {
			e.refs += d
			if e.refs == 0 && d < 0 {
				w.zeroed = append(w.zeroed, id)
			}
			return
		}
	}
	w.ovRef(id, d)
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
	for _, id := range w.zeroed {
		if mi, ok := o.msgs[id]; ok && o.ents[mi].counted {
			if o.ents[mi].refs == 0 {
				o.delMsg(id)
			}
			continue
		}
		if c, ok := w.s.refs[id]; !ok || c != 0 {
			continue // referenced again, or already deleted
		}
		delete(w.s.refs, id)
		o.delMsg(id)
	}
	w.zeroed = w.zeroed[:0]
}
