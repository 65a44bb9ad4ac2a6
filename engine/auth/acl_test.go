package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const testACL = `# anonymous section
topic read public/#
topic deny public/secret
topic readwrite anon/+

user alice
topic deny alice/private
topic readwrite alice/#
topic read a/#
topic allowed
topic write  with space/x  
topic read $SYS/broker/#
topic read a/+/leaf

user bob
topic #

user carol
topic deny devices/carol-1/state

pattern write devices/%c/state
pattern read users/%u/#
pattern deny users/%u/secret
pattern readwrite clients/%c/+
`

func mustParse(t testing.TB, s string) *ACL {
	t.Helper()
	a, err := ParseACL("acl", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type probe struct {
	user    string // "" with anon: no user name
	anon    bool
	cid     string
	topic   string
	write   bool
	want    bool
	comment string
}

func checkProbes(t *testing.T, a *ACL, probes []probe) {
	t.Helper()
	for _, p := range probes {
		g := a.For(p.user, !p.anon, p.cid)
		var got bool
		for range 2 { // the second answer comes from the cache
			if p.write {
				got = g.CanWrite([]byte(p.topic))
			} else {
				got = g.CanRead([]byte(p.topic))
			}
			if got != p.want {
				t.Errorf("%s: user %q (anon %v) cid %q %s %q = %v; want %v", p.comment, p.user, p.anon, p.cid, rw(p.write), p.topic, got, p.want)
				break
			}
		}
	}
}

func rw(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

func TestACLDecisions(t *testing.T) {
	a := mustParse(t, testACL)
	checkProbes(t, a, []probe{
		{anon: true, cid: "c", topic: "public/x", want: true, comment: "anonymous section"},
		{anon: true, cid: "c", topic: "public/x", write: true, want: false, comment: "read grant is not write"},
		{anon: true, cid: "c", topic: "public/secret", want: false, comment: "deny beats grant (deny after grant in file)"},
		{anon: true, cid: "c", topic: "anon/x", write: true, want: true},
		{anon: true, cid: "c", topic: "anon/x/y", write: true, want: false, comment: "a/+ does not grant a/b/c"},
		{user: "alice", cid: "c", topic: "public/x", want: false, comment: "anonymous section is not for users"},
		{user: "alice", cid: "c", topic: "alice/private", want: false, comment: "deny beats grant (deny before grant in file)"},
		{user: "alice", cid: "c", topic: "alice/private", write: true, want: false},
		{user: "alice", cid: "c", topic: "alice/x", write: true, want: true},
		{user: "alice", cid: "c", topic: "a/b", want: true, comment: "topic read a/#"},
		{user: "alice", cid: "c", topic: "a", want: true, comment: "a/# covers a"},
		{user: "alice", cid: "c", topic: "a/b", write: true, want: false, comment: "topic read a/# is not write"},
		{user: "alice", cid: "c", topic: "allowed", write: true, want: true},
		{user: "alice", cid: "c", topic: "allowed/secret", want: false, comment: "allowed vs allowed/secret"},
		{user: "alice", cid: "c", topic: "with space/x", write: true, want: true, comment: "topic with a space"},
		{user: "alice", cid: "c", topic: "a/x/leaf", want: true},
		{user: "alice", cid: "c", topic: "$SYS/broker/uptime", want: true, comment: "$SYS read by rule"},
		{user: "alice", cid: "c", topic: "$SYS/broker/uptime", write: true, want: false, comment: "$SYS never written"},
		{user: "alice", cid: "c", topic: "$SYS/broker/connection/x/state", write: true, want: false, comment: "bridge state topic: bridges only"},
		{user: "bob", cid: "c", topic: "any/thing", write: true, want: true, comment: "plain topic = readwrite"},
		{user: "bob", cid: "c", topic: "$SYS/x", want: false, comment: "# does not cover $SYS"},
		{user: "bob", cid: "c", topic: "$other/x", want: false, comment: "# does not cover any $ topic"},
		{user: "bob", cid: "c", topic: "$share/g/x", write: true, want: false, comment: "$share is not a topic name"},
		{user: "dave", cid: "dev1", topic: "devices/dev1/state", write: true, want: true, comment: "pattern %c"},
		{user: "dave", cid: "dev1", topic: "devices/dev2/state", write: true, want: false},
		{user: "dave", cid: "dev1", topic: "devices/dev1/state", want: false, comment: "pattern write is not read"},
		{anon: true, cid: "dev1", topic: "devices/dev1/state", write: true, want: true, comment: "%c patterns apply to anonymous clients"},
		{user: "dave", cid: "c", topic: "users/dave/inbox", want: true, comment: "pattern %u"},
		{user: "dave", cid: "c", topic: "users/dave/secret", want: false, comment: "pattern deny first"},
		{anon: true, cid: "c", topic: "users//inbox", want: false, comment: "%u patterns never apply to anonymous clients"},
		{anon: true, cid: "c", topic: "users/%u/inbox", want: false, comment: "%u patterns never apply to anonymous clients"},
		{user: "dave", cid: "a+b", topic: "clients/a+b/x", want: false, comment: "wildcard in client id: no pattern grants"},
		{user: "dave", cid: "d#", topic: "users/dave/inbox", want: false, comment: "wildcard in client id: no pattern grants"},
		{user: "da+ve", cid: "c", topic: "users/da+ve/x", want: false, comment: "wildcard in user name: no pattern grants"},
		{user: "da#", cid: "c", topic: "clients/c/x", want: false, comment: "wildcard in user name: no pattern grants"},
		{user: "alice", cid: "a+b", topic: "alice/x", want: true, comment: "own grants still apply to a wildcard client id"},
		{user: "alice", cid: "c", topic: "clients/c/x", want: true, comment: "own list does not grant: patterns next"},
		{user: "alice", cid: "c", topic: "users/alice/secret", want: false},
		{user: "carol", cid: "carol-1", topic: "devices/carol-1/state", write: true, want: false, comment: "own deny is final: the pattern is not reached"},
		{user: "carol", cid: "carol-2", topic: "devices/carol-2/state", write: true, want: true, comment: "own list silent: pattern grants"},
	})
}

func TestACLUserGrantBeatsPatternDeny(t *testing.T) {
	a := mustParse(t, "user u\ntopic read users/u/secret\npattern deny users/%u/secret\npattern read users/%u/#\n")
	checkProbes(t, a, []probe{
		{user: "u", cid: "c", topic: "users/u/secret", want: true, comment: "own grant beats pattern deny"},
		{user: "v", cid: "c", topic: "users/v/secret", want: false},
		{user: "v", cid: "c", topic: "users/v/x", want: true},
	})
}

func TestACLNoRules(t *testing.T) {
	a := mustParse(t, "# nothing\n\n")
	g := a.For("x", true, "c")
	if g.CanRead([]byte("a")) || g.CanWrite([]byte("a")) || g.CanSubscribe([]byte("#")) {
		t.Fatal("an empty ACL grants something")
	}
	// Without patterns a wildcard client id changes nothing for own rules.
	a = mustParse(t, "user x\ntopic a\n")
	if !a.For("x", true, "c#").CanRead([]byte("a")) {
		t.Fatal("own rule refused to a client id with '#'")
	}
}

func TestACLSubstitution(t *testing.T) {
	for _, c := range []struct {
		p, user string
		hasUser bool
		cid     string
		want    string
	}{
		{"a/%c/b", "u", true, "id", "a/id/b"},
		{"%u/%c", "u", true, "id", "u/id"},
		{"%%c", "u", true, "id", "%id"},
		{"x/%", "u", true, "id", "x/%"},
		{"%x/%u", "", false, "id", "%x/%u"},
		{"%c%c", "u", true, "%u", "%u%u"}, // inserted text is not substituted again
	} {
		if got := string(substitute([]byte(c.p), c.user, c.hasUser, c.cid)); got != c.want {
			t.Errorf("substitute(%q, %q, %v, %q) = %q; want %q", c.p, c.user, c.hasUser, c.cid, got, c.want)
		}
	}
}

func TestACLSharedGrants(t *testing.T) {
	a := mustParse(t, "user u\ntopic a/#\npattern read users/%u/#\n")
	g1, g2 := a.For("u", true, "dev-1"), a.For("u", true, "dev-2")
	if g1 != g2 {
		t.Fatalf("no %%c pattern, yet two Grants for one user")
	}
	if g3 := a.For("u", true, "dev+3"); g3 == g1 || g3.CanRead([]byte("users/u/x")) {
		t.Fatal("a wildcard client id shares the Grants of a plain one")
	}
	if a.For("v", true, "dev-1") == g1 || a.For("", false, "dev-1") == a.For("", true, "dev-1") {
		t.Fatal("Grants shared across identities")
	}
	b := mustParse(t, "pattern read devices/%c/#\n")
	if b.For("u", true, "d1") == b.For("u", true, "d2") {
		t.Fatalf("a %%c pattern, yet one Grants for two clients")
	}
	if !b.For("u", true, "d1").CanRead([]byte("devices/d1/x")) || b.For("u", true, "d1").CanRead([]byte("devices/d2/x")) {
		t.Fatal("per-client pattern")
	}
	// The shared map is bounded.
	for i := range maxSharedGrants + 10 {
		a.For(fmt.Sprint("user", i), true, "c")
	}
	if n := len(a.shared); n > maxSharedGrants {
		t.Fatalf("%d shared Grants; bound %d", n, maxSharedGrants)
	}
}

func TestACLCanSubscribe(t *testing.T) {
	a := mustParse(t, testACL)
	for _, c := range []struct {
		user   string
		anon   bool
		cid    string
		filter string
		want   bool
	}{
		{user: "alice", cid: "c", filter: "#", want: true},   // read a/# intersects #
		{user: "alice", cid: "c", filter: "a/#", want: true}, // granted
		{user: "alice", cid: "c", filter: "a/+/leaf", want: true},
		{user: "alice", cid: "c", filter: "alice/private", want: false},      // exactly a denied topic
		{user: "alice", cid: "c", filter: "alice/private/#", want: true},     // alice/private/x is readable
		{user: "alice", cid: "c", filter: "nothing/here", want: false},       // no grant intersects
		{user: "alice", cid: "c", filter: "$SYS/#", want: true},              // read $SYS/broker/#
		{user: "alice", cid: "c", filter: "allowed/secret", want: false},     // "allowed" is not a prefix grant
		{user: "alice", cid: "c", filter: "$share/g/a/b", want: true},        // checked on a/b
		{user: "alice", cid: "c", filter: "$share/g/zzz", want: false},       // checked on zzz
		{user: "alice", cid: "c", filter: "with space/x", want: false},       // write-only grant
		{user: "alice", cid: "c", filter: "users/alice/#", want: true},       // pattern
		{user: "alice", cid: "c", filter: "users/alice/secret", want: false}, // pattern deny covers
		{user: "bob", cid: "c", filter: "$SYS/#", want: false},               // # does not reach $SYS
		{user: "bob", cid: "c", filter: "+/x", want: true},
		{anon: true, cid: "c", filter: "public/secret", want: false},
		{anon: true, cid: "c", filter: "public/+", want: true},
		{anon: true, cid: "c", filter: "users/+/x", want: false}, // %u patterns skipped
		{user: "da#", cid: "c", filter: "users/da#/x", want: false},
		{user: "dave", cid: "c", filter: "clients/c/x", want: true},
	} {
		if got := a.For(c.user, !c.anon, c.cid).CanSubscribe([]byte(c.filter)); got != c.want {
			t.Errorf("user %q anon %v CanSubscribe(%q) = %v; want %v", c.user, c.anon, c.filter, got, c.want)
		}
	}
}

func TestParseACLErrors(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{"topic\n", "acl:1: empty topic"},
		{"# c\n\ntopic bogus a/b\n", "acl:3: invalid access \"bogus\""},
		{"topic read a/#/b\n", "acl:1: invalid topic \"a/#/b\""},
		{"topic read a+\n", "invalid topic"},
		{"pattern deny a/b#\n", "invalid topic"},
		{"user\n", "acl:1: missing user name"},
		{"user   \n", "missing user name"},
		{"topics a\n", "acl:1: unknown keyword \"topics\""},
		{"Topic a\n", "unknown keyword \"Topic\""},
		{"topic\tread a\n", "unknown keyword"}, // Mosquitto splits on spaces only
		{"topic a b\n", "invalid access \"a\""},
	} {
		_, err := ParseACL("acl", []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v; want %q", c.data, err, c.want)
		}
	}
	for _, ok := range []string{
		"topic read\n", // the topic "read", readwrite (as Mosquitto)
		"  topic a\n",  // leading spaces
		"\t# indented comment\n",
		"user a b\ntopic x\r\n", // a user name with a space; CRLF
		"topic read  a  b  \n",  // topic "a  b"
	} {
		if _, err := ParseACL("acl", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	a := mustParse(t, "topic read\nuser a b\ntopic read  x  y  \n")
	if !a.For("", false, "c").CanWrite([]byte("read")) || !a.For("a b", true, "c").CanRead([]byte("x  y")) {
		t.Error("\"topic read\" is the topic read; user names and topics keep inner spaces")
	}
	if _, err := LoadACLFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file: no error")
	}
	p := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(p, []byte("topic x\nbad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadACLFile(p); err == nil || !strings.HasPrefix(err.Error(), p+":2: ") {
		t.Errorf("LoadACLFile error %v; want %q", err, p+":2: ...")
	}
}

// Sections of one user merge; deny rules of either part come first.
func TestACLUserSectionsMerge(t *testing.T) {
	a := mustParse(t, "user u\ntopic a/#\nuser v\ntopic b\nuser u\ntopic deny a/x\n")
	g := a.For("u", true, "c")
	if !g.CanRead([]byte("a/y")) || g.CanRead([]byte("a/x")) || g.CanRead([]byte("b")) {
		t.Fatal("merged sections")
	}
}

func TestGrantsCacheBounded(t *testing.T) {
	a := mustParse(t, "user u\ntopic read a/#\n")
	g := a.For("u", true, "c")
	for i := range 5000 {
		if !g.CanRead(fmt.Appendf(nil, "a/%d", i)) {
			t.Fatal("refused")
		}
	}
	long := "a/" + strings.Repeat("x", maxCachedTopic)
	if !g.CanRead([]byte(long)) || g.CanRead([]byte("b/"+long)) {
		t.Fatal("long topic")
	}
	c := g.cache.Load()
	n := 0
	for i := range c.slots {
		if c.slots[i].Load() != nil {
			n++
		}
	}
	if len(c.slots) != sharedSlots || n == 0 {
		t.Fatalf("%d slots, %d cached decisions; want %d slots", len(c.slots), n, sharedSlots)
	}
	// A client's own Grants (a %c pattern) get the small table.
	b := mustParse(t, "pattern read d/%c/#\n")
	gc := b.For("u", true, "x")
	for i := range 500 {
		gc.CanRead(fmt.Appendf(nil, "d/x/%d", i))
	}
	if l := len(gc.cache.Load().slots); l != clientSlots {
		t.Fatalf("per-client cache of %d slots; want %d", l, clientSlots)
	}
	// Read and write decisions of one topic share an entry.
	g.CanRead([]byte("a/rw"))
	g.CanWrite([]byte("a/rw"))
	if !g.CanRead([]byte("a/rw")) || g.CanWrite([]byte("a/rw")) {
		t.Fatal("read/write bits of one entry mixed up")
	}
}

// Several loops deciding at once agree with a fresh evaluation (run with
// -race to check the cache's locking).
func TestGrantsConcurrent(t *testing.T) {
	a := mustParse(t, testACL)
	g := a.For("alice", true, "c")
	topics := []string{"a/b", "alice/private", "alice/x", "allowed", "allowed/secret", "$SYS/broker/x", "users/alice/secret", "clients/c/q"}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				tp := []byte(fmt.Sprintf("%s/%d", topics[(i+w)%len(topics)], i%300))
				if i%3 == 0 {
					tp = []byte(topics[(i+w)%len(topics)])
				}
				if g.CanRead(tp) != g.eval(tp, accRead) || g.CanWrite(tp) != g.eval(tp, accWrite) {
					select {
					case errs <- string(tp):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("cached decision differs from evaluation for %q", e)
	}
}

// FuzzParseACL: parsing never panics and is deterministic.
func FuzzParseACL(f *testing.F) {
	f.Add([]byte(testACL))
	f.Add([]byte("topic read\nuser\n"))
	f.Add([]byte("pattern %c/%u/#\n  topic deny  a b \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a1, err1 := ParseACL("f", data)
		a2, err2 := ParseACL("f", data)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("errors %v / %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if !reflect.DeepEqual(a1.anon, a2.anon) || !reflect.DeepEqual(a1.users, a2.users) ||
			!reflect.DeepEqual(a1.patterns, a2.patterns) || a1.hasC != a2.hasC {
			t.Fatal("two parses differ")
		}
		g := a1.For("u", true, "c")
		_ = g.CanRead([]byte("a/b")) || g.CanWrite([]byte("$SYS/x")) || g.CanSubscribe([]byte("#"))
	})
}
