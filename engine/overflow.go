package engine

// controlOverflow ends a connection that keeps asking for answers (PINGREQ,
// QoS 1/2 PUBLISH, SUBSCRIBE...) without reading them: its unsent bytes
// reached twice MaxOutboundBytes. Messages to it are already dropped or
// queued at MaxOutboundBytes, so only control packets can get it this far,
// and each costs the attacker no more than it costs us: without this
// bound, gnet's unbounded outbound buffer would grow at the rate the peer
// can send until SlowConsumerAfter. It is counted as a slow consumer.
// Runs on c's loop.
func (c *conn) controlOverflow() {
	if c.closeReason == closeSlowConsumer || !c.open {
		return // already on its way out
	}
	c.closeReason = closeSlowConsumer
	c.l.stats.slowConsumers.Add(1)
	b := c.l.b
	if b.logLimiter.allow(b.now.Load()) {
		b.log.Warn("closing connection: it does not read its acknowledgements", "remote", c.remote(),
			"client", c.s.id, "unsent_bytes", 2*b.opts.MaxOutboundBytes)
	}
	_ = c.gc.Close()
}
