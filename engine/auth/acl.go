package auth

// The ACL file, as Mosquitto 2.0.11 reads it (src/security_default.c,
// aclfile__parse):
//
//	# lines before any "user" line: the anonymous section
//	topic read public/#
//	user alice
//	topic readwrite alice/#
//	topic deny alice/secret
//	pattern write devices/%c/state
//	pattern read users/%u/#
//
// "topic [read|write|readwrite|deny] TOPIC" adds a rule to the current
// section (plain "topic TOPIC" is readwrite; TOPIC is the rest of the line
// and may contain spaces), "user NAME" starts a section (one user may have
// several; they merge), "pattern [ACCESS] TOPIC" applies to every client
// with %c replaced by its client id and %u by its user name.
//
// The decision for (identity, topic, read or write), in Mosquitto's order:
//
//  1. '$' topics: writing $SYS/... is refused; $share/... is never a topic
//     name one may write or read.
//  2. The client's own section (its user's, or the anonymous one for a
//     client without a user name), deny rules first: a matching deny
//     refuses (final), a matching grant with the access allows.
//  3. If there are patterns and the user name or client id contains '+'
//     or '#', refuse.
//  4. The patterns (skipping %u ones for clients without a user name), deny
//     rules first: a matching deny refuses, a matching grant allows.
//  5. Refuse.
//
// A rule matches a topic as an MQTT filter matches a name
// (topic.MatchFilter): "a/+" does not grant "a/b/c", and a rule not
// starting with '$' never matches a '$' topic ("#" does not cover $SYS).

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tinymq/tinymq/topic"
)

type access uint8

const (
	accDeny  access = 0
	accRead  access = 1
	accWrite access = 2
)

// rule is one topic or pattern line.
type rule struct {
	topic      []byte
	acc        access
	hasC, hasU bool // pattern contains %c / %u
}

// ACL is a parsed ACL file. It is immutable after parsing (apart from the
// internal cache of shared Grants) and safe for concurrent use.
type ACL struct {
	anon     []rule // the anonymous section, deny rules first
	hasAnon  bool   // some rule came before any user line
	users    map[string][]rule
	patterns []rule // deny rules first
	hasC     bool   // some pattern uses %c: Grants are per client

	mu     sync.Mutex
	shared map[grantsKey]*Grants // bounded by maxSharedGrants
}

// grantsKey identifies the Grants that clients share when no pattern uses
// %c: the rules then depend only on the user name, and on whether the
// client id contains a wildcard (step 3 of the decision).
type grantsKey struct {
	username    string
	hasUsername bool
	badID       bool
}

// maxSharedGrants bounds ACL.shared; past it an arbitrary entry is
// forgotten (clients holding it keep using it).
const maxSharedGrants = 4096

// LoadACLFile reads and parses an ACL file. A bad line is an error
// "PATH:LINE: reason".
func LoadACLFile(path string) (*ACL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return ParseACL(path, data)
}

// isSpace is C's isspace, which Mosquitto uses to trim lines.
func isSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }

func trimSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// token splits s at the first run of spaces, as strtok(s, " ") does:
// tok is the first word, rest what follows the space after it.
func token(s string) (tok, rest string) {
	s = strings.TrimLeft(s, " ")
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

// ParseACL parses the contents of an ACL file; name is used in error
// messages ("name:LINE: reason").
//
// Differences from Mosquitto 2.0.11, all of them accepting files it
// rejects: a comment may be indented, and a line may be indented with
// tabs as well as spaces.
func ParseACL(name string, data []byte) (*ACL, error) {
	a := &ACL{users: make(map[string][]rule), shared: make(map[grantsKey]*Grants)}
	var user *string
	var anonDeny, anonGrant, patDeny, patGrant []rule
	userDeny := map[string][]rule{}
	userGrant := map[string][]rule{}
	var userOrder []string
	for n, raw := range splitLines(data) {
		line := strings.TrimLeft(trimSpace(string(raw)), " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", name, n+1, fmt.Sprintf(format, args...))
		}
		kw, rest := token(line)
		switch kw {
		case "topic", "pattern":
			accS, rest := token(rest)
			if accS == "" {
				return nil, fail("empty topic")
			}
			t := trimSpace(rest)
			acc := accRead | accWrite
			if t == "" {
				t = accS // "topic TOPIC": readwrite
			} else {
				switch accS {
				case "read":
					acc = accRead
				case "write":
					acc = accWrite
				case "readwrite":
					acc = accRead | accWrite
				case "deny":
					acc = accDeny
				default:
					return nil, fail("invalid access %q (want read, write, readwrite or deny)", accS)
				}
			}
			if err := checkACLTopic(t); err != nil {
				return nil, fail("invalid topic %q: %v", t, err)
			}
			r := rule{topic: []byte(t), acc: acc}
			switch {
			case kw == "pattern":
				r.hasC, r.hasU = strings.Contains(t, "%c"), strings.Contains(t, "%u")
				a.hasC = a.hasC || r.hasC
				if acc == accDeny {
					patDeny = append(patDeny, r)
				} else {
					patGrant = append(patGrant, r)
				}
			case user == nil:
				a.hasAnon = true
				if acc == accDeny {
					anonDeny = append(anonDeny, r)
				} else {
					anonGrant = append(anonGrant, r)
				}
			default:
				u := *user
				if _, seen := userDeny[u]; !seen {
					if _, seen := userGrant[u]; !seen {
						userOrder = append(userOrder, u)
					}
				}
				if acc == accDeny {
					userDeny[u] = append(userDeny[u], r)
				} else {
					userGrant[u] = append(userGrant[u], r)
				}
			}
		case "user":
			u := trimSpace(rest)
			if u == "" {
				return nil, fail("missing user name")
			}
			user = &u
		default:
			return nil, fail("unknown keyword %q (want topic, pattern or user)", kw)
		}
	}
	a.anon = append(anonDeny, anonGrant...)
	a.patterns = append(patDeny, patGrant...)
	for _, u := range userOrder {
		a.users[u] = append(append([]rule(nil), userDeny[u]...), userGrant[u]...)
	}
	return a, nil
}

// checkACLTopic is Mosquitto's mosquitto_sub_topic_check: wildcards fill
// whole levels, '#' only last, at most 65,535 bytes and 200 '/'.
func checkACLTopic(t string) error {
	if len(t) > 65535 {
		return errors.New("too long")
	}
	if strings.Count(t, "/") > 200 {
		return errors.New("too many levels")
	}
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '+':
			if (i > 0 && t[i-1] != '/') || (i < len(t)-1 && t[i+1] != '/') {
				return errors.New("'+' must fill a whole level")
			}
		case '#':
			if (i > 0 && t[i-1] != '/') || i != len(t)-1 {
				return errors.New("'#' must be the whole last level")
			}
		}
	}
	return nil
}

// substitute replaces %c and %u in a pattern the way Mosquitto does (left
// to right; %u only for a client with a user name).
func substitute(p []byte, username string, hasUsername bool, clientID string) []byte {
	out := make([]byte, 0, len(p)+len(clientID)+len(username))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i < len(p)-1 {
			switch {
			case p[i+1] == 'c':
				out = append(out, clientID...)
				i++
				continue
			case p[i+1] == 'u' && hasUsername:
				out = append(out, username...)
				i++
				continue
			}
		}
		out = append(out, p[i])
	}
	return out
}

