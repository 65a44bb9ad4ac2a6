package engine

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Per-source connection-rate limit (Options.MaxConnRate, --max-conn-rate).
//
// Each source address has a token bucket of MaxConnBurst tokens refilled at
// MaxConnRate per second, kept as a GCRA "theoretical arrival time" (one
// int64 per source, refilled lazily on access: no ticker, no goroutine).
// IPv4 sources are keyed by address, IPv6 sources by their /64 prefix (one
// host owns a whole /64, so per-address keys would give it 2^64 buckets).
//
// Over the rate a connection is deferred, not refused: the socket is
// accepted and stays open, its bytes are buffered by gnet, and its CONNECT
// is not processed until the time its token falls due (the bucket hands out
// those times in arrival order, so a source's storm is served first come,
// first served at exactly the configured rate). The loop's tick releases
// the due connections (within one tick of their time) by waking them, and
// their buffered CONNECT goes through as if it had just arrived. A
// reconnect storm is absorbed: every client gets in within
// (its place in the queue)/rate + one tick, without a retry, and the
// broker's CPU spent on CONNECTs, authentication and session setup is
// spread at the configured rate instead of piling up while clients time out
// and retry. A connection whose token would fall due later than the connect
// timeout allows (it would be closed by the connect timeout anyway, and
// waste a token) is refused at once and counted: the deferred set of one
// source is so bounded by rate × connect timeout + burst. A deferred
// connection that closes before its turn gives its token back.
//
// Memory is bounded whatever the number of sources: a fixed table of
// rateShards × rateWays entries (4,096, 96 KiB), sharded by a seeded hash
// of the key, one mutex per shard (OnOpen runs on any loop). A full shard
// evicts an idle entry (its bucket is full again, so forgetting it changes
// nothing); when none is idle (more busy sources than the table holds: an
// attacker with many addresses) it evicts the entry with the least debt,
// and the newcomer starts with an empty bucket rather than a full one, so
// cycling through addresses earns no bursts.
type connRate struct {
	interval int64 // ns per token (1/rate)
	tau      int64 // burst tolerance: (burst-1) × interval
	maxWait  int64 // ns: a connection that would wait longer is refused
	base     time.Time
	seed     [2]uint64

	deferred atomic.Uint64 // connections parked until their token fell due
	refused  atomic.Uint64 // connections closed at once: no token within the connect timeout
	evicted  atomic.Uint64 // busy entries evicted (table pressure)

	shards [rateShards]rateShard
}

const (
	rateShards = 256
	rateWays   = 16
)

type rateShard struct {
	mu sync.Mutex
	n  int
	e  [rateWays]rateEntry
	_  [48]byte // 448 bytes: neighbouring shards' locks rarely share a cache line
}

// rateEntry is one source's bucket: key and theoretical arrival time (ns
// since connRate.base; the bucket is full when tat <= now).
type rateEntry struct {
	hi, lo uint64
	tat    int64
}

// rateKey identifies a source: IPv4 by address, IPv6 by /64.
type rateKey struct{ hi, lo uint64 }

// newConnRate builds the limiter, nil when MaxConnRate is 0 (off).
func newConnRate(o Options) *connRate {
	if o.MaxConnRate <= 0 {
		return nil
	}
	burst := o.MaxConnBurst
	if burst <= 0 {
		burst = max(int(o.MaxConnRate), 1)
	}
	r := &connRate{
		interval: max(int64(float64(time.Second)/o.MaxConnRate), 1),
		base:     time.Now(),
	}
	r.tau = int64(burst-1) * r.interval
	// The released connection still needs its CONNECT handled before the
	// connect deadline (at least ConnectTimeout after the open): leave one
	// tick for the release.
	r.maxWait = max(int64(o.ConnectTimeout-tickInterval), 0)
	var s [16]byte
	_, _ = rand.Read(s[:])
	r.seed = [2]uint64{binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:])}
	return r
}

// now is the limiter's clock: monotonic nanoseconds since it was built.
func (r *connRate) now() int64 { return int64(time.Since(r.base)) }

// keyOf maps a remote address to its bucket key; ok is false for an
// address that is not IP (never limited).
func keyOf(a net.Addr) (k rateKey, ok bool) {
	ta, isTCP := a.(*net.TCPAddr)
	if !isTCP {
		return k, false
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return rateKey{0, 0xffff<<32 | uint64(binary.BigEndian.Uint32(ip4))}, true
	}
	if len(ta.IP) == net.IPv6len {
		return rateKey{binary.BigEndian.Uint64(ta.IP[:8]), 1}, true // the /64; lo 1 keeps it apart from IPv4
	}
	return k, false
}

func (r *connRate) shard(k rateKey) *rateShard {
	h := mix64(k.hi^r.seed[0]) ^ mix64(k.lo^r.seed[1])
	return &r.shards[h%rateShards]
}

