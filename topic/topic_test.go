package topic

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestValidateName(t *testing.T) {
	for _, c := range []struct {
		name string
		want error
	}{
		{"a/b", nil}, {"/", nil}, {"a//b", nil}, {"$SYS/x", nil}, {"ü/€", nil},
		{"", ErrEmpty},             // MQTT-4.7.3-1
		{"a/+", ErrWildcardInName}, // MQTT-3.3.2-2
		{"#", ErrWildcardInName},   // MQTT-4.7.1-1
		{"a\x00b", ErrNullChar},    // MQTT-4.7.3-2
		{"a\xc3\x28", ErrBadUTF8},  // MQTT-1.5.3-1
		{strings.Repeat("a", 65536), ErrTooLong},
	} {
		if got := ValidateName([]byte(c.name), Limits{}); got != c.want {
			t.Fatalf("ValidateName(%.20q) = %v; want %v", c.name, got, c.want)
		}
	}
	if err := ValidateName([]byte("a/b/c/d"), Limits{MaxLevels: 3}); err != ErrTooManyLevels {
		t.Fatalf("levels limit: %v", err)
	}
	if err := ValidateName([]byte("abcdef"), Limits{MaxLen: 5}); err != ErrTooLong {
		t.Fatalf("length limit: %v", err)
	}
}

func TestValidateFilter(t *testing.T) {
	for _, c := range []struct {
		filter string
		want   error
	}{
		{"#", nil}, {"+", nil}, {"a/#", nil}, {"+/+", nil}, {"/+", nil}, {"a/+/b", nil}, {"$SYS/#", nil},
		{"$share/g/a/+", nil}, {"$share/g/#", nil},
		{"", ErrEmpty},               // MQTT-4.7.3-1
		{"a/#/b", ErrBadWildcard},    // MQTT-4.7.1-2
		{"a#", ErrBadWildcard},       // MQTT-4.7.1-2
		{"a/b#", ErrBadWildcard},     // MQTT-4.7.1-2
		{"a+", ErrBadWildcard},       // MQTT-4.7.1-3
		{"a/+b", ErrBadWildcard},     // MQTT-4.7.1-3
		{"\x00", ErrNullChar},        // MQTT-4.7.3-2
		{"$share//a", ErrBadShare},   // MQTT-4.8.2-1
		{"$share/g", ErrBadShare},    // MQTT-4.8.2-1
		{"$share/g+/a", ErrBadShare}, // MQTT-4.8.2-2
		{"$share", ErrBadShare},
	} {
		if got := ValidateFilter([]byte(c.filter), Limits{}); got != c.want {
			t.Fatalf("ValidateFilter(%q) = %v; want %v", c.filter, got, c.want)
		}
	}
}

// matchKeys subscribes key i to filters[i] and returns the keys matching name.
func matchKeys(filters []string, name string) []int {
	tr := NewTree[int]()
	for i, f := range filters {
		tr.Subscribe([]byte(f), Sub[int]{Key: i})
	}
	var keys []int
	for _, s := range tr.Match([]byte(name), nil) {
		keys = append(keys, s.Key)
	}
	sort.Ints(keys)
	return keys
}

