package topic

import (
	"slices"
	"testing"
)

// The Chooser sees the group's members and the round-robin counter, and
// its answer decides the pick; an answer out of range falls back to
// round-robin.
func TestChooserPicks(t *testing.T) {
	tr := NewTree[string]()
	for _, k := range []string{"a", "b", "c"} {
		tr.Subscribe([]byte("$share/g/jobs/#"), Sub[string]{Key: k, QoS: 1})
	}
	var seenRR []uint32
	var seenKeys []string
	tr.SetChooser(func(members []Sub[string], rr uint32) int {
		seenRR = append(seenRR, rr)
		seenKeys = seenKeys[:0]
		for _, m := range members {
			seenKeys = append(seenKeys, m.Key)
		}
		return 2 // always "c"
	})
	for i := range 4 {
		got := tr.Match([]byte("jobs/x"), nil)
		if len(got) != 1 || got[0].Key != "c" || !got[0].Shared {
			t.Fatalf("match %d: %+v; want the chooser's pick c", i, got)
		}
	}
	if !slices.Equal(seenRR, []uint32{0, 1, 2, 3}) {
		t.Errorf("round-robin counters %v; want 0 1 2 3", seenRR)
	}
	if !slices.Equal(seenKeys, []string{"a", "b", "c"}) {
		t.Errorf("members %v; want a b c in subscription order", seenKeys)
	}
	tr.SetChooser(func([]Sub[string], uint32) int { return -1 })
	var keys []string
	for range 3 {
		keys = append(keys, tr.Match([]byte("jobs/x"), nil)[0].Key)
	}
	// The counter went on from 4: 4%3, 5%3, 6%3.
	if !slices.Equal(keys, []string{"b", "c", "a"}) {
		t.Errorf("out-of-range answers picked %v; want round-robin b c a", keys)
	}
	tr.SetChooser(nil)
	if k := tr.Match([]byte("jobs/x"), nil)[0].Key; k != "b" {
		t.Errorf("no chooser picked %s; want round-robin b", k)
	}
}

// MatchGroups names the group of every shared member it appends, in
// order, and the correspondence survives Dedup; PickFrom picks from a
// group by its id until the group is gone, and ids are not reused.
func TestMatchGroupsAndPickFrom(t *testing.T) {
	tr := NewTree[string]()
	tr.Subscribe([]byte("$share/g1/jobs/+"), Sub[string]{Key: "a"})
	tr.Subscribe([]byte("$share/g1/jobs/+"), Sub[string]{Key: "b"})
	tr.Subscribe([]byte("$share/g2/jobs/#"), Sub[string]{Key: "a"})
	tr.Subscribe([]byte("jobs/+"), Sub[string]{Key: "a"})
	tr.Subscribe([]byte("jobs/#"), Sub[string]{Key: "a"})
	subs, groups := tr.MatchGroups([]byte("jobs/1"), nil, nil)
	subs = Dedup(subs, nil)
	var shared []Sub[string]
	for _, s := range subs {
		if s.Shared {
			shared = append(shared, s)
		}
	}
	if len(subs) != 3 || len(shared) != 2 || len(groups) != 2 {
		t.Fatalf("subs %+v groups %v; want one plain a and one member of each of 2 groups", subs, groups)
	}
	if groups[0] == 0 || groups[1] == 0 || groups[0] == groups[1] {
		t.Fatalf("group ids %v; want two distinct non-zero ids", groups)
	}
	// "jobs/1/2" matches only g2's filter: that tells the ids apart.
	_, only := tr.MatchGroups([]byte("jobs/1/2"), nil, nil)
	if len(only) != 1 || (only[0] != groups[0] && only[0] != groups[1]) {
		t.Fatalf("groups of jobs/1/2: %v; want one of %v", only, groups)
	}
	g1, g2 := groups[0], only[0]
	if g1 == g2 {
		g1 = groups[1]
	}
	// g2 is the "a"-only group: every pick from it is a.
	for range 3 {
		if s, ok := tr.PickFrom(g2); !ok || s.Key != "a" || !s.Shared {
			t.Fatalf("PickFrom(g2) = %+v %v; want a", s, ok)
		}
	}
	picked := map[string]int{}
	for range 4 {
		s, ok := tr.PickFrom(g1)
		if !ok {
			t.Fatal("PickFrom(g1): no member")
		}
		picked[s.Key]++
	}
	if picked["a"] != 2 || picked["b"] != 2 {
		t.Errorf("PickFrom(g1) spread %v; want a=2 b=2", picked)
	}
	tr.Unsubscribe([]byte("$share/g1/jobs/+"), "a")
	if s, ok := tr.PickFrom(g1); !ok || s.Key != "b" {
		t.Errorf("PickFrom(g1) after a left = %+v %v; want b", s, ok)
	}
	tr.Unsubscribe([]byte("$share/g1/jobs/+"), "b")
	if s, ok := tr.PickFrom(g1); ok {
		t.Errorf("PickFrom of an emptied group = %+v; want none", s)
	}
	tr.Subscribe([]byte("$share/g1/jobs/+"), Sub[string]{Key: "c"})
	_, again := tr.MatchGroups([]byte("jobs/1"), nil, nil)
	if slices.Contains(again, g1) {
		t.Errorf("a new g1 got the old id %d (ids %v); ids must not be reused", g1, again)
	}
	if _, ok := tr.PickFrom(0); ok {
		t.Error("PickFrom(0) found a group")
	}
}

