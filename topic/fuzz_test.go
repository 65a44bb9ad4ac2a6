package topic

import (
	"sort"
	"strings"
	"testing"
)

// naiveMatch is the reference matcher: split both on '/', compare levels.
func naiveMatch(filter, name string) bool {
	if strings.HasPrefix(name, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, n := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, lv := range f {
		if lv == "#" {
			return true
		}
		if i >= len(n) {
			return false
		}
		if lv != "+" && lv != n[i] {
			return false
		}
	}
	return len(f) == len(n)
}

// FuzzMatch compares Tree.Match and Retained.Match with the naive matcher
// over filters and names made from a small alphabet of levels.
func FuzzMatch(f *testing.F) {
	f.Add("a/+|#|a/b/#|+/+|$SYS/#", "a/b")
	f.Add("+|/+|sport/#|a//b", "/x")
	f.Add("$SYS/+|+/y|#", "$SYS/y")
	f.Fuzz(func(t *testing.T, filterList, name string) {
		if ValidateName([]byte(name), Limits{}) != nil || len(name) > 200 {
			return
		}
		var filters []string
		for _, fl := range strings.Split(filterList, "|") {
			if ValidateFilter([]byte(fl), Limits{}) == nil && !strings.HasPrefix(fl, "$share") {
				filters = append(filters, fl)
			}
		}
		tr := NewTree[int]()
		for i, fl := range filters {
			if i%2 == 0 {
				tr.Subscribe([]byte(fl), Sub[int]{Key: i})
			} else { // the engine's path: pieces of the caller's string
				tr.SubscribeString(strings.Clone(fl), Sub[int]{Key: i})
			}
		}
		got := map[int]bool{}
		for _, s := range tr.Match([]byte(name), nil) {
			got[s.Key] = true
		}
		for i, fl := range filters {
			if want := naiveMatch(fl, name); got[i] != want {
				t.Fatalf("filter %q name %q: trie=%v naive=%v", fl, name, got[i], want)
			}
		}
		// Retained: store the name and every filter-free variant, match each filter.
		r := NewRetained[int]()
		r.Set([]byte(name), 1)
		for _, fl := range filters {
			var hits []string
			r.Match([]byte(fl), func(topic string, _ int) bool { hits = append(hits, topic); return true })
			sort.Strings(hits)
			want := naiveMatch(fl, name)
			if (len(hits) == 1 && hits[0] == name) != want || len(hits) > 1 {
				t.Fatalf("retained: filter %q name %q: hits %v; want match=%v", fl, name, hits, want)
			}
		}
	})
}
