package topic

import (
	"strings"
	"testing"
)

func TestMatchFilter(t *testing.T) {
	for _, c := range []struct {
		filter, name string
		want         bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/#", "a", true}, // '#' matches the parent level
		{"a/#", "a/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "/", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+", "/a", false},
		{"+/+", "/a", true}, // '+' may match an empty level
		{"a/+", "a/", true},
		{"a/+", "a/b/c", false},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a", false},
		{"allowed", "allowed/secret", false},
		{"#", "$SYS/x", false},   // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/+", "$SYS/x", true},
		{"a/$x", "a/$x", true},
		{"+/$x", "a/$x", true},
		{"", "a", false},
		{"a", "", false},
	} {
		if got := MatchFilter([]byte(c.filter), []byte(c.name)); got != c.want {
			t.Errorf("MatchFilter(%q, %q) = %v; want %v", c.filter, c.name, got, c.want)
		}
		if c.filter != "" && c.name != "" && naiveMatch(c.filter, c.name) != c.want {
			t.Errorf("naiveMatch(%q, %q) disagrees with the table", c.filter, c.name)
		}
	}
}

func TestIntersects(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"a/#", "+/b", true},
		{"a/+", "a/b/c", false},
		{"#", "$SYS/x", false},
		{"+/#", "$SYS/#", false},
		{"$SYS/#", "$SYS/+", true},
		{"#", "#", true},
		{"a/#", "a", true},
		{"a/+", "a", false},
		{"+/+", "+", false},
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"+/b/#", "a/+/c", true},
		{"a/+/c", "a/b/d", false},
		{"+", "/", false}, // "/" has two levels
		{"+/+", "/", true},
		{"/#", "+", false}, // "/#" matches "" only in theory: not a valid name
	} {
		for _, sw := range []bool{false, true} {
			a, b := c.a, c.b
			if sw {
				a, b = b, a
			}
			if got := Intersects([]byte(a), []byte(b)); got != c.want {
				t.Errorf("Intersects(%q, %q) = %v; want %v", a, b, got, c.want)
			}
			if got := naiveIntersects(a, b); got != c.want {
				t.Errorf("naiveIntersects(%q, %q) = %v; want %v", a, b, got, c.want)
			}
		}
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		outer, inner string
		want         bool
	}{
		{"a/#", "a/+/c", true},
		{"a/#", "a", true},
		{"a/#", "a/#", true},
		{"a/+", "a/#", false},
		{"+/b", "#", false},
		{"#", "$SYS/#", false},
		{"$SYS/#", "+/x", false},
		{"#", "a/b", true},
		{"a/b", "a/b", true},
		{"a/b", "a/+", false},
		{"a/+/#", "a/+", true},
		{"a/+/#", "a", false},
		{"+/+", "a/b", true},
		{"/+/#", "/#", true},
	} {
		if got := Covers([]byte(c.outer), []byte(c.inner)); got != c.want {
			t.Errorf("Covers(%q, %q) = %v; want %v", c.outer, c.inner, got, c.want)
		}
		if got := naiveCovers(c.outer, c.inner); got != c.want {
			t.Errorf("naiveCovers(%q, %q) = %v; want %v", c.outer, c.inner, got, c.want)
		}
	}
}

// witnessNames enumerates every name of 1..depth levels over the literal
// levels of the given filters plus a fresh level and a fresh '$' level:
// if some name matches a combination of the filters, one of these does
// (a wildcard level can always take the fresh level's place).
func witnessNames(depth int, filters ...string) []string {
	alpha := []string{"zz", "$zz", ""}
	seen := map[string]bool{"zz": true, "$zz": true, "": true}
	for _, f := range filters {
		for _, l := range strings.Split(f, "/") {
			if l != "+" && l != "#" && !seen[l] {
				seen[l] = true
				alpha = append(alpha, l)
			}
		}
	}
	var out []string
	var rec func(prefix string, n int)
	rec = func(prefix string, n int) {
		for _, l := range alpha {
			name := l
			if n > 0 {
				name = prefix + "/" + l
			}
			if name != "" {
				out = append(out, name)
			}
			if n+1 < depth {
				rec(name, n+1)
			}
		}
	}
	rec("", 0)
	return out
}