// BenchmarkMatchShared: one exact subscription and one group of 4 members
// on the same filter, matched with no chooser (round-robin) and with one
// that scans every member (as the engine's least_loaded does).
func BenchmarkMatchShared(b *testing.B) {
	for _, c := range []struct {
		name   string
		choose Chooser[int]
	}{
		{"chooser=none", nil},
		{"chooser=scan", func(members []Sub[int], rr uint32) int {
			best := -1
			for i := range members {
				if members[i].QoS >= 1 && best < 0 {
					best = i
				}
			}
			return best
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tr := NewTree[int]()
			tr.Subscribe([]byte("devices/1/cmd"), Sub[int]{Key: 100})
			for i := range 4 {
				tr.Subscribe([]byte("$share/g/devices/1/cmd"), Sub[int]{Key: i, QoS: 1})
			}
			tr.SetChooser(c.choose)
			name := []byte("devices/1/cmd")
			dst := make([]Sub[int], 0, 8)
			groups := make([]GroupID, 0, 8)
			b.ReportAllocs()
			b.SetBytes(int64(len(name)))
			for b.Loop() {
				dst, groups = tr.MatchGroups(name, dst[:0], groups[:0])
			}
			sinkN += len(dst) + len(groups)
		})
	}
}

// SubscribeGroup reports the group a $share filter joined: the same id
// for every member of one group (and on a replace), another for another
// group or another filter, 0 for a plain filter; MatchGroups reports that
// id for the members it picks.
func TestSubscribeGroupID(t *testing.T) {
	tr := NewTree[string]()
	_, g1 := tr.SubscribeGroup("$share/g/t", Sub[string]{Key: "a", QoS: 1})
	_, g1b := tr.SubscribeGroup("$share/g/t", Sub[string]{Key: "b", QoS: 1})
	replaced, g1c := tr.SubscribeGroup("$share/g/t", Sub[string]{Key: "a", QoS: 0})
	_, g2 := tr.SubscribeGroup("$share/h/t", Sub[string]{Key: "a", QoS: 1})
	_, g3 := tr.SubscribeGroup("$share/g/t/+", Sub[string]{Key: "a", QoS: 1})
	_, plain := tr.SubscribeGroup("t", Sub[string]{Key: "a", QoS: 1})
	if g1 == 0 || g1b != g1 || g1c != g1 || !replaced {
		t.Fatalf("one group: ids %d, %d, %d (replaced %v); want one non-zero id, replaced", g1, g1b, g1c, replaced)
	}
	if g2 == g1 || g3 == g1 || g2 == g3 || g2 == 0 || g3 == 0 || plain != 0 {
		t.Fatalf("ids %d, %d, %d, plain %d; want distinct non-zero groups and 0", g1, g2, g3, plain)
	}
	_, groups := tr.MatchGroups([]byte("t"), nil, nil)
	if !slices.Contains(groups, g1) || !slices.Contains(groups, g2) {
		t.Fatalf("MatchGroups reported %v; want %d and %d among them", groups, g1, g2)
	}
}
