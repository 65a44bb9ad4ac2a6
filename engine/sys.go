package engine

import (
	"math"
	"strconv"
	"time"
)

// Stats is a snapshot of the broker's counters. Any goroutine.
type Stats struct {
	Connected, MaxConnected int64
	TotalConnections        uint64
	Rejected                uint64
	Sessions                int // online and persistent offline sessions
	Subscriptions           int
	Retained                int
	MsgsIn, MsgsOut         uint64
	BytesIn, BytesOut       uint64
	SocketWrites            uint64 // writes of sessions' output to their sockets (one per flush)
	Dropped                 uint64
	DroppedSlow             uint64
	DroppedQueueFull        uint64
	DroppedTooLarge         uint64 // v5 deliveries over the reader's Maximum Packet Size (not sent)
	Malformed, Oversize     uint64
	ConnectTimeouts         uint64
	KeepAliveTimeouts       uint64
	SlowConsumerDisconnects uint64
	AuthFailures            uint64
	SessionsExpired         uint64
	RateDeferred            uint64 // connections deferred by --max-conn-rate
	RateRefused             uint64 // connections refused by it (no token within the connect timeout)
}

// Stats sums the per-loop counters. Any goroutine.
func (b *Broker) Stats() Stats {
	st := Stats{
		Connected:        b.counters.connected.Load(),
		MaxConnected:     b.counters.maxConnected.Load(),
		TotalConnections: b.counters.totalConns.Load(),
		Rejected:         b.counters.rejected.Load(),
		SessionsExpired:  b.counters.expired.Load(),
		Subscriptions:    b.subs.Count(),
		Retained:         b.retained.Count(),
	}
	if b.rate != nil {
		st.RateDeferred, st.RateRefused = b.rate.deferred.Load(), b.rate.refused.Load()
	}
	b.sessMu.Lock()
	st.Sessions = b.sessions.Len()
	b.sessMu.Unlock()
	add := func(c *counters) {
		st.MsgsIn += c.msgsIn.Load()
		st.MsgsOut += c.msgsOut.Load()
		st.BytesIn += c.bytesIn.Load()
		st.BytesOut += c.bytesOut.Load()
		st.SocketWrites += c.writes.Load()
		st.Dropped += c.dropped.Load()
		st.DroppedSlow += c.droppedSlow.Load()
		st.DroppedQueueFull += c.droppedQueueFull.Load()
		st.DroppedTooLarge += c.tooLarge.Load()
		st.Malformed += c.malformed.Load()
		st.Oversize += c.oversize.Load()
		st.ConnectTimeouts += c.connectTimeouts.Load()
		st.KeepAliveTimeouts += c.keepAliveTimeouts.Load()
		st.SlowConsumerDisconnects += c.slowConsumers.Load()
		st.AuthFailures += c.authFailures.Load()
	}
	add(&b.sysStats)
	for _, l := range b.allLoops() {
		add(&l.stats)
	}
	return st
}

// loadAvg is one Mosquitto-style load figure: an exponentially weighted
// moving average of a per-minute rate over 1, 5 and 15 minutes.
type loadAvg struct {
	last uint64
	avg  [3]float64
}

var loadWindows = [3]float64{60, 300, 900}

func (a *loadAvg) update(total uint64, interval float64) {
	rate := float64(total-a.last) * 60 / interval // per minute
	a.last = total
	for i, w := range loadWindows {
		k := math.Exp(-interval / w)
		a.avg[i] = a.avg[i]*k + rate*(1-k)
	}
}

// runSys publishes the $SYS tree every SysInterval, retained, as Mosquitto
// does. It is the one broker goroutine that routes outside a loop: every
// delivery goes through the destination loop's mailbox.
func (b *Broker) runSys() {
	defer close(b.sysDone)
	t := time.NewTicker(b.opts.SysInterval)
	defer t.Stop()
	var load struct{ msgsIn, msgsOut, bytesIn, bytesOut, conns loadAvg }
	interval := b.opts.SysInterval.Seconds()
	b.publishSys()
	for {
		select {
		case <-b.stopSys:
			return
		case <-t.C:
		}
		st := b.Stats()
		load.msgsIn.update(st.MsgsIn, interval)
		load.msgsOut.update(st.MsgsOut, interval)
		load.bytesIn.update(st.BytesIn, interval)
		load.bytesOut.update(st.BytesOut, interval)
		load.conns.update(st.TotalConnections, interval)
		b.publishSys()
		pub := b.sysPublisher()
		names := [3]string{"1min", "5min", "15min"}
		for i, n := range names {
			pub("load/messages/received/"+n, fmtFloat(load.msgsIn.avg[i]))
			pub("load/messages/sent/"+n, fmtFloat(load.msgsOut.avg[i]))
			pub("load/bytes/received/"+n, fmtFloat(load.bytesIn.avg[i]))
			pub("load/bytes/sent/"+n, fmtFloat(load.bytesOut.avg[i]))
			pub("load/connections/"+n, fmtFloat(load.conns.avg[i]))
		}
		b.sys.finish()
	}
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// sysPublisher returns a function publishing one retained $SYS/broker value.
// $SYS goroutine only.
func (b *Broker) sysPublisher() func(name, value string) {
	return func(name, value string) {
		t := []byte("$SYS/broker/" + name)
		m := cloneMessage(t, []byte(value), 0, true)
		b.sys.publish(m.topic, m.payload, 0, true, m)
	}
}

// publishSys publishes the counters. $SYS goroutine only.
func (b *Broker) publishSys() {
	st := b.Stats()
	pub := b.sysPublisher()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	pub("version", b.opts.Version)
	pub("uptime", strconv.FormatInt(int64(time.Since(b.started).Seconds()), 10)+" seconds")
	pub("clients/connected", i(st.Connected))
	pub("clients/active", i(st.Connected))
	pub("clients/disconnected", i(max(int64(st.Sessions)-st.Connected, 0)))
	pub("clients/total", i(int64(st.Sessions)))
	pub("clients/maximum", i(st.MaxConnected))
	pub("messages/received", u(st.MsgsIn))
	pub("messages/sent", u(st.MsgsOut))
	pub("messages/dropped", u(st.Dropped))
	pub("publish/messages/dropped", u(st.Dropped))
	pub("bytes/received", u(st.BytesIn))
	pub("bytes/sent", u(st.BytesOut))
	pub("subscriptions/count", i(int64(st.Subscriptions)))
	pub("retained messages/count", i(int64(st.Retained)))
	b.publishBridgeSys(pub)
	b.sys.finish()
}
