package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// The authentication worker pool: a fixed number of goroutines (one of
// DESIGN.md's bounded exceptions) run Authenticator.Authenticate, which may
// take milliseconds (PBKDF2) or block on a remote service, and post the
// verdict back to the connection's loop. The loop never waits: the
// connection stops reading packets after its CONNECT until the verdict
// arrives (its later bytes stay in gnet's buffer), and the connect timeout
// still runs.

// authJob is one CONNECT (or HTTP request) waiting for its verdict. It is
// a gnet.Runnable: the worker hands it back to the connection's loop.
type authJob struct {
	c    *conn
	cr   Credentials
	pc   pendingConnect // CONNECT: what finishing it needs (owned copies)
	http bool           // an HTTP request: re-served from gnet's buffer once the cache knows
	key  [32]byte       // cache key of (username, password)
	rc   codec.ReasonCode
}

// authPool runs Authenticate off the loops. Safe from any goroutine.
type authPool struct {
	b    *Broker
	jobs chan *authJob
	wg   sync.WaitGroup
	busy atomic.Int64 // jobs queued or running (gauge)
}

// authQueue bounds the CONNECTs waiting for a worker; past it a CONNECT is
// refused with "server unavailable" (3.1.1 return code 3) and counted.
const authQueue = 4096

func newAuthPool(b *Broker, workers int) *authPool {
	p := &authPool{b: b, jobs: make(chan *authJob, authQueue)}
	for range workers {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

// submit queues j and reports false when the queue is full. Runs on j's
// loop; never blocks.
func (p *authPool) submit(j *authJob) bool {
	select {
	case p.jobs <- j:
		p.busy.Add(1)
		return true
	default:
		return false
	}
}

// stop ends the workers once the queued jobs are done. Any goroutine.
func (p *authPool) stop() {
	close(p.jobs)
	p.wg.Wait()
}

// work is one worker goroutine.
func (p *authPool) work() {
	defer p.wg.Done()
	for j := range p.jobs {
		j.rc = p.b.authn.Load().a.Authenticate(&j.cr)
		p.busy.Add(-1)
		if err := j.c.l.el.Execute(context.Background(), j); err != nil {
			// The engine is stopping: the connection goes with it.
			continue
		}
	}
}

// Run implements gnet.Runnable: the verdict arrives on the connection's
// loop.
func (j *authJob) Run(context.Context) error {
	c := j.c
	if !c.open || c.x == nil || c.x.pend != j {
		return nil // closed (or timed out) meanwhile
	}
	c.x.pend = nil
	b := c.l.b
	if j.rc == codec.Success {
		b.authCache.add(j.key)
	}
	if j.http {
		if j.rc != codec.Success {
			c.x.basicBad = j.key
		}
		c.authWait = false
		c.resume()
		return nil
	}
	if j.rc != codec.Success {
		b.refuseLogin(c, j.rc, j.pc.id, j.cr.Username)
		c.l.r.finish()
		return nil
	}
	c.authWait = false
	if c.accept(&j.pc) {
		c.resume()
	} else {
		_ = c.gc.Close()
	}
	c.l.r.finish()
	return nil
}

// authCache remembers successful verifications by a keyed hash of
// (username, password), so that a reconnect storm does not redo PBKDF2 for
// every device. Entries are valid for one generation of the credentials
// (a reload starts a new one) and at most authCacheTTL. Safe from any
// goroutine.
type authCache struct {
	key  [32]byte // random per process, hashed in front of every key: the cache never holds a password or its plain hash
	mu   sync.Mutex
	m    map[[32]byte]int64 // -> unix second of expiry
	gen  atomic.Uint64
	hits atomic.Uint64
}

const (
	authCacheMax = 65536
	authCacheTTL = time.Hour
)

func (a *authCache) init() {
	_, _ = rand.Read(a.key[:])
	a.m = make(map[[32]byte]int64)
}

// keyOf is the cache key of credentials: SHA-256 over the process's
// random key, the generation (a reload forgets every entry at once), the
// username's length, the username and the password, built in the loop's
// scratch (cleared after) so that a look-up allocates nothing. The length
// prefix keeps ("a\x00b", "c") and ("a", "b\x00c") apart. Runs on a loop.
func (a *authCache) keyOf(scratch *[]byte, user, pass []byte) [32]byte {
	b := append((*scratch)[:0], a.key[:]...)
	b = binary.LittleEndian.AppendUint64(b, a.gen.Load())
	b = binary.AppendUvarint(b, uint64(len(user)))
	b = append(b, user...)
	b = append(b, pass...)
	k := sha256.Sum256(b)
	clear(b) // no password left behind in the scratch
	*scratch = b[:0]
	return k
}

func (a *authCache) ok(k [32]byte, now int64) bool {
	a.mu.Lock()
	exp, found := a.m[k]
	if found && exp < now {
		delete(a.m, k)
		found = false
	}
	a.mu.Unlock()
	if found {
		a.hits.Add(1)
	}
	return found
}

func (a *authCache) add(k [32]byte) {
	exp := time.Now().Add(authCacheTTL).Unix()
	a.mu.Lock()
	if len(a.m) >= authCacheMax {
		for old := range a.m { // map order is random: evict one entry
			delete(a.m, old)
			break
		}
	}
	a.m[k] = exp
	a.mu.Unlock()
}

// forget invalidates every entry (a reload of the credentials).
func (a *authCache) forget() {
	a.gen.Add(1)
	a.mu.Lock()
	clear(a.m)
	a.mu.Unlock()
}

// failTable counts failed logins per source address (IP, without the
// port) in a fixed table, so that repeated failures from one address are
// answered more slowly while other addresses and good logins are not
// slowed at all. An attacker cycling addresses only evicts entries; memory
// stays fixed. Safe from any goroutine.
type failTable struct {
	seed  maphash.Seed
	mu    sync.Mutex
	slots [failSlots]failSlot
}

type failSlot struct {
	h    uint64
	n    uint32 // failures in the current window
	last uint32 // unix second of the last failure
}

const (
	failSlots = 4096
	// failFree is how many failures in a row an address gets answered at
	// once; from the next one the refusal waits 1 s, doubling each time up
	// to Options.AuthFailDelayMax.
	failFree = 3
	// failWindow forgets an address's failures after this much quiet.
	failWindow = 300
)

func (f *failTable) init() { f.seed = maphash.MakeSeed() }

// hostOf strips the port from a remote address.
func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// fail records a failure from remote and returns how long its refusal
// should be held.
func (f *failTable) fail(remote string, now int64, maxDelay time.Duration) time.Duration {
	h := maphash.String(f.seed, hostOf(remote))
	f.mu.Lock()
	s := &f.slots[h%failSlots]
	if s.h != h || now-int64(s.last) > failWindow {
		*s = failSlot{h: h}
	}
	s.n++
	s.last = uint32(now)
	n := s.n
	f.mu.Unlock()
	if n <= failFree || maxDelay <= 0 {
		return 0
	}
	d := time.Second << min(n-failFree-1, 16)
	return min(d, maxDelay)
}
