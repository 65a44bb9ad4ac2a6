package topic

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
)

var sinkN int

// buildTree makes a realistic mix: per-device exact filters
// devices/{id}/cmd and devices/{id}/config/#, plus 1% wildcards.
func buildTree(n int) *Tree[int] {
	tr := NewTree[int]()
	for i := 0; i < n; i++ {
		id := strconv.Itoa(i)
		switch {
		case i%100 == 0:
			tr.Subscribe([]byte("devices/+/telemetry"), Sub[int]{Key: i})
		case i%100 == 1:
			tr.Subscribe([]byte("tenant/"+strconv.Itoa(i%1000)+"/#"), Sub[int]{Key: i})
		case i%2 == 0:
			tr.Subscribe([]byte("devices/"+id+"/cmd"), Sub[int]{Key: i})
		default:
			tr.Subscribe([]byte("devices/"+id+"/config/#"), Sub[int]{Key: i})
		}
	}
	return tr
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{1000, 100000, 1000000} {
		tr := buildTree(n)
		for _, c := range []struct{ kind, name string }{
			{"exact-hit", "devices/42/cmd"},
			{"wildcard-hit", "devices/43/config/net"},
			{"fanin", "devices/7/telemetry"},
			{"miss", "other/topic/x"},
		} {
			b.Run(fmt.Sprintf("subs=%d/case=%s", n, c.kind), func(b *testing.B) {
				name := []byte(c.name)
				dst := make([]Sub[int], 0, 64*1024)
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					dst = tr.Match(name, dst[:0])
					sinkN += len(dst)
				}
			})
		}
	}
}

func BenchmarkMatchParallel(b *testing.B) {
	tr := buildTree(100000)
	b.Run("subs=100000/case=exact-hit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			dst := make([]Sub[int], 0, 64)
			name := []byte("devices/42/cmd")
			for pb.Next() {
				dst = tr.Match(name, dst[:0])
			}
		})
	})
	b.Run("subs=100000/case=exact-hit/with-writer", func(b *testing.B) {
		stop := make(chan struct{})
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f := []byte("devices/x" + strconv.Itoa(i%1000) + "/cmd")
				tr.Subscribe(f, Sub[int]{Key: -i})
				tr.Unsubscribe(f, -i)
			}
		}()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			dst := make([]Sub[int], 0, 64)
			name := []byte("devices/42/cmd")
			for pb.Next() {
				dst = tr.Match(name, dst[:0])
			}
		})
		close(stop)
	})
}

func BenchmarkSubscribe(b *testing.B) {
	tr := NewTree[int]()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tr.Subscribe([]byte("devices/"+strconv.Itoa(i)+"/cmd"), Sub[int]{Key: i})
	}
}

func BenchmarkRetained(b *testing.B) {
	r := NewRetained[int]()
	for i := 0; i < 100000; i++ {
		r.Set([]byte("devices/"+strconv.Itoa(i)+"/status"), i)
	}
	b.Run("retained=100000/op=get", func(b *testing.B) {
		name := []byte("devices/4242/status")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			v, _ := r.Get(name)
			sinkN += v
		}
	})
	b.Run("retained=100000/op=match-one-level-wildcard", func(b *testing.B) {
		f := []byte("devices/+/status")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r.Match(f, func(_ string, v int) bool { sinkN += v; return true })
		}
	})
	b.Run("retained=100000/op=match-exact", func(b *testing.B) {
		f := []byte("devices/4242/status")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r.Match(f, func(_ string, v int) bool { sinkN += v; return true })
		}
	})
}

// TestMemoryPerSubscription reports (does not assert) heap per
// subscription for the realistic mix; docs/topic.md records the figure.
func TestMemoryPerSubscription(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	tr := buildTree(100000)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("heap per subscription: %.0f bytes (100k realistic mix)", float64(m1.HeapAlloc-m0.HeapAlloc)/100000)
	runtime.KeepAlive(tr)
}

// TestMemoryPerRetained logs the index's heap per retained topic for the
// fleet pattern: one devices/{id}/status per device.
func TestMemoryPerRetained(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 100000
	names := make([][]byte, n)
	for i := range names {
		names[i] = []byte(fmt.Sprintf("devices/esp32-%06d/status", i))
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	r := NewRetained[*int]()
	v := new(int)
	for _, name := range names {
		r.Set(name, v)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("heap per retained topic: %.0f bytes (100k devices/{id}/status, the stored value not counted)", float64(m1.HeapAlloc-m0.HeapAlloc)/n)
	runtime.KeepAlive(r)
}
