package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Loader receives recovered state from Load. Nil funcs skip that kind. The
// values handed over are owned copies the engine may keep; an error stops
// the load and is returned.
type Loader struct {
	Retained func(m Message) error
	Session  func(s *Session) error
	Will     func(cid string, w Will) error
}

// LoadStats counts what Load recovered.
type LoadStats struct {
	Retained        int
	Sessions        int
	Subscriptions   int
	Inflight        int
	QoS2In          int
	Wills           int
	ExpiredRetained int // skipped and deleted
	ExpiredSessions int // skipped and deleted (with their queues)
	Duration        time.Duration
}

func (st LoadStats) String() string {
	return fmt.Sprintf("%d retained, %d sessions (%d subscriptions, %d in flight, %d inbound QoS 2), %d wills; expired %d retained, %d sessions; in %v",
		st.Retained, st.Sessions, st.Subscriptions, st.Inflight, st.QoS2In, st.Wills, st.ExpiredRetained, st.ExpiredSessions, st.Duration.Round(time.Millisecond))
}

// Load walks the store once at startup: retained messages, sessions (with
// subscriptions, in-flight messages and inbound QoS 2 ids; queues stay on
// disk, see Queue), then wills. Expired retained messages and sessions are
// skipped and their deletion is submitted to the writer. Blocks on I/O:
// call it before the listeners open.
func (s *Store) Load(l Loader) (LoadStats, error) {
	start := time.Now()
	var st LoadStats
	s.flushForRead()
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	now := s.opts.Now().UnixMilli()
	del := NewBatch()
	defer func() {
		if del.Len() > 0 {
			if _, err := s.Submit(del); err != nil {
				del.release()
			}
		} else {
			del.release()
		}
	}()
	if err := s.loadRetained(l, now, &st, del); err != nil {
		return st, err
	}
	if err := s.loadSessions(l, now, &st, del); err != nil {
		return st, err
	}
	if err := s.loadWills(l, &st); err != nil {
		return st, err
	}
	st.Duration = time.Since(start)
	return st, nil
}

func (s *Store) iter(prefix byte) (*pebble.Iterator, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return it, nil
}

func (s *Store) loadRetained(l Loader, now int64, st *LoadStats, del *Batch) error {
	it, err := s.iter(prefixRetained)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: retained: %w", err)
		}
		var m Message
		if err := decodeMessage(v, &m); err != nil {
			return fmt.Errorf("store: retained %q: %w", it.Key()[1:], err)
		}
		if m.Expiry != 0 && m.Expiry <= now {
			st.ExpiredRetained++
			del.DeleteRetained(it.Key()[1:])
			continue
		}
		st.Retained++
		if l.Retained != nil {
			if err := l.Retained(cloneMessage(m)); err != nil {
				return err
			}
		}
	}
	return it.Error()
}

func (s *Store) loadSessions(l Loader, now int64, st *LoadStats, del *Batch) error {
	it, err := s.iter(prefixSession)
	if err != nil {
		return err
	}
	defer it.Close()
	var cur *Session
	var hasHeader bool
	flush := func() error {
		if cur == nil {
			return nil
		}
		se := cur
		cur = nil
		if !hasHeader {
			// Entries without a header: a session deleted half-way cannot
			// happen (one batch), so this is a write from a newer layout;
			// keep it and report nothing.
			return nil
		}
		if se.Info.Expiry != 0 && se.Info.Expiry <= now {
			st.ExpiredSessions++
			del.DeleteSession(se.ClientID)
			return nil
		}
		st.Sessions++
		st.Subscriptions += len(se.Subs)
		st.Inflight += len(se.Inflight)
		st.QoS2In += len(se.QoS2In)
		if l.Session != nil {
			return l.Session(se)
		}
		return nil
	}
	for ok := it.First(); ok; {
		k := it.Key()
		cid, sub, rest, valid := parseSessionKey(k)
		if !valid {
			return fmt.Errorf("store: session key %q: %w", k, errCorrupt)
		}
		if cur == nil || cur.ClientID != string(cid) {
			if err := flush(); err != nil {
				return err
			}
			cur = &Session{ClientID: string(cid)}
			hasHeader = false
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: session %q: %w", cid, err)
		}
		switch sub {
		case subHeader:
			if err := decodeHeader(v, &cur.Info); err != nil {
				return fmt.Errorf("store: session %q: %w", cid, err)
			}
			cur.Info.Props = append([]byte(nil), cur.Info.Props...)
			hasHeader = true
		case subSub:
			sb := Subscription{Filter: append([]byte(nil), rest...)}
			if err := decodeSub(v, &sb); err != nil {
				return fmt.Errorf("store: session %q: %w", cid, err)
			}
			cur.Subs = append(cur.Subs, sb)
			cur.MaxGroup = max(cur.MaxGroup, sb.Group)
		case subInflight:
			if len(rest) != 2 {
				return fmt.Errorf("store: session %q in-flight key: %w", cid, errCorrupt)
			}
			qos, retain, pubrel, id, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("store: session %q: %w", cid, err)
			}
			f := Inflight{PacketID: binary.BigEndian.Uint16(rest), QoS: qos, Retain: retain, MsgID: id, Group: entryGroup(v)}
			cur.MaxGroup = max(cur.MaxGroup, f.Group)
			if pubrel {
				f.State = PubrelSent
			}
			if m, ok, err := s.message(id); err != nil {
				return err
			} else if ok {
				f.Message = m
			}
			cur.Inflight = append(cur.Inflight, f)
		case subQoS2In:
			if len(rest) != 2 {
				return fmt.Errorf("store: session %q QoS 2 key: %w", cid, errCorrupt)
			}
			cur.QoS2In = append(cur.QoS2In, binary.BigEndian.Uint16(rest))
		case subQueue:
			// The queue stays on disk: note its ends and its bytes (the
			// sizes its entries recorded; no message is read).
			if len(rest) != 8 {
				return fmt.Errorf("store: session %q queue key: %w", cid, errCorrupt)
			}
			if _, _, _, _, err := decodeEntry(v); err != nil {
				return fmt.Errorf("store: session %q: %w", cid, err)
			}
			pos := binary.BigEndian.Uint64(rest)
			if cur.QueueHead == 0 {
				cur.QueueHead = pos
			}
			cur.QueueTail = pos
			cur.QueueBytes += entrySize(v)
			if g := entryGroup(v); g != 0 {
				cur.QueueGroups++
				cur.MaxGroup = max(cur.MaxGroup, g)
			}
		}
		ok = it.Next()
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: sessions: %w", err)
	}
	return flush()
}

