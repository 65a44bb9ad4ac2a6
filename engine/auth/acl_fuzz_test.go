package auth

import (
	"strings"
	"testing"
)

// naiveMatch is a reference filter matcher: split on '/', compare levels.
func naiveMatch(filter, name string) bool {
	if strings.HasPrefix(name, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	f, n := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, lv := range f {
		if lv == "#" {
			return true
		}
		if i >= len(n) || (lv != "+" && lv != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

type naiveRule struct {
	pattern bool
	user    string // "" with anon: the anonymous section
	anon    bool
	deny    bool
	acc     string // "read", "write", "readwrite"
	topic   string
}

// naiveDecide is Mosquitto's mosquitto_acl_check_default written out
// directly over the rules in file order.
func naiveDecide(rules []naiveRule, user string, hasUser bool, cid, topic string, write bool) bool {
	if strings.HasPrefix(topic, "$SYS") && write {
		return false
	}
	if strings.HasPrefix(topic, "$share") {
		return false
	}
	allows := func(r naiveRule, t string) (matched, allow bool) {
		if !naiveMatch(t, topic) {
			return false, false
		}
		if r.deny {
			return true, false
		}
		if r.acc == "readwrite" || (write && r.acc == "write") || (!write && r.acc == "read") {
			return true, true
		}
		return false, false
	}
	mine := func(r naiveRule) bool { return !r.pattern && r.anon == !hasUser && (!hasUser || r.user == user) }
	for _, r := range rules { // denies first
		if mine(r) && r.deny {
			if m, _ := allows(r, r.topic); m {
				return false
			}
		}
	}
	for _, r := range rules {
		if mine(r) && !r.deny {
			if _, ok := allows(r, r.topic); ok {
				return true
			}
		}
	}
	hasPatterns := false
	for _, r := range rules {
		hasPatterns = hasPatterns || r.pattern
	}
	if hasPatterns && (strings.ContainsAny(cid, "+#") || (hasUser && strings.ContainsAny(user, "+#"))) {
		return false
	}
	rep := strings.NewReplacer("%c", cid, "%u", user)
	for _, pass := range []bool{true, false} { // deny patterns first
		for _, r := range rules {
			if !r.pattern || r.deny != pass || (strings.Contains(r.topic, "%u") && !hasUser) {
				continue
			}
			if m, ok := allows(r, rep.Replace(r.topic)); m {
				return ok
			}
		}
	}
	return false
}

var (
	fuzzRuleTopics = []string{"a", "a/b", "a/+", "a/#", "#", "+/b", "+", "$SYS/#", "$SYS/x", "%c/#", "%u/+", "a/%c", "x/%u/%c", "+/+/%c", "%u"}
	fuzzUsers      = []string{"u1", "u2", "a+b"}
	fuzzAccess     = []string{"", "read", "write", "readwrite", "deny"}
	fuzzIdentities = []struct {
		user    string
		hasUser bool
		cid     string
	}{{"", false, "c1"}, {"", false, "c#"}, {"u1", true, "c1"}, {"u2", true, "a"}, {"a+b", true, "c1"}, {"x", true, "c1"}, {"u1", true, "b+"}}
	fuzzFilters = []string{"#", "+", "a/#", "a/+", "+/b", "a/b", "$SYS/#", "+/+", "c1/#", "+/u1/+", "a/c1", "$share/g/a/#", "u1", "x/#"}
	fuzzNames   = []string{"a", "a/b", "a/c", "c1/x", "u1/y", "$SYS/x", "a/c1", "x/u1/c1", "b", "u1", "a/a", "q/w/c1", "$share/g/a", "a+b/z", "x/a+b/c1"}
)

// FuzzACLDecisions builds an ACL file from fuzz bytes over a small
// alphabet of rules, and compares every identity's CanRead and CanWrite
// on a set of names with naiveDecide.
func FuzzACLDecisions(f *testing.F) {
	f.Add([]byte{0, 1, 9, 3, 2, 0, 4, 4, 5, 9, 13, 2})
	f.Add([]byte{2, 1, 16, 3, 17, 9, 2, 2, 0, 4, 1, 10, 21, 11})
	f.Fuzz(func(t *testing.T, data []byte) {
		var rules []naiveRule
		var text strings.Builder
		user, anon := "", true
		for i := 0; i+1 < len(data) && len(rules) < 24; i += 2 {
			b, c := int(data[i]), int(data[i+1])
			switch b % 3 {
			case 2:
				user, anon = fuzzUsers[c%len(fuzzUsers)], false
				text.WriteString("user " + user + "\n")
				continue
			}
			r := naiveRule{pattern: b%3 == 1, user: user, anon: anon, topic: fuzzRuleTopics[c%len(fuzzRuleTopics)]}
			acc := fuzzAccess[(b/3)%len(fuzzAccess)]
			r.deny, r.acc = acc == "deny", acc
			if acc == "" {
				r.acc = "readwrite"
			}
			kw := "topic"
			if r.pattern {
				kw = "pattern"
			}
			text.WriteString(strings.TrimSpace(kw+" "+acc) + " " + r.topic + "\n")
			rules = append(rules, r)
		}
		a, err := ParseACL("f", []byte(text.String()))
		if err != nil {
			t.Fatalf("parse: %v\n%s", err, text.String())
		}
		for _, id := range fuzzIdentities {
			g := a.For(id.user, id.hasUser, id.cid)
			// CanSubscribe never refuses a filter through which some
			// readable name could be delivered.
			for _, f := range fuzzFilters {
				if g.CanSubscribe([]byte(f)) {
					continue
				}
				nf := f
				if rest, ok := strings.CutPrefix(f, "$share/g/"); ok {
					nf = rest // a shared subscription receives what its filter matches
				}
				for _, n := range fuzzNames {
					if naiveMatch(nf, n) && naiveDecide(rules, id.user, id.hasUser, id.cid, n, false) {
						t.Fatalf("user %q (has %v) cid %q: CanSubscribe(%q) false, yet %q is readable\n%s", id.user, id.hasUser, id.cid, f, n, text.String())
					}
				}
			}
			for _, n := range fuzzNames {
				for _, write := range []bool{false, true} {
					want := naiveDecide(rules, id.user, id.hasUser, id.cid, n, write)
					for range 2 { // evaluated, then cached
						got := g.CanRead([]byte(n))
						if write {
							got = g.CanWrite([]byte(n))
						}
						if got != want {
							t.Fatalf("user %q (has %v) cid %q %s %q = %v; naive %v\n%s", id.user, id.hasUser, id.cid, rw(write), n, got, want, text.String())
						}
					}
				}
			}
		}
	})
}
