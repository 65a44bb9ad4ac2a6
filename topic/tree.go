package topic

// The subscription tree.
//
// A topic name is a list of levels separated by '/': "sport/tennis/player1"
// has three levels, "/a" has two (the first is empty). A filter is a name
// in which a level may be a wildcard:
//
//   - '+' matches exactly one level, which may be empty:
//     "sport/+/player1" matches "sport/tennis/player1" and "sport//player1",
//     not "sport/tennis/x/player1".
//   - '#' is the last level and matches the parent level and any number of
//     levels below it: "sport/#" matches "sport", "sport/tennis" and
//     "sport/tennis/player1"; "#" matches every name.
//   - Names starting with '$' are never matched by a filter whose first
//     level is a wildcard [MQTT-4.7.2-1]: "#" and "+/monitor/Clients" do not
//     match "$SYS/monitor/Clients", "$SYS/#" does.
//
// Layout. Real loads are dominated by exact filters (one per device:
// "devices/{id}/cmd") with a few wildcard ones. Exact filters live in a hash
// map from the whole filter to its entry, so matching them is one map
// lookup whatever their number. Wildcard filters live in a trie keyed by
// level; matching walks it once per name, following for each level the
// child with the level's text, the '+' child, and the '#' child.
//
// Worked example, filters {"a/b" (exact), "a/+", "a/#", "+/b", "#"} and the
// name "a/b": the exact map yields "a/b"; the walk from the root follows
// "a" (then "+" matches level "b": "a/+"; "#" below "a" matches: "a/#"),
// "+" (then "b": "+/b") and "#" ("#"). For "$x/b" only the exact map and
// the literal child "$x" are consulted.
//
// Concurrency: one sync.RWMutex. Matching takes the read lock (every event
// loop matches concurrently); Subscribe and Unsubscribe take the write lock.
// docs/topic.md has the measurements behind this choice.
//
// Shared subscriptions: the members of a $share/{group}/{filter} group sit
// in the filter's entry, and a match appends one of them per group. Which
// one is the Chooser's decision (SetChooser; round-robin without one): the
// engine's looks at its sessions' state, so the tree stays ignorant of
// them. The Chooser runs under the read lock; docs/shared.md has the
// rest.

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// Sub is one subscription as stored and as reported by Match.
type Sub[K comparable] struct {
	Key K      // the subscriber
	ID  uint32 // MQTT 5 subscription identifier, 0 = none
	QoS uint8  // granted QoS
	// Opts are the MQTT 5 subscription option bits, opaque here.
	Opts uint8
	// Shared marks a member of a shared-subscription group ($share/{group}/
	// ...): one member of each group gets each message, and Dedup leaves it
	// alone. The group's name lives in the tree, once, not in every member:
	// with a pointer key a Sub is 16 bytes, stored once per subscription.
	Shared bool
}

// byName indexes a node's children by level name: a node keeps its
// children in a slice while there are at most ChildMapThreshold of them,
// then in a map.
func byName[N any](children []*N, name func(*N) string) map[string]*N {
	m := make(map[string]*N, len(children))
	for _, c := range children {
		m[name(c)] = c
	}
	return m
}

// ChildMapThreshold is the fan-out above which a trie node indexes its
// children with a map instead of scanning a slice. A variable so that
// benchmarks can vary it; set it before building trees.
var ChildMapThreshold = 16

// entry holds the subscriptions of one filter. Shared-subscription groups
// are rare, so they sit behind a pointer: an entry is 32 bytes.
type entry[K comparable] struct {
	subs   []Sub[K]
	groups *[]*group[K] // nil when the filter has no shared group
}

func (e *entry[K]) groupList() []*group[K] {
	if e.groups == nil {
		return nil
	}
	return *e.groups
}

type group[K comparable] struct {
	name    string
	id      GroupID
	members []Sub[K]
	next    atomic.Uint32 // round-robin counter, advanced once per pick
}

// GroupID names one shared-subscription group (one $share/{group}/{filter})
// for as long as it has members. Ids are not reused (a counter that wraps
// only after 2^32 groups were made), so a message that remembers the
// group it came through never reaches a later group by mistake. 0 is no
// group.
type GroupID uint32

