package topic

import "sync"

// Retained indexes retained messages by topic name: exact lookups are one
// map access; a wildcard filter walks a trie of the stored names level by
// level, so its cost follows the matches, not the number stored. Safe for
// concurrent use.
type Retained[V any] struct {
	mu    sync.RWMutex
	exact map[string]*rnode[V]
	root  rnode[V]
}

// rnode is one level of a stored name. Its children are a short slice
// while few (a retained topic per device, devices/{id}/status, gives every
// {id} node one child: a slice of one pointer, where a one-entry map costs
// ~250 bytes) and a map above ChildMapThreshold. Names are substrings of
// the first topic stored through them, so a level costs no string of its
// own.
type rnode[V any] struct {
	name     string
	topic    string // full name, when has
	parent   *rnode[V]
	children []*rnode[V]          // when few
	childMap map[string]*rnode[V] // when many
	v        V
	has      bool
}

func (n *rnode[V]) child(level string) *rnode[V] {
	if n.childMap != nil {
		return n.childMap[level]
	}
	for _, c := range n.children {
		if c.name == level {
			return c
		}
	}
	return nil
}

func (n *rnode[V]) addChild(c *rnode[V]) {
	if n.childMap != nil {
		n.childMap[c.name] = c
		return
	}
	n.children = append(n.children, c)
	if len(n.children) > ChildMapThreshold {
		n.childMap = byName(n.children, func(x *rnode[V]) string { return x.name })
		n.children = nil
	}
}

func (n *rnode[V]) removeChild(c *rnode[V]) {
	if n.childMap != nil {
		delete(n.childMap, c.name)
		return
	}
	for i, x := range n.children {
		if x == c {
			n.children = append(n.children[:i], n.children[i+1:]...)
			return
		}
	}
}

func (n *rnode[V]) numChildren() int { return len(n.children) + len(n.childMap) }

// each calls fn for every child until fn returns false.
func (n *rnode[V]) each(fn func(*rnode[V]) bool) bool {
	for _, c := range n.children {
		if !fn(c) {
			return false
		}
	}
	for _, c := range n.childMap {
		if !fn(c) {
			return false
		}
	}
	return true
}

// NewRetained returns an empty index.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{exact: make(map[string]*rnode[V])}
}

// Count is the number of stored topics.
func (r *Retained[V]) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.exact)
}

// Set stores v for topic (copied), replacing what was there.
func (r *Retained[V]) Set(topic []byte, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.exact[string(topic)]; n != nil {
		n.v = v
		return
	}
	ts := string(topic)
	n := &r.root
	start := 0
	for i := 0; i <= len(ts); i++ {
		if i < len(ts) && ts[i] != '/' {
			continue
		}
		level := ts[start:i]
		start = i + 1
		c := n.child(level)
		if c == nil {
			c = &rnode[V]{name: level, parent: n}
			n.addChild(c)
		}
		n = c
	}
	n.topic, n.v, n.has = ts, v, true
	r.exact[n.topic] = n
}

// Delete removes topic and reports whether it was stored.
func (r *Retained[V]) Delete(topic []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.exact[string(topic)]
	if n == nil {
		return false
	}
	delete(r.exact, n.topic)
	var zero V
	n.v, n.has, n.topic = zero, false, ""
	for n != &r.root && !n.has && n.numChildren() == 0 {
		p := n.parent
		p.removeChild(n)
		n = p
	}
	return true
}

// Get returns the value stored for topic.
func (r *Retained[V]) Get(topic []byte) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.exact[string(topic)]; n != nil {
		return n.v, true
	}
	var zero V
	return zero, false
}

// Range calls fn for every stored topic until fn returns false.
func (r *Retained[V]) Range(fn func(topic string, v V) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for t, n := range r.exact {
		if !fn(t, n.v) {
			return
		}
	}
}

// Match calls fn for every stored topic that filter matches (wildcards
// allowed; names starting with '$' are not matched by a leading wildcard
// [MQTT-4.7.2-1]) until fn returns false. fn runs under the read lock: it
// must not call back into r.
func (r *Retained[V]) Match(filter []byte, fn func(topic string, v V) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !hasWildcard(filter) {
		if n := r.exact[string(filter)]; n != nil {
			fn(n.topic, n.v)
		}
		return
	}
	r.root.match(filter, 0, true, fn)
}

// match matches filter[start:] below n; it reports false when fn stopped.
func (n *rnode[V]) match(filter []byte, start int, top bool, fn func(string, V) bool) bool {
	end := start
	for end < len(filter) && filter[end] != '/' {
		end++
	}
	level := filter[start:end]
	last := end == len(filter)
	switch string(level) {
	case "#":
		// The parent itself ("sport/#" matches "sport"), then everything below.
		if !top && n.has && !fn(n.topic, n.v) {
			return false
		}
		return n.each(func(c *rnode[V]) bool {
			if top && len(c.name) > 0 && c.name[0] == '$' {
				return true
			}
			return c.all(fn)
		})
	case "+":
		return n.each(func(c *rnode[V]) bool {
			if top && len(c.name) > 0 && c.name[0] == '$' {
				return true
			}
			return c.step(filter, end, last, fn)
		})
	}
	if c := n.child(string(level)); c != nil {
		return c.step(filter, end, last, fn)
	}
	return true
}

func (c *rnode[V]) step(filter []byte, end int, last bool, fn func(string, V) bool) bool {
	if last {
		if c.has {
			return fn(c.topic, c.v)
		}
		return true
	}
	return c.match(filter, end+1, false, fn)
}

// all calls fn for n and everything below it.
func (n *rnode[V]) all(fn func(string, V) bool) bool {
	if n.has && !fn(n.topic, n.v) {
		return false
	}
	return n.each(func(c *rnode[V]) bool { return c.all(fn) })
}
