//go:build !race

package topic

import "testing"

// With a chooser set, Match, MatchGroups and PickFrom still allocate
// nothing.
func TestSharedAllocs(t *testing.T) {
	tr := NewTree[int]()
	for i := range 4 {
		tr.Subscribe([]byte("$share/g/devices/+/cmd"), Sub[int]{Key: i})
		tr.Subscribe([]byte("$share/h/devices/#"), Sub[int]{Key: i})
	}
	tr.Subscribe([]byte("devices/1/cmd"), Sub[int]{Key: 9})
	tr.SetChooser(func(members []Sub[int], rr uint32) int { return int(rr+1) % len(members) })
	name := []byte("devices/1/cmd")
	dst := make([]Sub[int], 0, 16)
	groups := make([]GroupID, 0, 16)
	zeroAllocs(t, "Match with chooser", func() {
		if dst = tr.Match(name, dst[:0]); len(dst) != 3 {
			t.Fatalf("%d matches; want 3", len(dst))
		}
	})
	zeroAllocs(t, "MatchGroups", func() {
		dst, groups = tr.MatchGroups(name, dst[:0], groups[:0])
		if len(groups) != 2 {
			t.Fatalf("%d groups; want 2", len(groups))
		}
	})
	g := groups[0]
	zeroAllocs(t, "PickFrom", func() {
		if _, ok := tr.PickFrom(g); !ok {
			t.Fatal("no pick")
		}
	})
}
