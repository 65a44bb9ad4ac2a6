package engine

import (
	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// onSubscribe handles SUBSCRIBE: one SUBACK code per filter, in order
// [MQTT-3.8.4-1] [MQTT-3.8.4-5], then the retained messages of each new
// subscription [MQTT-3.3.1-6] (v5: as its Retain Handling says). Runs on
// c's loop.
func (c *conn) onSubscribe(h codec.FixedHeader, body []byte) error {
	l := c.l
	b := l.b
	p := &l.sub
	if err := p.Decode(c.version, h, body); err != nil {
		return err
	}
	v5 := c.version == codec.V5
	var sid uint32
	if v5 && len(p.Props.SubscriptionIDs) > 0 {
		sid = p.Props.SubscriptionIDs[0] // one per SUBSCRIBE (the codec refuses a second)
	}
	for i := range p.Subs {
		sub := &p.Subs[i]
		if len(sub.Filter) == 0 {
			return errEmptyFilter // [MQTT-4.7.3-1]: close, as Mosquitto does, before acting on any filter
		}
		if _, _, shared := topic.SplitShared(sub.Filter); shared && sub.NoLocal {
			return errSharedNoLocal // [MQTT5-3.8.3-4]
		}
	}
	s := c.s
	perms := c.permissions()
	codes := l.codes[:0]
	news := l.newSubs[:0]
	fail := func(v5rc codec.ReasonCode) {
		if !v5 {
			v5rc = codec.ReasonCode(codec.SubackFailure)
		}
		codes = append(codes, v5rc)
		news = append(news, false)
	}
	for i := range p.Subs {
		sub := &p.Subs[i]
		if err := topic.ValidateFilter(sub.Filter, b.limits); err != nil {
			fail(codec.TopicFilterInvalid)
			continue
		}
		if perms != nil && !perms.CanSubscribe(sub.Filter) {
			// Nothing the identity may read can come through this filter.
			l.stats.aclDenied[aclSubscribe].Add(1)
			fail(codec.NotAuthorized)
			if b.opts.Verbose {
				b.log.Info("subscribe denied", "client", s.id, "user", c.username(), "filter", string(sub.Filter))
			}
			continue
		}
		granted := min(sub.QoS, 2) // [MQTT-3.8.4-6]
		var opts uint8
		if sub.NoLocal {
			opts |= codec.SubOptNoLocal
		}
		if sub.RetainAsPublished {
			opts |= codec.SubOptRetainAsPublished
		}
		opts |= c.bridgeSubOpts(sub.Filter)
		s.mu.Lock()
		i := s.subIndex(sub.Filter)
		full := i < 0 && b.opts.MaxSubsPerConn > 0 && len(s.subs) >= b.opts.MaxSubsPerConn
		var filter string // one copy, shared by the session and the tree
		switch {
		case i >= 0:
			s.subs[i].qos, s.subs[i].opts, s.subs[i].id = granted, opts, sid
			filter = s.subs[i].filter
			b.persistSub(s, &s.subs[i]) // persist.go
		case !full:
			filter = string(sub.Filter)
			s.subs = append(s.subs, s.newSubEntry(filter, granted, opts, sid))
			b.persistSub(s, &s.subs[len(s.subs)-1]) // persist.go
		}
		s.mu.Unlock()
		if full {
			fail(codec.QuotaExceeded)
			continue
		}
		// An identical filter replaces the previous subscription
		// [MQTT-3.8.4-3]; Subscribe copies the filter.
		_, grp := b.subs.SubscribeGroup(filter, topic.Sub[*session]{Key: s, QoS: granted, ID: sid, Opts: opts})
		s.mu.Lock()
		dead := s.dead
		if j := s.subIndex(sub.Filter); j >= 0 {
			// What stored entries map their group tag to (shared.go). A
			// message the group delivered before this line records no
			// tag: it is still handed on from memory, not from the store.
			s.subs[j].grp = grp
		}
		s.mu.Unlock()
		if dead { // discarded by a takeover meanwhile: leave nothing behind
			b.subs.Unsubscribe(sub.Filter, s)
		}
		codes = append(codes, codec.ReasonCode(granted))
		news = append(news, i < 0)
		if b.opts.Verbose {
			b.log.Info("subscribe", "client", s.id, "filter", string(sub.Filter), "qos", granted)
		}
	}
	l.codes, l.newSubs = codes, news
	ack := codec.Suback{PacketID: p.PacketID, Reasons: codes}
	s.mu.Lock()
	s.buf().B = ack.AppendTo(s.buf().B, c.version) // [MQTT-3.8.4-4]
	s.mu.Unlock()
	l.r.markDirty(s, l)

	now := b.now.Load()
	for i := range p.Subs {
		sub := &p.Subs[i]
		if codes[i] >= 0x80 {
			continue
		}
		if _, _, shared := topic.SplitShared(sub.Filter); shared {
			continue // shared subscriptions get no retained messages
		}
		switch {
		case sub.RetainHandling == 2:
			continue // 5.0: no retained messages at subscribe
		case sub.RetainHandling == 1 && !news[i]:
			continue // 5.0: only for a new subscription
		}
		granted := uint8(codes[i])
		expired := l.expiredScratch[:0]
		b.retained.Match(sub.Filter, func(t string, m *message) bool {
			if m.expired(now) {
				expired = append(expired, t)
				return true
			}
			l.r.deliverMessage(s, m, min(m.qos, granted), true, sid) // retain flag set [MQTT-3.3.1-8]
			return true
		})
		for _, t := range expired {
			b.dropExpiredRetained(t, now)
		}
		clear(expired)
		l.expiredScratch = expired[:0]
	}
	return nil
}

var errSharedNoLocal = &codec.Error{Code: codec.ProtocolError, Msg: "No Local on a shared subscription"}

// dropExpiredRetained deletes a retained message whose message expiry
// passed (5.0 §3.3.2.3.3), unless it was replaced meanwhile. Any
// goroutine.
func (b *Broker) dropExpiredRetained(t string, now int64) {
	if m, ok := b.retained.Get([]byte(t)); ok && m.expired(now) {
		b.retained.Delete([]byte(t))
		b.persistRetained([]byte(t), nil) // persist.go
	}
}

var errEmptyFilter = &codec.Error{Code: codec.ProtocolError, Msg: "zero-length topic filter"}

// onUnsubscribe handles UNSUBSCRIBE; UNSUBACK is sent even when nothing
// matched [MQTT-3.10.4-5]. Runs on c's loop.
func (c *conn) onUnsubscribe(h codec.FixedHeader, body []byte) error {
	l := c.l
	b := l.b
	p := &l.unsub
	if err := p.Decode(c.version, h, body); err != nil {
		return err
	}
	for _, f := range p.Filters {
		if len(f) == 0 {
			return errEmptyFilter // [MQTT-4.7.3-1]
		}
	}
	s := c.s
	codes := l.codes[:0]
	for _, f := range p.Filters {
		if topic.ValidateFilter(f, b.limits) != nil {
			codes = append(codes, codec.TopicFilterInvalid)
			continue
		}
		s.mu.Lock()
		i := s.subIndex(f)
		ok := i >= 0
		if ok {
			last := len(s.subs) - 1
			s.subs[i] = s.subs[last]
			s.subs[last] = subEntry{}
			s.subs = s.subs[:last]
			b.persistUnsub(s, f) // persist.go
		}
		s.mu.Unlock()
		if ok {
			b.subs.Unsubscribe(f, s) // [MQTT-3.10.4-1]
			codes = append(codes, codec.Success)
		} else {
			codes = append(codes, codec.NoSubscriptionExisted) // 5.0: 0x11
		}
	}
	l.codes = codes
	ack := codec.Unsuback{PacketID: p.PacketID}
	if c.version == codec.V5 {
		ack.Reasons = codes // [MQTT5-3.11.3-1]: one per filter, in order
	}
	s.mu.Lock()
	s.buf().B = ack.AppendTo(s.buf().B, c.version) // [MQTT-3.10.4-4]
	s.mu.Unlock()
	l.r.markDirty(s, l)
	return nil
}
