package topic

import (
	"errors"
	"unicode/utf8"
)

// Limits bound names and filters beyond the spec's 65,535 bytes. Zero
// fields mean no extra limit.
type Limits struct {
	MaxLen    int // bytes
	MaxLevels int // levels ("a/b/c" has 3)
}

// Validation errors.
var (
	ErrEmpty          = errors.New("topic: empty topic")
	ErrTooLong        = errors.New("topic: too long")
	ErrTooManyLevels  = errors.New("topic: too many levels")
	ErrWildcardInName = errors.New("topic: wildcard in topic name")
	ErrBadWildcard    = errors.New("topic: wildcard must fill a whole level, # only last")
	ErrBadUTF8        = errors.New("topic: malformed UTF-8")
	ErrNullChar       = errors.New("topic: U+0000 in topic")
	ErrControlChar    = errors.New("topic: control character (U+0001..U+001F, U+007F..U+009F) in topic")
	ErrNonCharacter   = errors.New("topic: Unicode non-character in topic")
	ErrBadShare       = errors.New("topic: malformed shared subscription")
)

const maxSpecLen = 65535

func checkCommon(b []byte, l Limits) error {
	if len(b) == 0 {
		return ErrEmpty // [MQTT-4.7.3-1]
	}
	if len(b) > maxSpecLen || (l.MaxLen > 0 && len(b) > l.MaxLen) {
		return ErrTooLong
	}
	levels := 1
	ascii := true
	for _, c := range b {
		switch {
		case c == 0:
			return ErrNullChar // [MQTT-4.7.3-2]
		case c < 0x20 || c == 0x7f:
			return ErrControlChar // as Mosquitto (3.1.1 §1.5.3, 5.0 §1.5.4)
		case c == '/':
			levels++
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii {
		if err := checkRunes(b); err != nil {
			return err
		}
	}
	if l.MaxLevels > 0 && levels > l.MaxLevels {
		return ErrTooManyLevels
	}
	return nil
}

// checkRunes checks the multi-byte sequences of b: well-formed UTF-8
// without surrogates [MQTT-1.5.3-1] [MQTT-1.5.4-1], no C1 control
// character (U+0080..U+009F), no Unicode non-character (U+FDD0..U+FDEF,
// U+nFFFE, U+nFFFF). The same rules as codec.CheckUTF8, which topic cannot
// import.
func checkRunes(b []byte) error {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return ErrBadUTF8
		case r <= 0x9f:
			return ErrControlChar
		case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
			return ErrNonCharacter
		}
		i += size
	}
	return nil
}

// ValidateName checks a topic name (PUBLISH, will): 1..65535 bytes, valid
// UTF-8 without U+0000, control characters or non-characters, no wildcards [MQTT-3.3.2-2] [MQTT-4.7.1-1].
func ValidateName(name []byte, l Limits) error {
	if err := checkCommon(name, l); err != nil {
		return err
	}
	for _, c := range name {
		if c == '+' || c == '#' {
			return ErrWildcardInName
		}
	}
	return nil
}

// ValidateFilter checks a topic filter (SUBSCRIBE, UNSUBSCRIBE), including
// the $share/{group}/{filter} form.
func ValidateFilter(filter []byte, l Limits) error {
	if group, f, ok := SplitShared(filter); ok {
		if len(group) == 0 || len(f) == 0 {
			return ErrBadShare // [MQTT-4.8.2-1]
		}
		for _, c := range group {
			if c == '+' || c == '#' || c == '/' {
				return ErrBadShare // [MQTT-4.8.2-2]
			}
		}
	} else if len(filter) >= 6 && string(filter[:6]) == "$share" && (len(filter) == 6 || filter[6] == '/') {
		return ErrBadShare
	}
	if err := checkCommon(filter, l); err != nil {
		return err
	}
	for i, c := range filter {
		switch c {
		case '#':
			// [MQTT-4.7.1-2]: alone in its level and the last character.
			if i != len(filter)-1 || (i > 0 && filter[i-1] != '/') {
				return ErrBadWildcard
			}
		case '+':
			// [MQTT-4.7.1-3]: fills a whole level.
			if (i > 0 && filter[i-1] != '/') || (i < len(filter)-1 && filter[i+1] != '/') {
				return ErrBadWildcard
			}
		}
	}
	return nil
}

// SplitShared splits "$share/{group}/{filter}". ok is false for any other
// filter; group or f may be empty in a malformed one.
func SplitShared(filter []byte) (group, f []byte, ok bool) {
	const prefix = "$share/"
	if len(filter) < len(prefix) || string(filter[:len(prefix)]) != prefix {
		return nil, nil, false
	}
	rest := filter[len(prefix):]
	for i, c := range rest {
		if c == '/' {
			return rest[:i], rest[i+1:], true
		}
	}
	return rest, nil, true
}

// IsSys reports whether a topic name starts with '$' (e.g. $SYS/...).
// Filters starting with a wildcard never match such names [MQTT-4.7.2-1].
func IsSys(name []byte) bool { return len(name) > 0 && name[0] == '$' }

// hasWildcard reports whether a (valid) filter contains + or #.
func hasWildcard(f []byte) bool {
	for _, c := range f {
		if c == '+' || c == '#' {
			return true
		}
	}
	return false
}
