package auth

// SCRAM-SHA-512 (RFC 5802 with SHA-512, as RFC 7677 does it for SHA-256),
// the mechanism behind MQTT 5 enhanced authentication (AUTH packets with
// Authentication Method "SCRAM-SHA-512"). The exchange:
//
//	client-first   n,,n=USER,r=CNONCE                      (gs2 header "n,," or "y,,")
//	server-first   r=CNONCE SNONCE,s=SALT_B64,i=ITER
//	client-final   c=biws,r=CNONCE SNONCE,p=PROOF_B64      (biws = base64("n,,"))
//	server-final   v=SERVER_SIGNATURE_B64
//
//	SaltedPassword  = PBKDF2-HMAC-SHA512(password, salt, ITER, 64)   (a $7$ entry's hash)
//	ClientKey       = HMAC(SaltedPassword, "Client Key")
//	StoredKey       = SHA512(ClientKey)
//	AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
//	ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
//	ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage)
//
// The server verifies SHA512(ClientProof XOR HMAC(StoredKey, AuthMessage))
// == StoredKey. It never runs PBKDF2: a Mosquitto $7$ hash is already the
// SaltedPassword, so one server exchange is a handful of HMAC-SHA512s
// (BenchmarkSCRAMServer). The client runs PBKDF2 and is slow on purpose.

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"unicode/utf8"
)

// SCRAMMethod is the MQTT 5 authentication method name.
const SCRAMMethod = "SCRAM-SHA-512"

// SCRAMLookup returns a user's SCRAM credentials (PasswordFile.SCRAM fits).
// ok is false for a user that cannot log in with SCRAM (unknown, or a $6$
// entry). It is called once per exchange, from whichever goroutine calls
// SCRAMServer.Step, which never modifies the returned slices.
type SCRAMLookup func(user string) (salt []byte, iterations int, saltedPassword []byte, ok bool)

// Errors returned by the SCRAM server and client. Callers compare with
// errors.Is: the client wraps them with details, the server returns them
// bare so that nothing tells an unknown user from a wrong password.
var (
	// ErrSCRAMFailed means authentication failed: a wrong proof (wrong
	// password, unknown user, $6$ entry), a wrong server signature, a
	// refused iteration count, or a call after the exchange ended.
	ErrSCRAMFailed = errors.New("auth: SCRAM authentication failed")
	// ErrSCRAMMalformed means a message broke RFC 5802's syntax or one of
	// its rules (channel binding, authzid, nonce, c= or r= mismatch, size).
	ErrSCRAMMalformed = errors.New("auth: malformed SCRAM message")
)

const (
	// scramMaxMessage bounds every SCRAM message either side reads.
	scramMaxMessage = 4096
	// scramNonceLen is the number of random bytes in a nonce (base64:
	// 32 characters).
	scramNonceLen = 24
	// scramMinClientIterations is the lowest iteration count the client
	// accepts. RFC 7677 asks for at least 4096, but Mosquitto's
	// mosquitto_passwd writes 101 by default and the server can only offer
	// what the file holds, so the client accepts Mosquitto's default.
	scramMinClientIterations = DefaultIterations
)

var b64 = base64.StdEncoding.Strict()

// scramFakeKey is the per-process key from which the fake salt and
// SaltedPassword of users without SCRAM credentials are derived: stable
// within a process (the same user gets the same salt on every attempt, as
// a real one would), unpredictable across processes.
var scramFakeKey = sync.OnceValue(func() []byte {
	k := make([]byte, 64)
	rand.Read(k) // never fails (Go 1.24+: it crashes the program instead)
	return k
})