// mix64 is splitmix64's finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// reserve takes the next token of k's bucket at time now and returns how
// long the caller must wait for it (0: at once). ok is false, and nothing
// is taken, when the wait would exceed maxWait. Any goroutine.
func (r *connRate) reserve(k rateKey, now int64) (wait int64, ok bool) {
	sh := r.shard(k)
	sh.mu.Lock()
	e := sh.lookup(r, k, now)
	ready := max(now, e.tat-r.tau)
	if ready-now > r.maxWait {
		sh.mu.Unlock()
		return 0, false
	}
	e.tat = max(e.tat, now) + r.interval
	sh.mu.Unlock()
	return ready - now, true
}

// refund gives back a token reserved by a connection that closed before
// its turn. Any goroutine.
func (r *connRate) refund(k rateKey) {
	sh := r.shard(k)
	sh.mu.Lock()
	for i := 0; i < sh.n; i++ {
		if e := &sh.e[i]; e.hi == k.hi && e.lo == k.lo {
			e.tat = max(e.tat-r.interval, 0)
			break
		}
	}
	sh.mu.Unlock()
}

// lookup finds k's entry, inserting it (and evicting another when the
// shard is full). Caller holds sh.mu.
func (sh *rateShard) lookup(r *connRate, k rateKey, now int64) *rateEntry {
	for i := 0; i < sh.n; i++ {
		if e := &sh.e[i]; e.hi == k.hi && e.lo == k.lo {
			return e
		}
	}
	if sh.n < rateWays {
		e := &sh.e[sh.n]
		sh.n++
		*e = rateEntry{hi: k.hi, lo: k.lo} // tat 0: a full bucket
		return e
	}
	victim := &sh.e[0]
	for i := 1; i < rateWays; i++ {
		if e := &sh.e[i]; e.tat < victim.tat {
			victim = e
		}
	}
	tat := int64(0)
	if victim.tat > now {
		// No idle entry: every bucket here is in use. The newcomer starts
		// empty (its first connection goes in, the next waits a full
		// interval), so addresses cycled to evict entries earn no burst.
		tat = now + r.tau
		r.evicted.Add(1)
	}
	*victim = rateEntry{hi: k.hi, lo: k.lo, tat: tat}
	return victim
}

// parkedConn is a connection waiting for its token.
type parkedConn struct {
	c     *conn
	ready int64 // connRate clock
	key   rateKey
}

// admitRate applies the connection-rate limit to a new MQTT connection:
// gnet.None to keep it (at once, or parked until its token is due),
// gnet.Close to refuse it. Runs on c's loop (OnOpen); never blocks (one
// shard lock held for a table scan).
func (l *loop) admitRate(c *conn) gnet.Action {
	b := l.b
	r := b.rate
	k, ok := keyOf(c.gc.RemoteAddr())
	if !ok {
		return gnet.None
	}
	now := r.now()
	wait, ok := r.reserve(k, now)
	if !ok {
		r.refused.Add(1)
		c.closeReason = closeConnRate
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("connection refused: connection rate over limit, no slot within the connect timeout",
				"remote", c.remote(), "rate", b.opts.MaxConnRate, "burst", b.opts.MaxConnBurst)
		}
		return gnet.Close
	}
	if wait == 0 {
		return gnet.None
	}
	r.deferred.Add(1)
	c.parked = true
	l.parked = append(l.parked, parkedConn{c: c, ready: now + wait, key: k})
	if b.logLimiter.allow(b.now.Load()) {
		b.log.Warn("connection deferred: connection rate over limit", "remote", c.remote(),
			"wait", time.Duration(wait).Round(time.Millisecond).String(), "rate", b.opts.MaxConnRate)
	}
	return gnet.None
}

// parkedTraffic is OnTraffic for a deferred connection: its bytes stay in
// gnet's buffer until the token is due, up to one maximum packet (a client
// may pipeline after CONNECT, but not without bound); past that it is
// closed as oversize. Runs on c's loop.
func (l *loop) parkedTraffic(c *conn) gnet.Action {
	if c.gc.InboundBuffered() > l.b.opts.MaxPacketSize {
		l.stats.oversize.Add(1)
		c.closeReason = closeProtocolError
		return gnet.Close
	}
	return gnet.None
}

// releaseParked lets in the parked connections whose token is due: each is
// woken, so that gnet calls OnTraffic for the bytes it buffered meanwhile.
// A parked connection that closed gives its token back. Runs on l (tick).
func (l *loop) releaseParked() {
	if len(l.parked) == 0 {
		return
	}
	r := l.b.rate
	now := r.now()
	keep := l.parked[:0]
	for _, p := range l.parked {
		switch {
		case !p.c.open:
			r.refund(p.key)
		case p.ready <= now:
			p.c.parked = false
			_ = p.c.gc.Wake(nil) // OnTraffic on this loop, soon
		default:
			keep = append(keep, p)
		}
	}
	clear(l.parked[len(keep):])
	l.parked = keep
	if len(keep) == 0 && cap(keep) > wheelKeepCap {
		l.parked = nil // a storm's backlog: let the array go
	}
}