// Chooser picks the member of a shared-subscription group that gets a
// message: members is the group's member list and rr the group's
// round-robin counter for this pick (rr % len(members) is the plain
// round-robin choice). It returns an index into members; a value out of
// range means the round-robin choice.
//
// It runs under the tree's read lock, on whichever goroutine is matching:
// it must not call into the tree, and must neither keep nor modify
// members. It may take locks of its own that are never held while
// calling into the tree.
type Chooser[K comparable] func(members []Sub[K], rr uint32) int

// pick chooses one member of g (which has members) with choose, or
// round-robin when choose is nil. Caller holds the read lock.
func (g *group[K]) pick(choose Chooser[K]) int {
	n := len(g.members)
	rr := g.next.Add(1) - 1
	i := int(rr % uint32(n))
	if choose != nil {
		if j := choose(g.members, rr); j >= 0 && j < n {
			i = j
		}
	}
	return i
}

func (e *entry[K]) empty() bool { return len(e.subs) == 0 && len(e.groupList()) == 0 }

// matchCtx is what a match walk carries besides its output: the chooser
// in force and, for MatchGroups, where the groups of the picked shared
// members go. It lives on Match's stack.
type matchCtx[K comparable] struct {
	choose Chooser[K]
	groups *[]GroupID // nil: not wanted
}

// appendTo appends the entry's subscriptions and one member of each group
// (as m's chooser picks).
func (e *entry[K]) appendTo(dst []Sub[K], m *matchCtx[K]) []Sub[K] {
	dst = append(dst, e.subs...)
	for _, g := range e.groupList() {
		if len(g.members) == 0 {
			continue
		}
		dst = append(dst, g.members[g.pick(m.choose)])
		if m.groups != nil {
			*m.groups = append(*m.groups, g.id)
		}
	}
	return dst
}

type node[K comparable] struct {
	name     string
	parent   *node[K]
	children []*node[K]          // when few
	childMap map[string]*node[K] // when many
	plus     *node[K]
	hash     *node[K]
	e        entry[K]
}

func (n *node[K]) child(level []byte) *node[K] {
	if n.childMap != nil {
		return n.childMap[string(level)]
	}
	for _, c := range n.children {
		if c.name == string(level) {
			return c
		}
	}
	return nil
}

// addChild finds or makes the child for level; keep holds level's bytes
// as a string, which a new node takes as its name.
func (n *node[K]) addChild(level []byte, keep string) *node[K] {
	switch string(level) {
	case "+":
		if n.plus == nil {
			n.plus = &node[K]{name: "+", parent: n}
		}
		return n.plus
	case "#":
		if n.hash == nil {
			n.hash = &node[K]{name: "#", parent: n}
		}
		return n.hash
	}
	if c := n.child(level); c != nil {
		return c
	}
	c := &node[K]{name: keep, parent: n}
	if n.childMap != nil {
		n.childMap[c.name] = c
		return c
	}
	n.children = append(n.children, c)
	if len(n.children) > ChildMapThreshold {
		n.childMap = byName(n.children, func(x *node[K]) string { return x.name })
		n.children = nil
	}
	return c
}

func (n *node[K]) removeChild(c *node[K]) {
	switch {
	case c == n.plus:
		n.plus = nil
	case c == n.hash:
		n.hash = nil
	case n.childMap != nil:
		delete(n.childMap, c.name)
	default:
		for i, x := range n.children {
			if x == c {
				n.children = append(n.children[:i], n.children[i+1:]...)
				break
			}
		}
	}
}

func (n *node[K]) leafless() bool {
	return n.e.empty() && len(n.children) == 0 && len(n.childMap) == 0 && n.plus == nil && n.hash == nil
}

// Tree is the subscription index. Safe for concurrent use.
type Tree[K comparable] struct {
	mu     sync.RWMutex
	exact  map[string]*entry[K]
	root   node[K]
	count  int
	choose Chooser[K]            // nil: round-robin
	groups map[GroupID]*group[K] // every shared group, for PickFrom
	lastID GroupID
	gen    atomic.Uint64 // bumped by every Subscribe and Unsubscribe (Generation)
}

// Generation changes whenever a subscription is added, replaced or
// removed: a caller that keeps a Match result may use it again while
// Generation returns what it did before that Match. Any goroutine.
func (t *Tree[K]) Generation() uint64 { return t.gen.Load() }