func nLevels(f string) int { return strings.Count(f, "/") + 1 }

// naiveIntersects looks for a witness name matching both filters.
func naiveIntersects(a, b string) bool {
	for _, n := range witnessNames(max(nLevels(a), nLevels(b))+1, a, b) {
		if naiveMatch(a, n) && naiveMatch(b, n) {
			return true
		}
	}
	return false
}

// naiveCovers looks for a name inner matches and outer does not.
func naiveCovers(outer, inner string) bool {
	for _, n := range witnessNames(max(nLevels(outer), nLevels(inner))+1, outer, inner) {
		if naiveMatch(inner, n) && !naiveMatch(outer, n) {
			return false
		}
	}
	return true
}

// smallFilter reports whether f is a valid, non-shared filter small
// enough for the naive enumeration.
func smallFilter(f string) bool {
	return ValidateFilter([]byte(f), Limits{MaxLen: 40, MaxLevels: 4}) == nil && !strings.HasPrefix(f, "$share")
}

// FuzzMatchFilter compares MatchFilter with the naive matcher.
func FuzzMatchFilter(f *testing.F) {
	for _, s := range [][2]string{{"a/#", "a"}, {"+/+", "/a"}, {"#", "$SYS/x"}, {"a/+/#", "a/b"}, {"$SYS/+", "$SYS/x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, name string) {
		// Invalid input must not panic.
		_ = MatchFilter([]byte(filter), []byte(name))
		if ValidateFilter([]byte(filter), Limits{}) != nil || strings.HasPrefix(filter, "$share") ||
			ValidateName([]byte(name), Limits{}) != nil {
			return
		}
		if got, want := MatchFilter([]byte(filter), []byte(name)), naiveMatch(filter, name); got != want {
			t.Fatalf("MatchFilter(%q, %q) = %v; naive %v", filter, name, got, want)
		}
	})
}

// FuzzIntersects compares Intersects and Covers with a search for a
// witness name.
func FuzzIntersects(f *testing.F) {
	for _, s := range [][2]string{{"a/#", "+/b"}, {"a/+", "a/b/c"}, {"#", "$SYS/x"}, {"+/+", "/"}, {"a/+/#", "a"}, {"$SYS/#", "$SYS/+"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		_, _ = Intersects([]byte(a), []byte(b)), Covers([]byte(a), []byte(b))
		if !smallFilter(a) || !smallFilter(b) {
			return
		}
		if got, want := Intersects([]byte(a), []byte(b)), naiveIntersects(a, b); got != want {
			t.Fatalf("Intersects(%q, %q) = %v; naive %v", a, b, got, want)
		}
		if got, want := Covers([]byte(a), []byte(b)), naiveCovers(a, b); got != want {
			t.Fatalf("Covers(%q, %q) = %v; naive %v", a, b, got, want)
		}
	})
}

// Generation changes with every subscription added, replaced or removed,
// and not with a Match: a kept Match result is current while it holds.
func TestGeneration(t *testing.T) {
	tr := NewTree[string]()
	g := tr.Generation()
	step := func(what string, f func()) {
		t.Helper()
		f()
		if n := tr.Generation(); n == g {
			t.Fatalf("%s: Generation still %d", what, g)
		} else {
			g = n
		}
	}
	step("subscribe", func() { tr.Subscribe([]byte("a/+"), Sub[string]{Key: "x", QoS: 1}) })
	step("replace", func() { tr.Subscribe([]byte("a/+"), Sub[string]{Key: "x", QoS: 0}) })
	step("shared", func() { tr.SubscribeGroup("$share/g/a/b", Sub[string]{Key: "y", QoS: 1}) })
	tr.Match([]byte("a/b"), nil)
	if n := tr.Generation(); n != g {
		t.Fatalf("Match changed Generation from %d to %d", g, n)
	}
	step("unsubscribe", func() { tr.Unsubscribe([]byte("a/+"), "x") })
	step("unsubscribe shared", func() { tr.Unsubscribe([]byte("$share/g/a/b"), "y") })
}
