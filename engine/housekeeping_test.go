package engine

import (
	"testing"
	"time"
)

var sink []byte

// TestMemoryReturnAfterBurst: free pages go back to the OS once a burst of
// allocation is followed by quiet ticks, at most once per
// memoryReturnEvery, and never while allocation goes on.
func TestMemoryReturnAfterBurst(t *testing.T) {
	var m memoryReturn
	m.init()
	now := time.Now()
	tick := func() { now = now.Add(tickInterval); m.tick(now) }
	tick() // baseline
	// Steady traffic: every tick allocates more than the quiet threshold.
	for range 20 {
		for range 8 {
			sink = make([]byte, 64<<10)
		}
		tick()
	}
	if m.running.Load() || m.runs.Load() != 0 {
		t.Fatal("memory returned while allocation went on")
	}
	// Then quiet: the burst above (>= memoryReturnMin) is returned.
	for range memoryReturnQuiet {
		tick()
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.runs.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no memory return after the burst went quiet")
		}
		time.Sleep(time.Millisecond)
	}
	// Another burst right away waits for memoryReturnEvery.
	for range 20 {
		sink = make([]byte, 1<<20)
	}
	for range 2 * memoryReturnQuiet {
		tick()
	}
	if m.running.Load() || m.runs.Load() != 1 {
		t.Fatal("a second return within memoryReturnEvery")
	}
	now = now.Add(memoryReturnEvery)
	tick()
	for m.runs.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("no return once memoryReturnEvery had passed")
		}
		time.Sleep(time.Millisecond)
	}
}