// randomNonce returns scramNonceLen random bytes in base64 (printable, no
// ',').
func randomNonce() string {
	var b [scramNonceLen]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

type scramState uint8

const (
	scramStart scramState = iota
	scramFirstDone
	scramDone
	scramFailed
)

// SCRAMServer is the server side of one exchange (not safe for concurrent
// use; one per connection). It knows no connection: the engine feeds it the
// Authentication Data of each AUTH/CONNECT packet and sends back what Step
// returns. It is a small struct plus, until the exchange ends, the
// first two messages; only connections that authenticate with SCRAM need
// one.
type SCRAMServer struct {
	lookup SCRAMLookup
	nonce  func() string // the server nonce; randomNonce unless a test sets it
	state  scramState

	gs2   string // "n,," or "y,,": what c= must carry
	rnd   string // the combined nonce
	user  string
	known bool   // the user has SCRAM credentials
	sp    []byte // SaltedPassword (or the fake one)
	auth  []byte // client-first-bare "," server-first ","
}

// NewSCRAMServer returns the server side of one exchange, looking users up
// with lookup.
func NewSCRAMServer(lookup SCRAMLookup) *SCRAMServer {
	return &SCRAMServer{lookup: lookup, nonce: randomNonce}
}

// Step takes the client's next message (client-first, then client-final) and
// returns the server's reply (server-first, then server-final "v=..."). done
// is true after the client-final was verified; err != nil means
// authentication failed (ErrSCRAMFailed, or ErrSCRAMMalformed for bad
// syntax), out is then nil and the exchange is over: every later Step
// returns ErrSCRAMFailed, as does a Step after done.
//
// Step does not keep in; out belongs to the caller. It never blocks and
// runs no PBKDF2 (lookup permitting), so it may run on an event loop.
//
// Refused on purpose: channel binding ("p=", ErrSCRAMMalformed: there is no
// SCRAM-SHA-512-PLUS), an authzid ("n,a=USER,", ErrSCRAMMalformed: MQTT has
// no authorization identity apart from the user name) and the reserved
// "m=" extension. "y,," is accepted: the client could bind a channel but
// thinks we cannot, which is true. Unknown extension attributes are
// ignored (they still count in the AuthMessage). User names are compared
// byte for byte after =2C/=3D unescaping, without SASLprep, as the password
// file stores them.
//
// A user without SCRAM credentials (unknown, or a $6$ entry) gets a
// server-first like any other: a salt derived from the user name and a
// per-process key, DefaultIterations, and the exchange fails at the proof
// with the same ErrSCRAMFailed as a wrong password, after the same work.
func (s *SCRAMServer) Step(in []byte) (out []byte, done bool, err error) {
	switch s.state {
	case scramStart:
		out, err = s.first(in)
		if err == nil {
			s.state = scramFirstDone
			return out, false, nil
		}
	case scramFirstDone:
		out, err = s.final(in)
		if err == nil {
			s.state = scramDone
			s.wipe()
			return out, true, nil
		}
	default:
		return nil, false, ErrSCRAMFailed
	}
	s.state = scramFailed
	s.user = ""
	s.wipe()
	return nil, false, err
}

// Username is the authenticated user (valid once done; "" before, or after
// a failure).
func (s *SCRAMServer) Username() string {
	if s.state != scramDone {
		return ""
	}
	return s.user
}

// wipe forgets the SaltedPassword and the messages. It does not zero the
// SaltedPassword: the lookup may have returned memory it still uses.
func (s *SCRAMServer) wipe() {
	s.sp, s.auth = nil, nil
}

// first handles the client-first-message:
//
//	gs2-header = ("n" / "y") "," "," ; no channel binding, no authzid
//	client-first-message-bare = "n=" saslname ",r=" c-nonce ["," extensions]
func (s *SCRAMServer) first(in []byte) ([]byte, error) {
	if len(in) > scramMaxMessage {
		return nil, ErrSCRAMMalformed
	}
	gs2, bare, err := parseGS2(in)
	if err != nil {
		return nil, err
	}
	var user, cnonce []byte
	for i, attr := range splitAttrs(bare) {
		switch {
		case i == 0 && hasAttr(attr, 'n'):
			if user, err = unescapeSASLName(attr[2:]); err != nil {
				return nil, err
			}
		case i == 1 && hasAttr(attr, 'r'):
			if cnonce = attr[2:]; !validNonce(cnonce) {
				return nil, ErrSCRAMMalformed
			}
		case i >= 2 && validExtension(attr):
		default: // "m=" first, a missing or misplaced n= or r=, a bad extension
			return nil, ErrSCRAMMalformed
		}
	}
	if cnonce == nil {
		return nil, ErrSCRAMMalformed
	}
	s.gs2, s.user = gs2, string(user)

	salt, iter, sp, ok := s.lookup(s.user)
	if !ok || len(salt) == 0 || iter < 1 || len(sp) != sha512.Size {
		salt, sp = fakeSCRAM(s.user)
		iter, ok = DefaultIterations, false
	}
	s.known, s.sp = ok, sp
	s.rnd = string(cnonce) + s.nonce()

	// auth = client-first-bare "," server-first ","; out = server-first.
	a := make([]byte, 0, len(bare)+len(s.rnd)+base64.StdEncoding.EncodedLen(len(salt))+64)
	a = append(append(a, bare...), ',')
	start := len(a)
	a = append(append(a, "r="...), s.rnd...)
	a = b64.AppendEncode(append(a, ",s="...), salt)
	a = strconv.AppendInt(append(a, ",i="...), int64(iter), 10)
	out := bytes.Clone(a[start:])
	s.auth = append(a, ',')
	return out, nil
}

// final handles the client-final-message:
//
//	"c=" base64(gs2-header) ",r=" nonce ["," extensions] ",p=" base64(proof)
func (s *SCRAMServer) final(in []byte) ([]byte, error) {
	if len(in) > scramMaxMessage {
		return nil, ErrSCRAMMalformed
	}
	// The proof is the last attribute.
	i := bytes.LastIndex(in, []byte(",p="))
	if i < 0 {
		return nil, ErrSCRAMMalformed
	}
	withoutProof, proofB64 := in[:i], in[i+3:]
	var sawNonce bool
	for i, attr := range splitAttrs(withoutProof) {
		switch {
		case i == 0 && hasAttr(attr, 'c'):
			// No channel binding: c= carries the gs2 header alone.
			cb, err := b64.DecodeString(string(attr[2:]))
			if err != nil || string(cb) != s.gs2 {
				return nil, ErrSCRAMMalformed
			}
		case i == 1 && hasAttr(attr, 'r'):
			if string(attr[2:]) != s.rnd {
				return nil, ErrSCRAMMalformed
			}
			sawNonce = true
		case i >= 2 && validExtension(attr):
		default:
			return nil, ErrSCRAMMalformed
		}
	}
	var proof [sha512.Size + 2]byte // DecodedLen of 88 characters
	if !sawNonce || len(proofB64) != base64.StdEncoding.EncodedLen(sha512.Size) {
		return nil, ErrSCRAMMalformed
	}
	if n, err := b64.Decode(proof[:], proofB64); err != nil || n != sha512.Size {
		return nil, ErrSCRAMMalformed
	}

	auth := append(s.auth, withoutProof...)
	mac := hmac.New(sha512.New, s.sp)
	clientKey := hmacSum(mac, "Client Key")
	storedKey := sha512.Sum512(clientKey)
	mac = hmac.New(sha512.New, storedKey[:])
	mac.Write(auth)
	sig := mac.Sum(nil)
	subtle.XORBytes(sig, sig, proof[:sha512.Size]) // sig is now the claimed ClientKey
	claimed := sha512.Sum512(sig)
	// Constant-time, and the same work whether the user is known or not.
	if subtle.ConstantTimeCompare(claimed[:], storedKey[:]) != 1 || !s.known {
		return nil, ErrSCRAMFailed
	}
	mac = hmac.New(sha512.New, s.sp)
	serverKey := hmacSum(mac, "Server Key")
	mac = hmac.New(sha512.New, serverKey)
	mac.Write(auth)
	out := make([]byte, 0, 2+base64.StdEncoding.EncodedLen(sha512.Size))
	return b64.AppendEncode(append(out, "v="...), mac.Sum(nil)), nil
}

// fakeSCRAM derives a salt (SaltLen bytes, like a real entry's) and a
// SaltedPassword for a user without SCRAM credentials.
func fakeSCRAM(user string) (salt, sp []byte) {
	mac := hmac.New(sha512.New, scramFakeKey())
	mac.Write([]byte("tinymq SCRAM salt\x00"))
	mac.Write([]byte(user))
	salt = mac.Sum(nil)[:SaltLen]
	mac.Reset()
	mac.Write([]byte("tinymq SCRAM salted password\x00"))
	mac.Write([]byte(user))
	return salt, mac.Sum(nil)
}

// hmacSum returns the MAC of s.
func hmacSum(mac hash.Hash, s string) []byte {
	mac.Write([]byte(s))
	return mac.Sum(nil)
}

// parseGS2 splits a client-first-message into its gs2 header ("n,," or
// "y,,") and the client-first-message-bare.
func parseGS2(in []byte) (gs2 string, bare []byte, err error) {
	if len(in) < 3 {
		return "", nil, ErrSCRAMMalformed
	}
	switch {
	case in[0] == 'n' && in[1] == ',':
		gs2 = "n,,"
	case in[0] == 'y' && in[1] == ',':
		gs2 = "y,,"
	default: // "p=..." (channel binding) or garbage
		return "", nil, ErrSCRAMMalformed
	}
	if in[2] != ',' { // "a=..." (authzid): refused
		return "", nil, ErrSCRAMMalformed
	}
	return gs2, in[3:], nil
}

// splitAttrs returns the comma-separated attributes of a message (at most
// scramMaxMessage bytes, so at most 2049 attributes).
func splitAttrs(msg []byte) [][]byte { return bytes.Split(msg, []byte(",")) }

// hasAttr reports whether attr is "X=..." for X = name.
func hasAttr(attr []byte, name byte) bool {
	return len(attr) >= 2 && attr[0] == name && attr[1] == '='
}

// validExtension reports whether attr is an RFC 5802 attr-val other than
// the reserved "m=": ALPHA "=" 1*value-char (no NUL, valid UTF-8). Unknown
// extensions are ignored.
func validExtension(attr []byte) bool {
	if len(attr) < 3 || attr[1] != '=' || attr[0] == 'm' {
		return false
	}
	if c := attr[0] | 0x20; c < 'a' || c > 'z' {
		return false
	}
	return utf8.Valid(attr[2:]) && bytes.IndexByte(attr[2:], 0) < 0
}

// validNonce reports whether n is a non-empty RFC 5802 nonce: printable
// ASCII (%x21-7E) except ','.
func validNonce(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// unescapeSASLName decodes a saslname: "=2C" is ',', "=3D" is '='; any
// other '=' escape, a NUL, invalid UTF-8 or an empty name is malformed.
func unescapeSASLName(b []byte) ([]byte, error) {
	if len(b) == 0 || !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		return nil, ErrSCRAMMalformed
	}
	if bytes.IndexByte(b, '=') < 0 {
		return b, nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '=' {
			out = append(out, b[i])
			continue
		}
		switch {
		case i+2 < len(b) && b[i+1] == '2' && b[i+2] == 'C':
			out = append(out, ',')
		case i+2 < len(b) && b[i+1] == '3' && b[i+2] == 'D':
			out = append(out, '=')
		default:
			return nil, ErrSCRAMMalformed
		}
		i += 2
	}
	return out, nil
}

// escapeSASLName encodes a user name as a saslname.
func escapeSASLName(dst []byte, user string) []byte {
	for i := 0; i < len(user); i++ {
		switch user[i] {
		case ',':
			dst = append(dst, "=2C"...)
		case '=':
			dst = append(dst, "=3D"...)
		default:
			dst = append(dst, user[i])
		}
	}
	return dst
}

// SCRAMClient is the client side of one exchange, for tests, tinymq-bench
// and bridges (not safe for concurrent use). Step runs PBKDF2: call it off
// the event loops. The password is used as its raw bytes, without
// SASLprep, as mosquitto_passwd hashes it.
type SCRAMClient struct {
	user, password string
	gs2            string        // "n,,"; tests set "y,,"
	nonce          func() string // the client nonce; randomNonce unless a test sets it
	state          scramState

	first     []byte // client-first-message
	rnd       string // the client nonce
	serverSig []byte
}

// NewSCRAMClient returns the client side of one exchange for user and
// password.
func NewSCRAMClient(user, password string) *SCRAMClient {
	return &SCRAMClient{user: user, password: password, gs2: "n,,", nonce: randomNonce}
}

// First returns the client-first-message ("n,,n=user,r=nonce"), the
// Authentication Data of the CONNECT packet. Later calls return the same
// message. The result belongs to the caller.
func (c *SCRAMClient) First() []byte {
	if c.first == nil {
		c.rnd = c.nonce()
		m := append([]byte(c.gs2), "n="...)
		m = escapeSASLName(m, c.user)
		c.first = append(append(m, ",r="...), c.rnd...)
		c.state = scramFirstDone
	}
	return bytes.Clone(c.first)
}

// Step takes the server-first-message and returns the client-final-message.
// It checks that the server's nonce extends ours and refuses iteration
// counts below 101 (Mosquitto's default; RFC 7677's 4096 would refuse
// every default Mosquitto password file) or above 10,000,000
// (ErrSCRAMFailed). Errors end the exchange. Runs PBKDF2: never on an event
// loop.
func (c *SCRAMClient) Step(serverFirst []byte) ([]byte, error) {
	if c.state != scramFirstDone || c.serverSig != nil {
		return nil, ErrSCRAMFailed
	}
	out, err := c.final(serverFirst)
	if err != nil {
		c.state = scramFailed
		return nil, err
	}
	return out, nil
}

func (c *SCRAMClient) final(sf []byte) ([]byte, error) {
	if len(sf) > scramMaxMessage {
		return nil, fmt.Errorf("%w: server-first of %d bytes", ErrSCRAMMalformed, len(sf))
	}
	var rnd, salt []byte
	iter := -1
	for i, attr := range splitAttrs(sf) {
		var err error
		switch {
		case i == 0 && hasAttr(attr, 'r'):
			rnd = attr[2:]
			if !validNonce(rnd) || len(rnd) <= len(c.rnd) || string(rnd[:len(c.rnd)]) != c.rnd {
				return nil, fmt.Errorf("%w: server nonce does not extend ours", ErrSCRAMMalformed)
			}
		case i == 1 && hasAttr(attr, 's'):
			if salt, err = b64.DecodeString(string(attr[2:])); err != nil || len(salt) == 0 {
				return nil, fmt.Errorf("%w: bad salt", ErrSCRAMMalformed)
			}
		case i == 2 && hasAttr(attr, 'i'):
			if iter, err = parseIterations(attr[2:]); err != nil {
				return nil, err
			}
		case i >= 3 && validExtension(attr):
		default:
			return nil, fmt.Errorf("%w: unexpected attribute %.16q in server-first", ErrSCRAMMalformed, attr)
		}
	}
	if iter < 0 {
		return nil, fmt.Errorf("%w: server-first lacks r=, s= or i=", ErrSCRAMMalformed)
	}
	if iter < scramMinClientIterations || iter > maxIterations {
		return nil, fmt.Errorf("%w: iteration count %d outside %d..%d", ErrSCRAMFailed, iter, scramMinClientIterations, maxIterations)
	}
	sp, err := pbkdf2.Key(sha512.New, c.password, salt, iter, sha512.Size)
	if err != nil { // FIPS 140-3 only mode with a short salt
		return nil, fmt.Errorf("%w: %v", ErrSCRAMFailed, err)
	}
	defer clear(sp)

	out := b64.AppendEncode([]byte("c="), []byte(c.gs2))
	out = append(append(out, ",r="...), rnd...)
	auth := make([]byte, 0, len(c.first)+len(sf)+len(out)+2)
	auth = append(append(auth, c.first[len(c.gs2):]...), ',')
	auth = append(append(auth, sf...), ',')
	auth = append(auth, out...)

	mac := hmac.New(sha512.New, sp)
	clientKey := hmacSum(mac, "Client Key")
	storedKey := sha512.Sum512(clientKey)
	mac = hmac.New(sha512.New, storedKey[:])
	mac.Write(auth)
	proof := mac.Sum(nil)
	subtle.XORBytes(proof, proof, clientKey)
	mac = hmac.New(sha512.New, sp)
	serverKey := hmacSum(mac, "Server Key")
	mac = hmac.New(sha512.New, serverKey)
	mac.Write(auth)
	c.serverSig = mac.Sum(nil)
	return b64.AppendEncode(append(out, ",p="...), proof), nil
}

// parseIterations parses i= (decimal, no sign, no leading zero).
func parseIterations(v []byte) (int, error) {
	if len(v) == 0 || len(v) > 10 || v[0] == '0' {
		return 0, fmt.Errorf("%w: bad iteration count %.16q", ErrSCRAMMalformed, v)
	}
	n := 0
	for _, d := range v {
		if d < '0' || d > '9' {
			return 0, fmt.Errorf("%w: bad iteration count %.16q", ErrSCRAMMalformed, v)
		}
		n = n*10 + int(d-'0')
	}
	return n, nil
}

// Verify checks the server-final-message: "v=" must carry the server
// signature (constant-time comparison). "e=..." (a server error) and a
// wrong signature are ErrSCRAMFailed. It ends the exchange either way.
func (c *SCRAMClient) Verify(serverFinal []byte) error {
	if c.state != scramFirstDone || c.serverSig == nil {
		return ErrSCRAMFailed
	}
	c.state = scramFailed
	if len(serverFinal) > scramMaxMessage {
		return fmt.Errorf("%w: server-final of %d bytes", ErrSCRAMMalformed, len(serverFinal))
	}
	attr, _, _ := bytes.Cut(serverFinal, []byte(","))
	switch {
	case hasAttr(attr, 'e'):
		return fmt.Errorf("%w: server error %.64q", ErrSCRAMFailed, attr[2:])
	case !hasAttr(attr, 'v'):
		return fmt.Errorf("%w: server-final without v=", ErrSCRAMMalformed)
	}
	sig, err := b64.DecodeString(string(attr[2:]))
	if err != nil {
		return fmt.Errorf("%w: bad server signature encoding", ErrSCRAMMalformed)
	}
	if subtle.ConstantTimeCompare(sig, c.serverSig) != 1 {
		return fmt.Errorf("%w: wrong server signature", ErrSCRAMFailed)
	}
	c.state = scramDone
	return nil
}