func (s *Store) loadWills(l Loader, st *LoadStats) error {
	it, err := s.iter(prefixWill)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) < 3 || int(binary.BigEndian.Uint16(k[1:])) != len(k)-3 {
			return fmt.Errorf("store: will key %q: %w", k, errCorrupt)
		}
		cid := string(k[3:])
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: will %q: %w", cid, err)
		}
		var w Will
		if err := decodeWill(v, &w); err != nil {
			return fmt.Errorf("store: will %q: %w", cid, err)
		}
		w.Message = cloneMessage(w.Message)
		st.Wills++
		if l.Will != nil {
			if err := l.Will(cid, w); err != nil {
				return err
			}
		}
	}
	return it.Error()
}

// message reads message record id as an owned copy. Caller holds dbMu.
func (s *Store) message(id uint64) (Message, bool, error) {
	var k [9]byte
	v, c, err := s.db.Get(messageKey(k[:0], id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("store: message %d: %w", id, err)
	}
	defer c.Close()
	var m Message
	if err := decodeMessage(v, &m); err != nil {
		return Message{}, false, fmt.Errorf("store: message %d: %w", id, err)
	}
	return cloneMessage(m), true, nil
}

// Queue appends to dst up to max queued messages of cid at positions after
// pos, in order, with owned message copies. Entries whose message expired
// or is missing are skipped and their Dequeue is submitted. It reads what is
// committed (Committed), so page after the session's last Enqueue is
// committed. Blocks on I/O (a few reads): call it off the loops, or accept
// one short read per page.
func (s *Store) Queue(cid string, after uint64, max int, dst []Queued) ([]Queued, error) {
	s.flushForRead() // the commit window holds what is committed but not yet in pebble
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	lo := queueKey(nil, cid, after+1)
	if after == ^uint64(0) {
		return dst, nil
	}
	hi := sessionKey(nil, cid, subQueue+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return dst, fmt.Errorf("store: %w", err)
	}
	defer it.Close()
	now := s.opts.Now().UnixMilli()
	var drop *Batch
	for ok := it.First(); ok && max > 0; ok = it.Next() {
		_, _, rest, valid := parseSessionKey(it.Key())
		if !valid || len(rest) != 8 {
			return dst, fmt.Errorf("store: queue key %q: %w", it.Key(), errCorrupt)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return dst, fmt.Errorf("store: queue %q: %w", cid, err)
		}
		qos, retain, _, id, err := decodeEntry(v)
		if err != nil {
			return dst, fmt.Errorf("store: queue %q: %w", cid, err)
		}
		pos := binary.BigEndian.Uint64(rest)
		m, found, err := s.message(id)
		if err != nil {
			return dst, err
		}
		if !found || (m.Expiry != 0 && m.Expiry <= now) {
			if drop == nil {
				drop = NewBatch()
			}
			drop.Dequeue(cid, pos, id)
			continue
		}
		dst = append(dst, Queued{Pos: pos, QoS: qos, Retain: retain, MsgID: id, Group: entryGroup(v), Message: m})
		max--
	}
	if drop != nil {
		if _, err := s.Submit(drop); err != nil {
			drop.release()
		}
	}
	return dst, it.Error()
}

// Message reads the shared message record id (an owned copy); ok is false
// when there is none. Safe from any goroutine; blocks on I/O.
func (s *Store) Message(id uint64) (m Message, ok bool, err error) {
	s.flushForRead()
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.message(id)
}

// pageReq is a queue page wanted by a loop.
type pageReq struct {
	cid   string
	after uint64
	max   int
	done  func([]Queued, error)
}

// RequestQueue pages cid's queue like Queue, on the store's reader
// goroutine, and calls done there with the result (post it to the loop's
// mailbox). It never blocks: a full request queue returns ErrQueueFull.
// Safe from any goroutine; this is the call for an event loop.
func (s *Store) RequestQueue(cid string, after uint64, max int, done func([]Queued, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.pages <- pageReq{cid, after, max, done}:
		return nil
	default:
		return ErrQueueFull
	}
}

// reader is the goroutine that serves RequestQueue.
func (s *Store) reader() {
	defer close(s.readerDone)
	for {
		select {
		case r := <-s.pages:
			page, err := s.Queue(r.cid, r.after, r.max, nil)
			r.done(page, err)
		case <-s.quit:
			return
		}
	}
}
