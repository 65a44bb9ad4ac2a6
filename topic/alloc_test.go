//go:build !race

package topic

import "testing"

func zeroAllocs(t *testing.T, what string, f func()) {
	t.Helper()
	f()
	if n := testing.AllocsPerRun(200, f); n != 0 {
		t.Fatalf("%s: %.1f allocations; want 0", what, n)
	}
}

func TestAllocs(t *testing.T) {
	tr := NewTree[int]()
	for i, f := range []string{"devices/1/cmd", "devices/+/cmd", "devices/#", "$share/g/devices/+/cmd", "$share/g/devices/+/cmd"} {
		tr.Subscribe([]byte(f), Sub[int]{Key: i % 4})
	}
	name := []byte("devices/1/cmd")
	dst := make([]Sub[int], 0, 16)
	seen := make(map[int]int)
	zeroAllocs(t, "Match", func() {
		dst = tr.Match(name, dst[:0])
		if len(dst) != 4 {
			t.Fatalf("%d matches; want 4", len(dst))
		}
	})
	zeroAllocs(t, "Match miss", func() { dst = tr.Match([]byte("other/x"), dst[:0]) })
	zeroAllocs(t, "Dedup", func() { dst = Dedup(tr.Match(name, dst[:0]), seen) })
	zeroAllocs(t, "ValidateName", func() { _ = ValidateName(name, Limits{MaxLevels: 8}) })
	zeroAllocs(t, "ValidateFilter", func() { _ = ValidateFilter([]byte("devices/+/cmd/#"), Limits{}) })
	utf := []byte("capteurs/\xc3\xa9t\xc3\xa9/\xf0\x9f\x98\x80")
	zeroAllocs(t, "ValidateName UTF-8", func() {
		if ValidateName(utf, Limits{}) != nil {
			t.Fatal("rejected")
		}
	})
	r := NewRetained[int]()
	r.Set(name, 1)
	zeroAllocs(t, "Retained.Get", func() { _, _ = r.Get(name) })
}