// TestMatchSpecExamples are the examples of MQTT 3.1.1 section 4.7 and 5.0
// section 4.7.
func TestMatchSpecExamples(t *testing.T) {
	for _, c := range []struct {
		filter, name string
		match        bool
	}{
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"#", "sport/tennis", true},
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+/tennis/#", "sport/tennis/player1", true},
		{"a/+/b", "a//b", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/", false},
		{"/a", "a", false},
		{"#", "$SYS/monitor/Clients", false},                 // MQTT-4.7.2-1
		{"+/monitor/Clients", "$SYS/monitor/Clients", false}, // MQTT-4.7.2-1
		{"$SYS/#", "$SYS/monitor/Clients", true},
		{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a", false},
	} {
		got := len(matchKeys([]string{c.filter}, c.name)) == 1
		if got != c.match {
			t.Fatalf("filter %q name %q: match=%v; want %v", c.filter, c.name, got, c.match)
		}
	}
}

func TestSubscribeReplaceUnsubscribe(t *testing.T) {
	tr := NewTree[string]()
	if tr.Subscribe([]byte("a/+"), Sub[string]{Key: "c1", QoS: 0}) {
		t.Fatal("first subscribe reported replace")
	}
	if !tr.Subscribe([]byte("a/+"), Sub[string]{Key: "c1", QoS: 2}) {
		t.Fatal("identical filter did not replace")
	}
	got := tr.Match([]byte("a/x"), nil)
	if len(got) != 1 || got[0].QoS != 2 || tr.Count() != 1 {
		t.Fatalf("after replace: %+v count %d", got, tr.Count())
	}
	tr.Subscribe([]byte("a/x"), Sub[string]{Key: "c1", QoS: 1})
	if n := len(tr.Match([]byte("a/x"), nil)); n != 2 {
		t.Fatalf("overlap: %d matches; want 2 (Dedup merges them)", n)
	}
	if !tr.Unsubscribe([]byte("a/+"), "c1") || tr.Unsubscribe([]byte("a/+"), "c1") {
		t.Fatal("unsubscribe twice")
	}
	if !tr.Unsubscribe([]byte("a/x"), "c1") {
		t.Fatal("exact unsubscribe")
	}
	if n := len(tr.Match([]byte("a/x"), nil)); n != 0 || tr.Count() != 0 {
		t.Fatalf("after unsubscribe: %d matches, count %d", n, tr.Count())
	}
	if tr.root.plus != nil || len(tr.root.children) != 0 || len(tr.exact) != 0 {
		t.Fatal("empty nodes not pruned")
	}
}

// [MQTT-3.3.5-1]
func TestDedup(t *testing.T) {
	in := []Sub[int]{{Key: 1, QoS: 0}, {Key: 2, QoS: 1}, {Key: 1, QoS: 2}, {Key: 3, Shared: true}, {Key: 3, QoS: 1}, {Key: 2, QoS: 0}}
	for _, seen := range []map[int]int{nil, make(map[int]int)} {
		subs := append([]Sub[int](nil), in...)
		if seen != nil { // force the map path
			for i := 0; i < 20; i++ {
				subs = append(subs, Sub[int]{Key: 100 + i})
			}
		}
		out := Dedup(subs, seen)
		want := map[int]uint8{1: 2, 2: 1, 3: 1}
		normal := 0
		for _, s := range out {
			if s.Key < 100 && !s.Shared {
				normal++
				if s.QoS != want[s.Key] {
					t.Fatalf("key %d QoS %d; want %d", s.Key, s.QoS, want[s.Key])
				}
			}
		}
		if normal != 3 {
			t.Fatalf("%d normal entries after Dedup; want 3: %+v", normal, out)
		}
	}
}

func TestSharedSubscriptions(t *testing.T) {
	tr := NewTree[string]()
	tr.Subscribe([]byte("$share/g1/jobs/+"), Sub[string]{Key: "a"})
	tr.Subscribe([]byte("$share/g1/jobs/+"), Sub[string]{Key: "b"})
	tr.Subscribe([]byte("$share/g2/jobs/+"), Sub[string]{Key: "c"})
	tr.Subscribe([]byte("jobs/+"), Sub[string]{Key: "plain"})
	counts := map[string]int{}
	for i := 0; i < 10; i++ {
		got := tr.Match([]byte("jobs/1"), nil)
		if len(got) != 3 {
			t.Fatalf("match %d: %d subs; want 3 (plain + one per group)", i, len(got))
		}
		for _, s := range got {
			counts[s.Key]++
		}
	}
	if counts["a"] != 5 || counts["b"] != 5 || counts["c"] != 10 || counts["plain"] != 10 {
		t.Fatalf("distribution %v; want a=5 b=5 c=10 plain=10", counts)
	}
	if !tr.Unsubscribe([]byte("$share/g1/jobs/+"), "a") {
		t.Fatal("shared unsubscribe")
	}
	for _, s := range tr.Match([]byte("jobs/1"), nil) {
		if s.Key == "a" {
			t.Fatal("unsubscribed member still matched")
		}
	}
}

func TestDeepTopics(t *testing.T) {
	deep := strings.Repeat("x/", 40) + "end"
	if got := matchKeys([]string{"#", "x/#", strings.Repeat("+/", 40) + "end", strings.Repeat("x/", 40) + "+"}, deep); len(got) != 4 {
		t.Fatalf("deep name matched %v; want all 4", got)
	}
}

func TestRetained(t *testing.T) {
	r := NewRetained[string]()
	for _, n := range []string{"sport", "sport/tennis", "sport/tennis/p1", "sport/golf", "/finance", "$SYS/x", "a//b"} {
		r.Set([]byte(n), "v:"+n)
	}
	r.Set([]byte("sport"), "new")
	if v, ok := r.Get([]byte("sport")); !ok || v != "new" || r.Count() != 7 {
		t.Fatalf("replace: %q %v count %d", v, ok, r.Count())
	}
	for _, c := range []struct {
		filter string
		want   string
	}{
		{"sport/#", "sport sport/golf sport/tennis sport/tennis/p1"},
		{"sport/+", "sport/golf sport/tennis"},
		{"#", "/finance a//b sport sport/golf sport/tennis sport/tennis/p1"}, // not $SYS [MQTT-4.7.2-1]
		{"+/+", "/finance sport/golf sport/tennis"},
		{"$SYS/#", "$SYS/x"},
		{"a/+/b", "a//b"},
		{"sport/tennis/p1", "sport/tennis/p1"},
		{"nothing/#", ""},
	} {
		var got []string
		r.Match([]byte(c.filter), func(topic string, _ string) bool { got = append(got, topic); return true })
		sort.Strings(got)
		if strings.Join(got, " ") != c.want {
			t.Fatalf("Match(%q) = %q; want %q", c.filter, strings.Join(got, " "), c.want)
		}
	}
	if !r.Delete([]byte("sport/tennis")) || r.Delete([]byte("sport/tennis")) {
		t.Fatal("delete")
	}
	var got []string
	r.Match([]byte("sport/tennis/#"), func(topic string, _ string) bool { got = append(got, topic); return true })
	if len(got) != 1 || got[0] != "sport/tennis/p1" {
		t.Fatalf("after delete of parent: %v", got)
	}
	r.Delete([]byte("sport/tennis/p1"))
	if s := r.root.child("sport"); s != nil && s.child("tennis") != nil {
		t.Fatal("empty retained node not pruned")
	}
}

// TestRetainedWideLevel: a level with more children than
// ChildMapThreshold (one node per device) switches to a map; matching,
// replacing and deleting work the same on both sides of the switch, and
// deleting everything prunes the trie to the root.
func TestRetainedWideLevel(t *testing.T) {
	r := NewRetained[string]()
	const n = 100
	for i := range n {
		r.Set([]byte(fmt.Sprintf("devices/d%d/status", i)), "online")
	}
	r.Set([]byte("devices/d7/status"), "offline")
	if d := r.root.child("devices"); d == nil || d.childMap == nil || len(d.childMap) != n {
		t.Fatal("a wide level is not a map")
	}
	count := func(filter string) (k int, offline int) {
		r.Match([]byte(filter), func(_ string, v string) bool {
			k++
			if v == "offline" {
				offline++
			}
			return true
		})
		return k, offline
	}
	if k, off := count("devices/+/status"); k != n || off != 1 {
		t.Fatalf("devices/+/status: %d matches, %d offline; want %d, 1", k, off, n)
	}
	if k, _ := count("devices/d42/#"); k != 1 {
		t.Fatalf("devices/d42/#: %d matches", k)
	}
	for i := range n {
		if !r.Delete([]byte(fmt.Sprintf("devices/d%d/status", i))) {
			t.Fatalf("delete d%d", i)
		}
	}
	if r.Count() != 0 || r.root.numChildren() != 0 {
		t.Fatalf("after deleting all: count %d, root children %d", r.Count(), r.root.numChildren())
	}
}

// TestConcurrentMatch runs matchers on several goroutines while another
// subscribes and unsubscribes (run with -race).
func TestConcurrentMatch(t *testing.T) {
	tr := NewTree[int]()
	for i := 0; i < 100; i++ {
		tr.Subscribe([]byte(fmt.Sprintf("dev/%d/cmd", i)), Sub[int]{Key: i})
	}
	tr.Subscribe([]byte("dev/+/cmd"), Sub[int]{Key: -1})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var dst []Sub[int]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				dst = tr.Match([]byte(fmt.Sprintf("dev/%d/cmd", i%100)), dst[:0])
				if len(dst) < 1 {
					errs <- fmt.Sprintf("goroutine %d: wildcard subscriber missing", g)
					return
				}
			}
		}(g)
	}
	for i := 0; i < 2000; i++ {
		f := []byte(fmt.Sprintf("dev/%d/cmd", 1000+i))
		tr.Subscribe(f, Sub[int]{Key: 1000 + i})
		tr.Unsubscribe(f, 1000+i)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if tr.Count() != 101 {
		t.Fatalf("count %d; want 101", tr.Count())
	}
}