// For compiles the rules that apply to one identity: its own section and
// the patterns with %c and %u substituted. Clients whose rules do not
// depend on the client id (no pattern uses %c) share one *Grants per user
// name, so a fleet of one user costs one Grants. The result stays valid
// after a reload replaced a; call For on the new ACL to apply the new
// rules. Cheap but not free (it may build the Grants): call it once per
// connection. Safe from any goroutine.
func (a *ACL) For(username string, hasUsername bool, clientID string) *Grants {
	badID := strings.ContainsAny(clientID, "+#")
	if a.hasC {
		return a.build(username, hasUsername, clientID, badID, clientSlots)
	}
	k := grantsKey{username: username, hasUsername: hasUsername, badID: badID}
	a.mu.Lock()
	defer a.mu.Unlock()
	if g := a.shared[k]; g != nil {
		return g
	}
	if len(a.shared) >= maxSharedGrants {
		for old := range a.shared {
			delete(a.shared, old)
			break
		}
	}
	g := a.build(username, hasUsername, clientID, badID, sharedSlots)
	a.shared[k] = g
	return g
}

func (a *ACL) build(username string, hasUsername bool, clientID string, badID bool, slots int) *Grants {
	g := &Grants{nslots: slots}
	if hasUsername {
		g.own = a.users[username]
	} else {
		g.own = a.anon
	}
	// [step 3] A wildcard in the user name or client id could widen a
	// pattern ("%u/#" for user "#"): such clients get no pattern grants.
	dangerous := badID || (hasUsername && strings.ContainsAny(username, "+#"))
	if len(a.patterns) > 0 && !dangerous {
		for _, p := range a.patterns {
			if p.hasU && !hasUsername {
				continue // %u patterns never apply to anonymous clients
			}
			r := p
			if p.hasC || p.hasU {
				r.topic = substitute(p.topic, username, hasUsername, clientID)
			}
			g.pats = append(g.pats, r)
		}
	}
	g.none = len(g.own) == 0 && len(g.pats) == 0
	return g
}

// Grants are the rules for one identity, with a bounded decision cache.
// Safe for concurrent use by every event loop.
type Grants struct {
	own  []rule // the identity's own section, deny rules first (shared with the ACL)
	pats []rule // applicable patterns, substituted, deny rules first
	none bool   // no rule at all: everything is refused

	nslots int // decision cache size: clientSlots, or sharedSlots for shared Grants

	cache atomic.Pointer[decisionCache] // allocated on the first decision
}

// The decision cache: per Grants, keyed by topic, a 4-way set-associative
// table of atomic pointers to immutable entries. A lookup hashes the topic,
// loads the set's four adjacent slots and compares their topics: no lock,
// so loops deciding at once never wait on each other, and no allocation.
// A miss evaluates the rules and stores a new entry in an empty slot of
// the set, else over a random one: one allocation of the entry and one of
// the topic's copy. Two loops missing the same topic at once may both
// insert it; the duplicate costs a slot, never a wrong answer, since both
// entries hold the same rules' verdict.
//
// The table is bounded by construction: sharedSlots entries for Grants
// that many clients share, clientSlots for a client's own Grants (an ACL
// with %c patterns), so that such a connection pays at most clientSlots*8
// bytes plus the entries it caches. Topics longer than maxCachedTopic
// bytes are evaluated every time. (A 2-way table was measured first: with
// a random hash seed, three of a benchmark's 64 topics landing in one pair
// evicted each other on every access in about one run in six.)
const (
	sharedSlots    = 1024 // powers of two, multiples of cacheWays
	clientSlots    = 64
	cacheWays      = 4
	maxCachedTopic = 256
)

type decisionCache struct {
	slots []atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	topic string
	bits  uint8 // known/allowed for read and for write
}

// Cache bits per topic.
const (
	readKnown  = 1
	readAllow  = 2
	writeKnown = 4
	writeAllow = 8
)

var cacheSeed = maphash.MakeSeed()

// CanWrite reports whether the identity may publish to topic (a PUBLISH,
// a will). Runs on any event loop: never blocks on I/O, does not allocate
// on a cache hit.
func (g *Grants) CanWrite(topic []byte) bool { return g.decide(topic, accWrite) }

// CanRead reports whether the identity may receive a message on topic
// (every delivery, and retained messages at subscribe time). Same
// guarantees as CanWrite.
func (g *Grants) CanRead(topic []byte) bool { return g.decide(topic, accRead) }

