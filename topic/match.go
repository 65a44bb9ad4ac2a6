package topic

// Filter matching without a tree.
//
// MatchFilter answers "does this one filter match this one name", and
// Intersects "could any name match both of these filters". Both walk the
// inputs level by level in place, with no allocation, and assume valid
// input (ValidateFilter, ValidateName); on invalid input they return some
// answer without panicking. They are what an ACL needs: a rule is a filter,
// a PUBLISH or a delivery is a name, a SUBSCRIBE is a filter.
//
// Levels: "a/b" has levels "a" and "b"; "a/" has "a" and "". '+' stands for
// exactly one level (possibly empty), '#' (last) for the parent level and
// anything below it, so "a/#" matches "a", "a/" and "a/b/c". A filter whose
// first level is a wildcard never matches a name starting with '$'
// [MQTT-4.7.2-1].

// nextLevel returns the level of s starting at i and the index just past
// its end ('/' or len(s)).
func nextLevel(s []byte, i int) (level []byte, end int) {
	for end = i; end < len(s) && s[end] != '/'; end++ {
	}
	return s[i:end], end
}

// slashHash and slashPlusHash match the same valid names: "/#" also
// matches its parent level, the empty name, which is not a valid name.
// Intersects and Covers reason about parent levels, so they use the second
// spelling, which has no such phantom.
var slashPlusHash = []byte("/+/#")

func normSlashHash(f []byte) []byte {
	if string(f) == "/#" {
		return slashPlusHash
	}
	return f
}

func isHash(l []byte) bool { return len(l) == 1 && l[0] == '#' }
func isPlus(l []byte) bool { return len(l) == 1 && l[0] == '+' }

// wildFirst reports whether the first level of filter f is a wildcard.
func wildFirst(f []byte) bool {
	return len(f) > 0 && (f[0] == '+' || f[0] == '#') && (len(f) == 1 || f[1] == '/')
}

// MatchFilter reports whether the topic filter (which may contain '+' and
// '#') matches the topic name. It does not allocate; safe from any
// goroutine.
func MatchFilter(filter, name []byte) bool {
	if len(filter) == 0 || len(name) == 0 {
		return false
	}
	if name[0] == '$' && wildFirst(filter) {
		return false // [MQTT-4.7.2-1]
	}
	fi, ni := 0, 0
	for {
		fl, fe := nextLevel(filter, fi)
		if isHash(fl) {
			return true // the rest of the name, whatever it is
		}
		nl, ne := nextLevel(name, ni)
		if !isPlus(fl) && string(fl) != string(nl) {
			return false
		}
		fLast, nLast := fe == len(filter), ne == len(name)
		switch {
		case fLast && nLast:
			return true
		case fLast:
			return false // the name has more levels
		case nLast:
			// The name is used up: only a final "/#" still matches (the
			// parent level).
			return len(filter)-fe == 2 && filter[fe+1] == '#'
		}
		fi, ni = fe+1, ne+1
	}
}

// Intersects reports whether some topic name matches both filters a and b
// (either may contain wildcards): "a/#" and "+/b" intersect ("a/b"), "a/+"
// and "a/b/c" do not, "#" and "$SYS/x" do not (a wildcard first level never
// matches a '$' name). It does not allocate; safe from any goroutine.
func Intersects(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a, b = normSlashHash(a), normSlashHash(b)
	// The witness name starts with a's first level or b's, whichever is
	// literal; if that literal starts with '$', a wildcard first level on
	// the other side cannot match it.
	if (wildFirst(a) && !wildFirst(b) && b[0] == '$') || (wildFirst(b) && !wildFirst(a) && a[0] == '$') {
		return false
	}
	ai, bi := 0, 0
	for {
		al, ae := nextLevel(a, ai)
		bl, be := nextLevel(b, bi)
		if isHash(al) || isHash(bl) {
			return true // the other side's remaining levels (or none) will do
		}
		if !isPlus(al) && !isPlus(bl) && string(al) != string(bl) {
			return false
		}
		aLast, bLast := ae == len(a), be == len(b)
		switch {
		case aLast && bLast:
			return true
		case aLast:
			return len(b)-be == 2 && b[be+1] == '#' // b's "/#" matches its parent level
		case bLast:
			return len(a)-ae == 2 && a[ae+1] == '#'
		}
		ai, bi = ae+1, be+1
	}
}

// Covers reports whether filter outer matches every topic name that filter
// inner matches (inner's names are a subset of outer's): "a/#" covers
// "a/+/c" and "a", "+/b" does not cover "#", "#" does not cover "$SYS/#".
// It does not allocate; safe from any goroutine.
func Covers(outer, inner []byte) bool {
	if len(outer) == 0 || len(inner) == 0 {
		return false
	}
	outer, inner = normSlashHash(outer), normSlashHash(inner)
	if wildFirst(outer) && !wildFirst(inner) && inner[0] == '$' {
		return false // inner's names start with '$'; outer matches none
	}
	if wildFirst(inner) && !wildFirst(outer) && outer[0] == '$' {
		return false // inner matches names not starting with '$'
	}
	oi, ii := 0, 0
	for {
		ol, oe := nextLevel(outer, oi)
		il, ie := nextLevel(inner, ii)
		if isHash(ol) {
			return true
		}
		switch {
		case isHash(il):
			return false // inner matches any depth here, outer does not
		case isPlus(il):
			if !isPlus(ol) {
				return false
			}
		case !isPlus(ol) && string(ol) != string(il):
			return false
		}
		oLast, iLast := oe == len(outer), ie == len(inner)
		switch {
		case oLast && iLast:
			return true
		case oLast:
			// inner goes deeper; a final "/#" on inner also matches the
			// parent level, which outer matches, but not the levels below.
			return false
		case iLast:
			// inner's names end here; outer needs exactly "/#" next.
			return len(outer)-oe == 2 && outer[oe+1] == '#'
		}
		oi, ii = oe+1, ie+1
	}
}
