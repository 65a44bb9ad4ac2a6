package engine

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestSessionIndexAgainstMap drives the index and a map with the same
// random puts, replacements and removals (ids drawn from a small space so
// that clusters form, wrap around the table ends and are cut by removals)
// and checks that they always agree.
func TestSessionIndexAgainstMap(t *testing.T) {
	for _, space := range []int{10, 300, 5000} {
		rng := rand.New(rand.NewPCG(1, uint64(space)))
		x := newSessionIndex()
		ref := map[string]*session{}
		for op := range 200_000 {
			id := "c" + strconv.Itoa(rng.IntN(space))
			switch r := rng.IntN(10); {
			case r < 5:
				s := &session{id: id}
				x.Put(s)
				ref[id] = s
			case r < 8:
				// Remove only the stored session, as detach does.
				s := ref[id]
				if s == nil {
					s = &session{id: id}
				}
				if got, want := x.Remove(s), ref[id] == s; got != want {
					t.Fatalf("space %d op %d: Remove(%s) = %v; want %v", space, op, id, got, want)
				}
				delete(ref, id)
			default:
				// A session that is not the stored one is left alone.
				if old := ref[id]; old != nil && x.Remove(&session{id: id}) {
					t.Fatalf("space %d op %d: removed a session that was not stored", space, op)
				}
			}
			if x.Len() != len(ref) {
				t.Fatalf("space %d op %d: Len %d; want %d", space, op, x.Len(), len(ref))
			}
			if op%1000 == 0 {
				checkIndex(t, x, ref, space)
			}
		}
		checkIndex(t, x, ref, space)
	}
}

func checkIndex(t *testing.T, x *sessionIndex, ref map[string]*session, space int) {
	t.Helper()
	for i := range space {
		id := "c" + strconv.Itoa(i)
		if got := x.Get(id); got != ref[id] {
			t.Fatalf("Get(%s) = %p; want %p", id, got, ref[id])
		}
	}
	n := 0
	x.Range(func(s *session) bool {
		if ref[s.id] != s {
			t.Fatalf("Range yields %s, which is not stored", s.id)
		}
		n++
		return true
	})
	if n != len(ref) {
		t.Fatalf("Range yields %d sessions; want %d", n, len(ref))
	}
}

// BenchmarkSessionIndex reports lookups in a table of 100,000 sessions and
// its memory per session (compare BenchmarkSessionMap).
func BenchmarkSessionIndex(b *testing.B) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "esp32-" + strconv.Itoa(i)
	}
	b.Run("index", func(b *testing.B) {
		x := newSessionIndex()
		for _, id := range ids {
			x.Put(&session{id: id})
		}
		slots := 0
		for k := range x.shards {
			slots += len(x.shards[k].slots)
		}
		b.ReportMetric(float64(slots*8)/n, "table-B/session")
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if x.Get(ids[i%n]) == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		m := make(map[string]*session)
		for _, id := range ids {
			m[id] = &session{id: id}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if m[ids[i%n]] == nil {
				b.Fatal("missing")
			}
		}
	})
}
