package engine

import (
	"encoding/binary"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
	"github.com/tinymq/tinymq/topic"
)

// recover rebuilds what the store holds: retained messages into the
// retained index, persistent sessions (offline) into the session index
// with their subscriptions in the trie, their in-flight messages, inbound
// QoS 2 ids and queues, and pending delayed wills for the loops' ticks.
// It logs what it found and how long it took. Runs in New, before the
// listeners open (blocks on I/O).
func (b *Broker) recover() error {
	p := b.ps
	now := time.Now()
	nowMs := now.UnixMilli()
	now32 := uint32(now.Unix())
	var (
		nQueued, dropped int
		// One message per store message id, as before the restart: a
		// message queued for many sessions is loaded once.
		shared = map[uint64]*message{}
	)
	msgOf := func(id uint64, m *store.Message) *message {
		if x := shared[id]; x != nil {
			return x
		}
		x := storedMessage(m)
		shared[id] = x
		return x
	}
	stats, err := p.st.Load(store.Loader{
		Retained: func(m store.Message) error {
			b.retained.Set(m.Topic, newMessage(m.Topic, m.Payload, m.Props, m.QoS, true, expirySecond(m.Expiry)))
			return nil
		},
		Session: func(rs *store.Session) error {
			since := now32
			s := &session{id: rs.ClientID, version: codec.Version(rs.Info.ProtocolVersion), persisted: true}
			st := s.state()
			if s.version == codec.V5 {
				exp := neverExpires
				switch {
				case rs.Info.Expiry != 0: // offline: what was left of it
					exp = uint32(max((rs.Info.Expiry-nowMs+999)/1000, 1))
				case len(rs.Info.Props) == 4: // online at a crash: counted from now
					exp = binary.BigEndian.Uint32(rs.Info.Props)
				}
				st.v5 = &sess5{expiry: exp} // the rest comes with the next CONNECT
			} else if e := b.opts.SessionExpiry; e > 0 && rs.Info.Expiry != 0 {
				// 3.1.1 --session-expiry counts from when it went offline,
				// which the deadline says (an online one counts from now).
				since = uint32(max(rs.Info.Expiry/1000-int64(e.Seconds()), 1))
			}
			// Group tags map stored entries to their shared group
			// (shared.go): each shared subscription finds its group's id
			// again here. One stored before tags existed gets a new tag.
			st.lastTag = rs.MaxGroup
			retag := 0
			for _, sub := range rs.Subs {
				e := subEntry{filter: string(sub.Filter), qos: sub.QoS, opts: sub.Options, id: sub.ID, tag: sub.Group}
				_, e.grp = b.subs.SubscribeGroup(e.filter, topic.Sub[*session]{Key: s, QoS: e.qos, ID: e.id, Opts: e.opts})
				if e.grp != 0 && e.tag == 0 {
					st.lastTag++
					e.tag = st.lastTag
					retag++
				}
				s.subs = append(s.subs, e)
			}
			if retag > 0 {
				bt := p.begin()
				for i := range s.subs {
					if e := &s.subs[i]; e.tag > rs.MaxGroup {
						bt.SetSubscription(s.id, &store.Subscription{Filter: []byte(e.filter), QoS: e.qos, Options: e.opts, ID: e.id, Group: e.tag})
					}
				}
				p.end(nil)
			}
			var gone *store.Batch
			for _, f := range rs.Inflight {
				rel := f.State == store.PubrelSent
				m := &message{}
				if f.Message.Topic != nil {
					m = msgOf(f.MsgID, &f.Message)
				} else if !rel {
					// Its message record is missing: nothing to re-send.
					if gone == nil {
						gone = p.begin()
					}
					gone.DeleteInflight(s.id, f.PacketID, f.MsgID)
					dropped++
					continue
				}
				st.inflight = append(st.inflight, inflight{m: m, id: f.PacketID, qos: f.QoS, retain: f.Retain, rel: rel, mid: f.MsgID,
					sid: subID(s, m.topic), grp: s.groupOf(f.Group)})
				s.lastID = max(s.lastID, f.PacketID)
			}
			if gone != nil {
				p.end(nil)
			}
			st.qos2in = append(st.qos2in, rs.QoS2In...)
			st.qTail = rs.QueueTail
			if rs.QueueTail != 0 {
				// The queue stays in the store until its client is back
				// (persist_queue.go).
				st.spill = spill{on: true, after: rs.QueueHead - 1, groups: rs.QueueGroups}
				st.dBytes = int(min(rs.QueueBytes, int64(^uint(0)>>1)))
				nQueued += int(rs.QueueTail - rs.QueueHead + 1)
			}
			s.since = since
			b.sessions.Put(s)
			return nil
		},
		Will: func(cid string, w store.Will) error {
			s := b.sessions.Get(cid)
			if s == nil {
				// The session ended (expired) with its will still due:
				// a session of its own, outside the index, carries it.
				s = &session{id: cid, version: codec.V5, since: now32}
			}
			v := s.v5()
			if v == nil {
				v = &sess5{}
				s.state().v5 = v
			}
			m := storedMessage(&w.Message)
			m.expiry = 0
			if w.Message.Expiry != 0 {
				// Stored as the deadline it has once published
				// (persistWill); an interval until then (will5).
				m.expiry = uint32(max((w.Message.Expiry-w.Deadline+999)/1000, 1))
			}
			v.dwill = m
			p.wills = append(p.wills, recoveredWill{s: s, m: m, due: w.Deadline})
			p.hasWills.Store(true)
			return nil
		},
	})
	if err != nil {
		return err
	}
	for _, line := range p.st.WALReplay() {
		// Where pebble's replay of each write-ahead log stopped: at its
		// end, or at the last good record before a torn or corrupt tail.
		b.log.Info("store write-ahead log replayed", "dir", p.dir, "pebble", line)
	}
	b.log.Info("store recovered", "dir", p.dir, "fsync", p.fsync.String(),
		"retained", stats.Retained, "sessions", stats.Sessions, "subscriptions", stats.Subscriptions,
		"queued", nQueued, "inflight", stats.Inflight, "qos2_in", stats.QoS2In, "wills", stats.Wills,
		"expired_retained", stats.ExpiredRetained, "expired_sessions", stats.ExpiredSessions,
		"inflight_without_message", dropped, "duration", stats.Duration.Round(time.Microsecond).String())
	return nil
}

// storedMessage is an owned message from a store record.
func storedMessage(m *store.Message) *message {
	return newMessage(m.Topic, m.Payload, m.Props, m.QoS, m.Retain, expirySecond(m.Expiry))
}

// expirySecond turns the store's unix-millisecond deadline into a
// message's unix second (rounded up; 0 stays never).
func expirySecond(ms int64) uint32 {
	if ms <= 0 {
		return 0
	}
	return uint32(min((ms+999)/1000, 1<<32-1))
}

// subID is the MQTT 5 subscription identifier a recovered message gets:
// the store keeps none per entry, so it is that of the session's first
// subscription with an identifier that matches the topic (0: none).
func subID(s *session, topicName []byte) uint32 {
	if len(topicName) == 0 {
		return 0
	}
	for i := range s.subs {
		e := &s.subs[i]
		if e.id == 0 {
			continue
		}
		f := []byte(e.filter)
		if _, inner, ok := topic.SplitShared(f); ok {
			f = inner
		}
		if topic.MatchFilter(f, topicName) {
			return e.id
		}
	}
	return 0
}