// SetChooser makes c pick the member of each shared group that gets a
// message (nil: plain round-robin). Any goroutine; usually set once,
// before the first Match.
func (t *Tree[K]) SetChooser(c Chooser[K]) {
	t.mu.Lock()
	t.choose = c
	t.mu.Unlock()
}

// NewTree returns an empty tree.
func NewTree[K comparable]() *Tree[K] {
	return &Tree[K]{exact: make(map[string]*entry[K])}
}

// Count is the number of subscriptions (shared members included).
func (t *Tree[K]) Count() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}

// levels splits a name into level boundaries on the stack: ends[i] is the
// index after level i. It returns false for names deeper than the array.
func levels(name []byte, ends *[32]int) (int, bool) {
	n := 0
	for i, c := range name {
		if c == '/' {
			if n == len(ends)-1 {
				return 0, false
			}
			ends[n] = i
			n++
		}
	}
	ends[n] = len(name)
	return n + 1, true
}

// Subscribe adds s under filter, or replaces the subscription of the same
// key to the same filter (including the $share prefix) and reports true.
// The filter must be valid (ValidateFilter); it is copied (once: map key
// and level names are pieces of one string).
func (t *Tree[K]) Subscribe(filter []byte, s Sub[K]) (replaced bool) {
	return t.SubscribeString(string(filter), s)
}

// SubscribeString is Subscribe for a filter the caller keeps as a string
// anyway (the engine's session holds its filters): the tree keeps pieces
// of that string, so a subscription costs one string, not two.
func (t *Tree[K]) SubscribeString(keep string, s Sub[K]) (replaced bool) {
	replaced, _ = t.SubscribeGroup(keep, s)
	return replaced
}

