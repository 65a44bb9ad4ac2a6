package auth

// The password file, as Mosquitto 2.0's mosquitto_passwd writes it:
//
//	# comment
//	alice:$7$101$SALT_B64$HASH_B64
//	bob:$6$SALT_B64$HASH_B64
//
// $7$ is PBKDF2-HMAC-SHA512 with ITER iterations (101 by default), $6$ is
// SHA-512(password || salt); the salt is 12 bytes, the hash 64, both in
// standard base64 with padding. Spaces around the user name and the hash
// are ignored, as Mosquitto does.

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Hash parameters, as Mosquitto 2.0 uses them.
const (
	DefaultIterations = 101 // PW_DEFAULT_ITERATIONS
	SaltLen           = 12
	HashLen           = 64
	// maxIterations bounds a file's iteration count so that one line
	// cannot make every login of that user take minutes.
	maxIterations = 10_000_000
)

type hashKind uint8

const (
	kindSHA512 hashKind = 6
	kindPBKDF2 hashKind = 7
)

type pwEntry struct {
	kind  hashKind
	iter  int
	salt  []byte
	hash  []byte
	ident string // the user name
}

// PasswordFile is a parsed password file. It is immutable after parsing
// and safe for concurrent use.
type PasswordFile struct {
	users map[string]*pwEntry
}

// LoadPasswordFile reads and parses a password file. A bad line is an
// error "PATH:LINE: reason" and nothing is returned: a reload keeps the
// old file.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return ParsePasswordFile(path, data)
}

// ParsePasswordFile parses the contents of a password file; name is used in
// error messages ("name:LINE: reason"). Blank lines and lines starting with
// '#' are skipped. A user listed twice keeps its last line, as in
// Mosquitto.
func ParsePasswordFile(name string, data []byte) (*PasswordFile, error) {
	f := &PasswordFile{users: make(map[string]*pwEntry)}
	for n, line := range splitLines(data) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		e, err := parsePasswordLine(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n+1, err)
		}
		f.users[e.ident] = e
	}
	return f, nil
}

// splitLines splits data at '\n'; a final line without one counts.
func splitLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func parsePasswordLine(s string) (*pwEntry, error) {
	user, hash, ok := strings.Cut(s, ":")
	if !ok {
		return nil, errors.New("missing ':' between user name and hash")
	}
	user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
	if user == "" {
		return nil, errors.New("empty user name")
	}
	if len(user) > 65535 {
		return nil, errors.New("user name too long")
	}
	if hash == "" {
		return nil, errors.New("missing password hash")
	}
	e, err := parseHash(hash)
	if err != nil {
		return nil, fmt.Errorf("user %q: %v", user, err)
	}
	e.ident = user
	return e, nil
}

// parseHash parses "$7$ITER$SALT$HASH" or "$6$SALT$HASH".
func parseHash(h string) (*pwEntry, error) {
	parts := strings.Split(h, "$")
	if len(parts) < 2 || parts[0] != "" {
		return nil, errors.New("password is not a hash (plain text? run tinymq passwd -U)")
	}
	e := &pwEntry{}
	var salt, sum string
	switch parts[1] {
	case "6":
		if len(parts) != 4 {
			return nil, errors.New("malformed $6$ hash: want $6$SALT$HASH")
		}
		e.kind, salt, sum = kindSHA512, parts[2], parts[3]
	case "7":
		if len(parts) != 5 {
			return nil, errors.New("malformed $7$ hash: want $7$ITERATIONS$SALT$HASH")
		}
		it, err := strconv.Atoi(parts[2])
		if err != nil || it < 1 || it > maxIterations {
			return nil, fmt.Errorf("bad iteration count %q", parts[2])
		}
		e.kind, e.iter, salt, sum = kindPBKDF2, it, parts[3], parts[4]
	default:
		return nil, fmt.Errorf("unknown hash type $%s$ (want $6$ or $7$)", parts[1])
	}
	var err error
	if e.salt, err = base64.StdEncoding.Strict().DecodeString(salt); err != nil || len(e.salt) != SaltLen {
		return nil, fmt.Errorf("salt must be %d bytes of base64", SaltLen)
	}
	if e.hash, err = base64.StdEncoding.Strict().DecodeString(sum); err != nil || len(e.hash) != HashLen {
		return nil, fmt.Errorf("hash must be %d bytes of base64", HashLen)
	}
	return e, nil
}