// TestSubscriptionSizes guards what every subscription costs: a Sub (16
// bytes with a pointer key) and, per filter, an entry (32 bytes). A field
// that pushes either into the next size class costs that much again per
// subscription on every host.
func TestSubscriptionSizes(t *testing.T) {
	if n := unsafe.Sizeof(Sub[*int]{}); n > 16 {
		t.Errorf("Sub is %d bytes; the budget is 16", n)
	}
	if n := unsafe.Sizeof(entry[*int]{}); n > 32 {
		t.Errorf("entry is %d bytes; the budget is 32", n)
	}
}

// TestSubscribeStringMatchesSubscribe: a tree built from the caller's
// strings (SubscribeString keeps pieces of them) matches, unsubscribes and
// dedups exactly as one built from copies.
func TestSubscribeStringMatchesSubscribe(t *testing.T) {
	filters := []string{"a/b", "a/+", "a/#", "#", "+/b", "$share/g/a/b", "$share/g/a/+", "x//y", "/", "a/b/c/d", "dev/7/cmd"}
	names := []string{"a/b", "a/c", "a", "x//y", "/", "a/b/c/d", "dev/7/cmd", "b/b"}
	copies, kept := NewTree[int](), NewTree[int]()
	for i, f := range filters {
		copies.Subscribe([]byte(f), Sub[int]{Key: i, QoS: uint8(i % 3)})
		kept.SubscribeString(string([]byte(f)), Sub[int]{Key: i, QoS: uint8(i % 3)})
	}
	same := func(stage string) {
		t.Helper()
		for _, n := range names {
			a := fmt.Sprint(copies.Match([]byte(n), nil))
			b := fmt.Sprint(kept.Match([]byte(n), nil))
			if a != b {
				t.Fatalf("%s: Match(%q): copies %s, kept strings %s", stage, n, a, b)
			}
		}
		if copies.Count() != kept.Count() {
			t.Fatalf("%s: counts %d and %d", stage, copies.Count(), kept.Count())
		}
	}
	same("after subscribe")
	for i, f := range filters {
		if i%2 == 0 {
			copies.Unsubscribe([]byte(f), i)
			kept.Unsubscribe([]byte(f), i)
		}
	}
	same("after unsubscribe")
}
