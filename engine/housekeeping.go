package engine

import (
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// memoryReturn gives the heap's free pages back to the operating system
// once a burst of allocation is over: after a connect storm (a fleet coming
// back after an outage) the Go heap keeps the garbage of the ramp as free
// pages, up to the collector's goal of twice the live heap, and the
// background scavenger only returns what lies above that goal. An idle
// broker on a small VM should not hold that memory.
//
// Each tick it reads the heap's cumulative allocation. When at least
// memoryReturnMin bytes have been allocated since the last return and the
// last memoryReturnQuiet ticks were quiet (under memoryReturnQuietBytes
// each), it runs debug.FreeOSMemory (a collection, then the return) on its
// own goroutine, at most once per memoryReturnEvery. Under steady traffic
// it never runs: the ticks are not quiet. Ticker goroutine (OnTick).
type memoryReturn struct {
	sample  [1]metrics.Sample
	last    uint64 // cumulative heap allocation at the previous tick
	since   uint64 // ... at the previous return
	quiet   int    // consecutive quiet ticks
	at      time.Time
	running atomic.Bool
	runs    atomic.Uint64
}

const (
	memoryReturnMin        = 8 << 20
	memoryReturnQuietBytes = 256 << 10
	memoryReturnQuiet      = 4 // ticks: 2 s
	memoryReturnEvery      = 30 * time.Second
)

func (m *memoryReturn) init() {
	m.sample[0].Name = "/gc/heap/allocs:bytes"
}

// tick runs on the ticker goroutine.
func (m *memoryReturn) tick(now time.Time) {
	metrics.Read(m.sample[:])
	if m.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	total := m.sample[0].Value.Uint64()
	if total-m.last < memoryReturnQuietBytes {
		m.quiet++
	} else {
		m.quiet = 0
	}
	m.last = total
	if m.quiet < memoryReturnQuiet || total-m.since < memoryReturnMin || now.Sub(m.at) < memoryReturnEvery {
		return
	}
	if !m.running.CompareAndSwap(false, true) {
		return
	}
	m.since, m.at = total, now
	go func() {
		defer m.running.Store(false)
		debug.FreeOSMemory()
		m.runs.Add(1)
	}()
}
