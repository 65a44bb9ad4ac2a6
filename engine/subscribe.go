package engine

import (
	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// onSubscribe handles SUBSCRIBE: one SUBACK code per filter, in order
// [MQTT-3.8.4-1] [MQTT-3.8.4-5], then the retained messages of each new
// subscription [MQTT-3.3.1-6]. Runs on c's loop.
func (c *conn) onSubscribe(h codec.FixedHeader, body []byte) error {
	l := c.l
	b := l.b
	p := &l.sub
	if err := p.Decode(c.version, h, body); err != nil {
		return err
	}
	for i := range p.Subs {
		if len(p.Subs[i].Filter) == 0 {
			return errEmptyFilter // [MQTT-4.7.3-1]: close, as Mosquitto does, before acting on any filter
		}
	}
	s := c.s
	perms := c.permissions()
	codes := l.codes[:0]
	for i := range p.Subs {
		sub := &p.Subs[i]
		if err := topic.ValidateFilter(sub.Filter, b.limits); err != nil {
			codes = append(codes, codec.ReasonCode(codec.SubackFailure))
			continue
		}
		if perms != nil && !perms.CanSubscribe(sub.Filter) {
			// Nothing the identity may read can come through this filter.
			l.stats.aclDenied[aclSubscribe].Add(1)
			codes = append(codes, codec.ReasonCode(codec.SubackFailure))
			if b.opts.Verbose {
				b.log.Info("subscribe denied", "client", s.id, "user", c.username(), "filter", string(sub.Filter))
			}
			continue
		}
		granted := min(sub.QoS, 2) // [MQTT-3.8.4-6]
		s.mu.Lock()
		i := s.subIndex(sub.Filter)
		full := i < 0 && b.opts.MaxSubsPerConn > 0 && len(s.subs) >= b.opts.MaxSubsPerConn
		var filter string // one copy, shared by the session and the tree
		switch {
		case i >= 0:
			s.subs[i].qos = granted
			filter = s.subs[i].filter
		case !full:
			filter = string(sub.Filter)
			s.subs = append(s.subs, subEntry{filter: filter, qos: granted})
		}
		s.mu.Unlock()
		if full {
			codes = append(codes, codec.ReasonCode(codec.SubackFailure))
			continue
		}
		// An identical filter replaces the previous subscription
		// [MQTT-3.8.4-3]; Subscribe copies the filter.
		b.subs.SubscribeString(filter, topic.Sub[*session]{Key: s, QoS: granted})
		s.mu.Lock()
		dead := s.dead
		s.mu.Unlock()
		if dead { // discarded by a takeover meanwhile: leave nothing behind
			b.subs.Unsubscribe(sub.Filter, s)
		}
		codes = append(codes, codec.ReasonCode(granted))
		if b.opts.Verbose {
			b.log.Info("subscribe", "client", s.id, "filter", string(sub.Filter), "qos", granted)
		}
	}
	l.codes = codes
	ack := codec.Suback{PacketID: p.PacketID, Reasons: codes}
	s.mu.Lock()
	s.buf().B = ack.AppendTo(s.buf().B, c.version) // [MQTT-3.8.4-4]
	s.mu.Unlock()
	l.r.markDirty(s, l)

	for i := range p.Subs {
		if codes[i] == codec.ReasonCode(codec.SubackFailure) {
			continue
		}
		if _, _, shared := topic.SplitShared(p.Subs[i].Filter); shared {
			continue // shared subscriptions get no retained messages
		}
		granted := uint8(codes[i])
		b.retained.Match(p.Subs[i].Filter, func(_ string, m *message) bool {
			l.r.deliverMessage(s, m, min(m.qos, granted), true) // retain flag set [MQTT-3.3.1-8]
			return true
		})
	}
	return nil
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
	for _, f := range p.Filters {
		s.mu.Lock()
		i := s.subIndex(f)
		ok := i >= 0
		if ok {
			last := len(s.subs) - 1
			s.subs[i] = s.subs[last]
			s.subs[last] = subEntry{}
			s.subs = s.subs[:last]
		}
		s.mu.Unlock()
		if ok {
			b.subs.Unsubscribe(f, s) // [MQTT-3.10.4-1]
		}
	}
	ack := codec.Unsuback{PacketID: p.PacketID}
	s.mu.Lock()
	s.buf().B = ack.AppendTo(s.buf().B, c.version) // [MQTT-3.10.4-4]
	s.mu.Unlock()
	l.r.markDirty(s, l)
	return nil
}
