package engine

import "hash/maphash"

// sessionIndex maps client ids to sessions: every online client and every
// offline persistent session has one entry, so on a host with a million
// devices it is the broker's largest table after the connections
// themselves.
//
// It is a set of open-addressed hash tables (linear probing) holding bare
// session pointers, chosen by the top bits of the id's hash. A slot costs 8
// bytes and tables stay between 3/8 and 3/4 full: 11-21 bytes per session,
// where a map[string]*session spends 29-57 (a 16-byte key and an 8-byte
// value per slot, at most 7/8 full). The id is not stored twice: a probe
// compares the session's own id. Growing doubles one shard, so the pause is
// bounded by a 1/indexShards share of the sessions, never all of them.
//
// Not safe for concurrent use: Broker.sessMu guards it. Removal shifts the
// following entries back (no tombstones), so lookups never slow down with
// churn.
type sessionIndex struct {
	seed   maphash.Seed
	n      int
	shards [indexShards]indexShard
}

const (
	indexShardBits = 6
	indexShards    = 1 << indexShardBits
	indexMinSlots  = 8
)

type indexShard struct {
	slots []*session // power-of-two length, or empty
	n     int
}

func newSessionIndex() *sessionIndex {
	return &sessionIndex{seed: maphash.MakeSeed()}
}

func (x *sessionIndex) hash(id string) uint64 { return maphash.String(x.seed, id) }

func (x *sessionIndex) shard(h uint64) *indexShard {
	return &x.shards[h>>(64-indexShardBits)]
}

// Len is the number of sessions.
func (x *sessionIndex) Len() int { return x.n }

// Get returns the session of id, or nil.
func (x *sessionIndex) Get(id string) *session {
	h := x.hash(id)
	sh := x.shard(h)
	if len(sh.slots) == 0 {
		return nil
	}
	mask := uint64(len(sh.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := sh.slots[i]
		if s == nil || s.id == id {
			return s
		}
	}
}

// Put stores s under s.id, replacing any session with that id.
func (x *sessionIndex) Put(s *session) {
	h := x.hash(s.id)
	sh := x.shard(h)
	if (sh.n+1)*4 > len(sh.slots)*3 {
		x.grow(sh)
	}
	mask := uint64(len(sh.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		t := sh.slots[i]
		if t == nil {
			sh.slots[i] = s
			sh.n++
			x.n++
			return
		}
		if t.id == s.id {
			sh.slots[i] = s
			return
		}
	}
}

// grow doubles sh and re-inserts its sessions.
func (x *sessionIndex) grow(sh *indexShard) {
	old := sh.slots
	size := 2 * len(old)
	if size < indexMinSlots {
		size = indexMinSlots
	}
	sh.slots = make([]*session, size)
	mask := uint64(size - 1)
	for _, s := range old {
		if s == nil {
			continue
		}
		i := x.hash(s.id) & mask
		for sh.slots[i] != nil {
			i = (i + 1) & mask
		}
		sh.slots[i] = s
	}
}

// Remove deletes s if it is the session stored under s.id, and reports
// whether it was.
func (x *sessionIndex) Remove(s *session) bool {
	h := x.hash(s.id)
	sh := x.shard(h)
	if len(sh.slots) == 0 {
		return false
	}
	mask := uint64(len(sh.slots) - 1)
	i := h & mask
	for {
		t := sh.slots[i]
		if t == nil {
			return false
		}
		if t == s {
			break
		}
		i = (i + 1) & mask
	}
	// Backward-shift deletion: pull each later member of the cluster into
	// the hole unless its home slot lies cyclically in (hole, its slot].
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		t := sh.slots[j]
		if t == nil {
			break
		}
		k := x.hash(t.id) & mask
		if (i < j && i < k && k <= j) || (i > j && (k > i || k <= j)) {
			continue // t is already reachable from its home slot
		}
		sh.slots[i] = t
		i = j
	}
	sh.slots[i] = nil
	sh.n--
	x.n--
	return true
}

// Range calls f for each session until f returns false.
func (x *sessionIndex) Range(f func(*session) bool) {
	for k := range x.shards {
		for _, s := range x.shards[k].slots {
			if s != nil && !f(s) {
				return
			}
		}
	}
}