// String formats the entry's hash as it appears in the file.
func (e *pwEntry) String() string {
	b64 := base64.StdEncoding.EncodeToString
	if e.kind == kindSHA512 {
		return "$6$" + b64(e.salt) + "$" + b64(e.hash)
	}
	return "$7$" + strconv.Itoa(e.iter) + "$" + b64(e.salt) + "$" + b64(e.hash)
}

func (e *pwEntry) digest(password []byte) []byte {
	if e.kind == kindSHA512 {
		h := sha512.New()
		h.Write(password)
		h.Write(e.salt)
		return h.Sum(nil)
	}
	return pbkdf2SHA512(password, e.salt, e.iter)
}

func pbkdf2SHA512(password, salt []byte, iter int) []byte {
	k, err := pbkdf2.Key(sha512.New, string(password), salt, iter, HashLen)
	if err != nil {
		// Only in FIPS 140-3 only mode, which rejects 12-byte salts: no
		// Mosquitto hash can verify there; fail closed.
		return nil
	}
	return k
}

// dummy is what Verify computes for an unknown user, so that the time
// taken does not tell which users exist.
var dummy = &pwEntry{kind: kindPBKDF2, iter: DefaultIterations, salt: make([]byte, SaltLen), hash: make([]byte, HashLen)}

// Verify reports whether password is username's password. The hash
// comparison is constant-time, and an unknown user costs a PBKDF2 like a
// known one. Slow on purpose (PBKDF2): never call it on an event loop.
// Safe from any goroutine.
func (f *PasswordFile) Verify(username string, password []byte) bool {
	e, ok := f.users[username]
	if !ok {
		e = dummy
	}
	got := e.digest(password)
	return subtle.ConstantTimeCompare(got, e.hash) == 1 && ok
}

// Has reports whether the file has a line for username. Safe from any
// goroutine.
func (f *PasswordFile) Has(username string) bool { _, ok := f.users[username]; return ok }

// Len is the number of users. Safe from any goroutine.
func (f *PasswordFile) Len() int { return len(f.users) }

// SCRAM returns what SCRAM-SHA-512 (RFC 5802/7677) needs to authenticate
// username without its password: a $7$ entry's PBKDF2-HMAC-SHA512 output
// is SCRAM's SaltedPassword. ok is false for an unknown user or a $6$
// entry. The slices are copies. Safe from any goroutine.
func (f *PasswordFile) SCRAM(username string) (salt []byte, iterations int, saltedPassword []byte, ok bool) {
	e, found := f.users[username]
	if !found || e.kind != kindPBKDF2 {
		return nil, 0, nil, false
	}
	return bytes.Clone(e.salt), e.iter, bytes.Clone(e.hash), true
}

// HashPassword returns a new "$7$101$SALT$HASH" hash of password with a
// random salt, as mosquitto_passwd writes it.
func HashPassword(password []byte) (string, error) {
	return HashPasswordPBKDF2(password, DefaultIterations)
}

// HashPasswordPBKDF2 is HashPassword with another iteration count
// (mosquitto_passwd -I).
func HashPasswordPBKDF2(password []byte, iterations int) (string, error) {
	if iterations < 1 || iterations > maxIterations {
		return "", fmt.Errorf("auth: iteration count %d out of range 1..%d", iterations, maxIterations)
	}
	e := &pwEntry{kind: kindPBKDF2, iter: iterations, salt: make([]byte, SaltLen)}
	if _, err := rand.Read(e.salt); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	if e.hash = e.digest(password); e.hash == nil {
		return "", errors.New("auth: PBKDF2 unavailable")
	}
	return e.String(), nil
}

// HashPasswordSHA512 returns a "$6$SALT$HASH" hash (mosquitto_passwd -H
// sha512, Mosquitto 1.6's format). Prefer HashPassword.
func HashPasswordSHA512(password []byte) (string, error) {
	e := &pwEntry{kind: kindSHA512, salt: make([]byte, SaltLen)}
	if _, err := rand.Read(e.salt); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	e.hash = e.digest(password)
	return e.String(), nil
}

// IsHash reports whether s (a password file's second field) looks like a
// hash rather than a plain-text password: "$6$..." or "$7$...".
func IsHash(s string) bool { return strings.HasPrefix(s, "$6$") || strings.HasPrefix(s, "$7$") }
