package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// events records the order of syncs and durability posts.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

func TestFsyncAlwaysPostsOnlyAfterSync(t *testing.T) {
	var ev events
	var synced atomic.Uint64 // highest seq covered by a completed sync
	var bad atomic.Value
	var durable atomic.Uint64
	s := openT(t, Options{
		Fsync:     FsyncAlways,
		afterSync: func(n uint64) { synced.Store(n); ev.add("sync %d", n) },
		OnDurable: func(n uint64) {
			if n > synced.Load() {
				bad.Store(fmt.Sprintf("durable %d posted with sync only up to %d", n, synced.Load()))
			}
			if n <= durable.Load() {
				bad.Store(fmt.Sprintf("durable %d after %d: not increasing", n, durable.Load()))
			}
			durable.Store(n)
			ev.add("durable %d", n)
		},
	})
	defer s.Close()
	const writers, per = 4, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				b := NewBatch()
				b.SetRetained(&Message{Topic: fmt.Appendf(nil, "t/%d/%d", w, i), Payload: []byte("v")})
				for {
					if _, err := s.Submit(b); err == nil {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "all durable", func() bool { return durable.Load() == writers*per })
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	log := ev.snapshot()
	syncs := 0
	for _, e := range log {
		if e[0] == 's' {
			syncs++
		}
	}
	// Group commit: fewer syncs than submissions is expected but not
	// guaranteed; at least one sync per post is.
	t.Logf("%d submissions, %d syncs, %d events", writers*per, syncs, len(log))
	if syncs == 0 {
		t.Fatal("no sync observed in always mode")
	}
}

func TestFsyncNoneDoesNotSync(t *testing.T) {
	var syncs atomic.Int32
	var durable atomic.Uint64
	s := openT(t, Options{Fsync: FsyncNone, afterSync: func(uint64) { syncs.Add(1) }, OnDurable: func(n uint64) { durable.Store(n) }})
	for i := 0; i < 10; i++ {
		if _, err := s.Submit(NewBatch()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "durable 10", func() bool { return durable.Load() == 10 })
	if n := syncs.Load(); n != 0 {
		t.Fatalf("none mode synced %d times", n)
	}
	s.Close()
}

func TestFsyncIntervalPostsWithinInterval(t *testing.T) {
	const interval = 150 * time.Millisecond
	var synced atomic.Uint64
	type post struct {
		seq uint64
		at  time.Time
		ok  bool
	}
	posts := make(chan post, 16)
	s := openT(t, Options{
		Fsync:     FsyncInterval,
		Interval:  interval,
		afterSync: func(n uint64) { synced.Store(n) },
		OnDurable: func(n uint64) { posts <- post{n, time.Now(), synced.Load() >= n} },
	})
	defer s.Close()
	for round := 0; round < 3; round++ {
		start := time.Now()
		b := NewBatch()
		b.SetRetained(&Message{Topic: []byte("i"), Payload: []byte{byte(round)}})
		seq, err := s.Submit(b)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "committed", func() bool { return s.Committed() >= seq })
		var p post
		select {
		case p = <-posts:
		case <-time.After(interval + 2*time.Second):
			t.Fatalf("round %d: no durability post within %v", round, interval+2*time.Second)
		}
		el := p.at.Sub(start)
		if p.seq != seq || !p.ok {
			t.Fatalf("round %d: post %+v for seq %d (must follow the sync)", round, p, seq)
		}
		if el < interval-10*time.Millisecond {
			t.Fatalf("round %d: durable after %v, before the %v interval elapsed: not waiting for the timed sync", round, el, interval)
		}
		if el > interval+time.Second {
			t.Fatalf("round %d: durable after %v, want about %v", round, el, interval)
		}
		t.Logf("round %d: durable %v after submit", round, el)
	}
}