func (g *Grants) decide(t []byte, acc access) bool {
	if g.none {
		return false
	}
	known, allow := uint8(readKnown), uint8(readAllow)
	if acc == accWrite {
		known, allow = writeKnown, writeAllow
	}
	if len(t) > maxCachedTopic {
		return g.eval(t, acc)
	}
	c := g.cache.Load()
	if c == nil {
		c = &decisionCache{slots: make([]atomic.Pointer[cacheEntry], g.nslots)}
		if !g.cache.CompareAndSwap(nil, c) {
			c = g.cache.Load()
		}
	}
	set := c.slots[int(maphash.Bytes(cacheSeed, t))&(len(c.slots)-1)&^(cacheWays-1):][:cacheWays]
	var prev *cacheEntry
	slot := -1
	for j := range set {
		e := set[j].Load()
		if e == nil {
			if slot < 0 {
				slot = j
			}
			continue
		}
		if e.topic == string(t) {
			if e.bits&known != 0 {
				return e.bits&allow != 0
			}
			prev, slot = e, j
			break
		}
	}
	ok := g.eval(t, acc)
	bits := known
	if ok {
		bits |= allow
	}
	e := &cacheEntry{bits: bits}
	if prev != nil {
		e.topic, e.bits = prev.topic, prev.bits|bits // add the other access to the same entry
	} else {
		e.topic = string(t)
		if slot < 0 {
			slot = rand.IntN(cacheWays) // the set is full: a random victim
		}
	}
	set[slot].Store(e)
	return ok
}

// eval applies the rules, without the cache.
func (g *Grants) eval(t []byte, acc access) bool {
	if len(t) > 0 && t[0] == '$' {
		switch {
		case strings.HasPrefix(string(t), "$SYS"):
			// Mosquitto lets bridges (only) write
			// $SYS/broker/connection/+/state; clients never write $SYS.
			if acc == accWrite {
				return false
			}
		case strings.HasPrefix(string(t), "$share"):
			return false // not a topic name (acl__check_dollar)
		}
	}
	for i := range g.own {
		if r := &g.own[i]; topic.MatchFilter(r.topic, t) {
			if r.acc == accDeny {
				return false // a deny in one's own section is final
			}
			if r.acc&acc != 0 {
				return true
			}
		}
	}
	for i := range g.pats {
		if r := &g.pats[i]; topic.MatchFilter(r.topic, t) {
			if r.acc == accDeny {
				return false
			}
			if r.acc&acc != 0 {
				return true
			}
		}
	}
	return false
}

// CanSubscribe reports whether a SUBSCRIBE to filter could ever deliver
// something: false only when no topic the filter matches could be
// readable, because no read grant intersects the filter or a deny rule
// covers all of it. A filter that overlaps any read grant is allowed (each
// delivery is still checked with CanRead). "$share/GROUP/F" is checked on
// F. Mosquitto 2.0.11 itself accepts every subscription. Evaluated every
// time (subscriptions are rare); safe from any goroutine, does not block.
func (g *Grants) CanSubscribe(filter []byte) bool {
	if _, f, ok := topic.SplitShared(filter); ok {
		filter = f
	}
	if len(filter) == 0 || g.none {
		return false
	}
	if verdict, decided := g.subscribeIn(g.own, filter); decided {
		return verdict
	}
	verdict, _ := g.subscribeIn(g.pats, filter)
	return verdict
}

// subscribeIn applies one list (deny rules first) to a filter: decided is
// false when the list says nothing about it.
func (g *Grants) subscribeIn(rules []rule, filter []byte) (verdict, decided bool) {
	for i := range rules {
		r := &rules[i]
		if r.acc == accDeny && topic.Covers(r.topic, filter) {
			return false, true
		}
	}
	for i := range rules {
		r := &rules[i]
		if r.acc&accRead != 0 && topic.Intersects(r.topic, filter) {
			return true, true
		}
	}
	return false, false
}