// SubscribeGroup is SubscribeString that also returns the id of the shared
// group a $share filter joined (0 for a plain filter). The id stays the
// group's while s is one of its members.
func (t *Tree[K]) SubscribeGroup(keep string, s Sub[K]) (replaced bool, id GroupID) {
	// Read only: the bytes are never written through this slice.
	filter := unsafe.Slice(unsafe.StringData(keep), len(keep))
	groupName, f, shared := SplitShared(filter)
	s.Shared = shared
	if shared {
		filter = f
		keep = keep[len(keep)-len(f):]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.gen.Add(1) // after the change, under the lock (Generation)
	e := t.entryFor(filter, keep, true)
	if shared {
		var g *group[K]
		for _, x := range e.groupList() {
			if x.name == string(groupName) {
				g = x
				break
			}
		}
		if g == nil {
			t.lastID++
			if t.lastID == 0 {
				t.lastID = 1
			}
			g = &group[K]{name: string(groupName), id: t.lastID}
			if t.groups == nil {
				t.groups = make(map[GroupID]*group[K])
			}
			t.groups[g.id] = g
			if e.groups == nil {
				e.groups = new([]*group[K])
			}
			*e.groups = append(*e.groups, g)
		}
		for i := range g.members {
			if g.members[i].Key == s.Key {
				g.members[i] = s
				return true, g.id
			}
		}
		g.members = append(g.members, s)
		t.count++
		return false, g.id
	}
	for i := range e.subs {
		if e.subs[i].Key == s.Key {
			e.subs[i] = s
			return true, 0
		}
	}
	e.subs = append(e.subs, s)
	t.count++
	return false, 0
}

// entryFor finds (or with create, makes) the entry of a filter. With
// create, keep is filter as a string, whose pieces new map keys and level
// names take. Caller holds mu (write lock when create).
func (t *Tree[K]) entryFor(filter []byte, keep string, create bool) *entry[K] {
	if !hasWildcard(filter) {
		e := t.exact[string(filter)]
		if e == nil && create {
			e = &entry[K]{}
			t.exact[keep] = e
		}
		return e
	}
	n := &t.root
	start := 0
	for i := 0; i <= len(filter); i++ {
		if i < len(filter) && filter[i] != '/' {
			continue
		}
		level, from := filter[start:i], start
		start = i + 1
		var next *node[K]
		if create {
			next = n.addChild(level, keep[from:i])
		} else {
			switch string(level) {
			case "+":
				next = n.plus
			case "#":
				next = n.hash
			default:
				next = n.child(level)
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return &n.e
}

// Unsubscribe removes key's subscription to filter (with its $share
// prefix, if any) and reports whether there was one.
func (t *Tree[K]) Unsubscribe(filter []byte, key K) (removed bool) {
	groupName, f, shared := SplitShared(filter)
	if shared {
		filter = f
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.gen.Add(1) // after the change, under the lock (Generation)
	e := t.entryFor(filter, "", false)
	if e == nil {
		return false
	}
	if shared {
		gs := e.groupList()
		for gi, g := range gs {
			if g.name != string(groupName) {
				continue
			}
			for i := range g.members {
				if g.members[i].Key == key {
					g.members = append(g.members[:i], g.members[i+1:]...)
					removed = true
					break
				}
			}
			if len(g.members) == 0 {
				delete(t.groups, g.id)
				if gs = append(gs[:gi], gs[gi+1:]...); len(gs) == 0 {
					e.groups = nil
				} else {
					*e.groups = gs
				}
			}
			break
		}
	} else {
		for i := range e.subs {
			if e.subs[i].Key == key {
				e.subs = append(e.subs[:i], e.subs[i+1:]...)
				removed = true
				break
			}
		}
	}
	if !removed {
		return false
	}
	t.count--
	if e.empty() {
		t.prune(filter)
	}
	return true
}

// prune drops the now empty entry of filter and trie nodes left without
// purpose. Caller holds the write lock.
func (t *Tree[K]) prune(filter []byte) {
	if !hasWildcard(filter) {
		delete(t.exact, string(filter))
		return
	}
	n := t.nodeOf(filter)
	for n != nil && n != &t.root && n.leafless() {
		p := n.parent
		p.removeChild(n)
		n = p
	}
}

func (t *Tree[K]) nodeOf(filter []byte) *node[K] {
	n := &t.root
	start := 0
	for i := 0; i <= len(filter); i++ {
		if i < len(filter) && filter[i] != '/' {
			continue
		}
		level := filter[start:i]
		start = i + 1
		switch string(level) {
		case "+":
			n = n.plus
		case "#":
			n = n.hash
		default:
			n = n.child(level)
		}
		if n == nil {
			return nil
		}
	}
	return n
}

// Match appends to dst every subscription whose filter matches the topic
// name and returns dst. For each matching shared group exactly one member
// is appended, chosen by the tree's Chooser (round-robin without one).
// Overlapping subscriptions of one key are all reported (see Dedup). It
// allocates nothing when dst has room.
func (t *Tree[K]) Match(name []byte, dst []Sub[K]) []Sub[K] {
	return t.match(name, dst, nil)
}

// MatchGroups is Match that also appends to groups, for each shared member
// appended to dst, the id of the group it was picked from, in the same
// order: the k-th Sub with Shared set came through groups[k] (Dedup keeps
// that correspondence). It allocates nothing when both have room.
func (t *Tree[K]) MatchGroups(name []byte, dst []Sub[K], groups []GroupID) ([]Sub[K], []GroupID) {
	dst = t.match(name, dst, &groups)
	return dst, groups
}

func (t *Tree[K]) match(name []byte, dst []Sub[K], groups *[]GroupID) []Sub[K] {
	var ends [32]int
	n, ok := levels(name, &ends)
	t.mu.RLock()
	m := matchCtx[K]{choose: t.choose, groups: groups}
	if e := t.exact[string(name)]; e != nil {
		dst = e.appendTo(dst, &m)
	}
	if ok {
		dst = t.root.match(name, ends[:n], 0, 0, dst, &m)
	} else {
		dst = t.root.matchSlow(name, 0, dst, &m)
	}
	t.mu.RUnlock()
	return dst
}

// PickFrom picks a member of group id as a Match would (with the tree's
// Chooser), for a message that must go to another member of the group it
// came through. It reports false when the group has no members any more.
// Any goroutine.
func (t *Tree[K]) PickFrom(id GroupID) (Sub[K], bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	g := t.groups[id]
	if g == nil || len(g.members) == 0 {
		return Sub[K]{}, false
	}
	return g.members[g.pick(t.choose)], true
}

// match walks level i of name (which starts at byte start).
func (n *node[K]) match(name []byte, ends []int, i, start int, dst []Sub[K], m *matchCtx[K]) []Sub[K] {
	sys := i == 0 && IsSys(name)
	if n.hash != nil && !sys {
		dst = n.hash.e.appendTo(dst, m) // '#' matches this level and all below, and the parent
	}
	if i == len(ends) {
		return dst
	}
	level := name[start:ends[i]]
	last := i == len(ends)-1
	if n.plus != nil && !sys {
		if last {
			dst = n.plus.e.appendTo(dst, m)
			if n.plus.hash != nil {
				dst = n.plus.hash.e.appendTo(dst, m) // "a/+/#" matches "a/b"
			}
		} else {
			dst = n.plus.match(name, ends, i+1, ends[i]+1, dst, m)
		}
	}
	if c := n.child(level); c != nil {
		if last {
			dst = c.e.appendTo(dst, m)
			if c.hash != nil {
				dst = c.hash.e.appendTo(dst, m) // "sport/#" matches "sport"
			}
		} else {
			dst = c.match(name, ends, i+1, ends[i]+1, dst, m)
		}
	}
	return dst
}

// matchSlow is match for names deeper than the level array: it finds each
// level by scanning. Rare; it allocates nothing either.
func (n *node[K]) matchSlow(name []byte, start int, dst []Sub[K], m *matchCtx[K]) []Sub[K] {
	sys := start == 0 && IsSys(name)
	if n.hash != nil && !sys {
		dst = n.hash.e.appendTo(dst, m)
	}
	if start > len(name) {
		return dst
	}
	end := start
	for end < len(name) && name[end] != '/' {
		end++
	}
	last := end == len(name)
	level := name[start:end]
	for _, c := range [2]*node[K]{n.plus, n.child(level)} {
		if c == nil || (c == n.plus && sys) {
			continue
		}
		if last {
			dst = c.e.appendTo(dst, m)
			if c.hash != nil {
				dst = c.hash.e.appendTo(dst, m)
			}
		} else {
			dst = c.matchSlow(name, end+1, dst, m)
		}
	}
	return dst
}

// dupFrom finds the entry at or after out[from] that s merges into (same
// key, identifier and options, not shared), or -1.
func dupFrom[K comparable](out []Sub[K], from int, s Sub[K]) int {
	for j := from; j < len(out); j++ {
		if out[j].Key == s.Key && !out[j].Shared && out[j].ID == s.ID && out[j].Opts == s.Opts {
			return j
		}
	}
	return -1
}

// Dedup merges, in place, the normal (non-shared) subscriptions of one key
// into one entry with the highest QoS, as MQTT asks for overlapping
// subscriptions [MQTT-3.3.5-1]. Subscriptions of one key with different
// MQTT 5 subscription identifiers or options stay apart: each gets its own
// copy, carrying its own identifier ([MQTT5-3.3.4-5]). seen is scratch space reused across calls
// (it may be nil for small inputs); the result keeps first-seen order.
func Dedup[K comparable](subs []Sub[K], seen map[K]int) []Sub[K] {
	if len(subs) < 2 {
		return subs
	}
	out := subs[:0]
	if len(subs) <= 16 || seen == nil {
		for _, s := range subs {
			dup := false
			if !s.Shared {
				for j := range out {
					if out[j].Key == s.Key && !out[j].Shared && out[j].ID == s.ID && out[j].Opts == s.Opts {
						out[j].QoS = max(out[j].QoS, s.QoS)
						dup = true
						break
					}
				}
			}
			if !dup {
				out = append(out, s)
			}
		}
		clear(subs[len(out):])
		return out
	}
	clear(seen)
	for _, s := range subs {
		if !s.Shared {
			// seen holds the first entry of each key; a key's other
			// entries (other identifiers or options) come after it.
			if j, ok := seen[s.Key]; ok {
				if k := dupFrom(out, j, s); k >= 0 {
					out[k].QoS = max(out[k].QoS, s.QoS)
					continue
				}
			} else {
				seen[s.Key] = len(out)
			}
		}
		out = append(out, s)
	}
	clear(subs[len(out):])
	return out
}
