package engine

import (
	"crypto/subtle"
	"sync/atomic"

	"github.com/tinymq/tinymq/codec"
)

// Authentication and authorization are pluggable: the broker asks an
// Authenticator whether credentials are good and an Authorizer what an
// identity may do on which topics. The file-based implementations
// (Mosquitto's password and ACL files, engine/auth) and the API key are the
// first ones; an HTTP or JWT authenticator is one type away. See
// docs/security.md, "Writing your own authenticator".

// Credentials are what a client presented: a CONNECT's fields, an HTTP
// request's Basic authorization, or a verified TLS client certificate.
// Every field is owned (copied out of the read buffer): an implementation
// may keep them.
type Credentials struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	// CertUsername is the Subject CN of a verified TLS client certificate
	// when --tls-cert-as-username is on; it then is also Username.
	CertUsername string
	Remote       string // the client's address
	Transport    string // "mqtt", "websocket" or "http"
}

// Authenticator decides whether credentials are good.
//
// Authenticate may block (PBKDF2 takes milliseconds on purpose; an HTTP or
// JWKS look-up takes longer): the broker calls it on its authentication
// worker pool (Options.AuthWorkers goroutines), never on an event loop. It
// returns codec.Success to accept, or the refusal: codec.NotAuthorized
// (CONNACK 5 in 3.1.1) for bad credentials, codec.ServerUnavailable when
// the backing service cannot answer. It is called concurrently.
type Authenticator interface {
	Authenticate(cr *Credentials) codec.ReasonCode
}

// Identity is who an accepted client is, as the Authorizer sees it.
type Identity struct {
	Username    string
	HasUsername bool // false: anonymous
	ClientID    string
}

// Authorizer turns an identity into its topic permissions.
//
// For is called once per accepted connection (and again for every online
// connection after a reload) on an event loop or the reload goroutine: it
// must not block. It may return the same Permissions to many identities.
type Authorizer interface {
	For(id Identity) Permissions
}

// Permissions answer "may this identity do X on topic T". They are asked
// on the event loops for every PUBLISH (CanWrite), every delivery and
// retained message (CanRead) and every SUBSCRIBE filter (CanSubscribe),
// concurrently from several loops: they must be safe for concurrent use,
// must not block, and should not allocate on their common path (cache the
// decisions). The topic and filter alias read buffers: copy to keep.
type Permissions interface {
	CanWrite(topic []byte) bool
	CanRead(topic []byte) bool
	// CanSubscribe is false when no topic the filter can match could ever
	// be readable; a filter that overlaps what may be read is granted, and
	// each delivery through it is then checked with CanRead.
	CanSubscribe(filter []byte) bool
}

// APIKeyAuth accepts a client whose password equals the key, whatever its
// username, as the TinyMQ gateway does. The comparison is constant-time.
type APIKeyAuth struct{ Key []byte }

// Authenticate implements Authenticator. Any goroutine; never blocks, so
// the broker calls it inline on the loop.
func (a APIKeyAuth) Authenticate(cr *Credentials) codec.ReasonCode {
	if !cr.HasPassword || subtle.ConstantTimeCompare(cr.Password, a.Key) != 1 {
		return codec.NotAuthorized // 3.1.1 return code 5, as the gateway answers
	}
	return codec.Success
}

// inline reports whether a never blocks, so that the loop may call it
// directly instead of through the worker pool.
func inline(a Authenticator) bool {
	_, ok := a.(APIKeyAuth)
	return ok
}

// permsRef boxes a Permissions for an atomic pointer: a connection's
// permissions are read by every loop that delivers to it and replaced by a
// reload.
type permsRef struct{ p Permissions }

// identity is what an accepted connection keeps of its authentication, in
// its connExt.
type identity struct {
	user    string // username (or certificate CN); "" when anonymous
	hasUser bool
	apiKey  bool                     // authenticated with the API key: every permission
	perms   atomic.Pointer[permsRef] // nil: no Authorizer, everything allowed
}

// permissions returns c's permissions, nil when everything is allowed.
// Any goroutine (c's loop, or a loop delivering to c under its session's
// lock).
func (c *conn) permissions() Permissions {
	if c == nil || c.x == nil {
		return nil
	}
	if r := c.x.id.perms.Load(); r != nil {
		return r.p
	}
	return nil
}

// username is c's authenticated username, "" when anonymous. Runs on c's
// loop.
func (c *conn) username() string {
	if c.x == nil {
		return ""
	}
	return c.x.id.user
}

// authnRef and authzRef box the configured Authenticator and Authorizer
// for atomic swaps on reload.
type authnRef struct {
	a      Authenticator
	inline bool // never blocks: called on the loop, not the pool
}

type authzRef struct{ a Authorizer }

// apiKeyMatches reports whether a password is the API key. Any goroutine.
func (b *Broker) apiKeyMatches(has bool, password []byte) bool {
	return b.apiKey != nil && has && subtle.ConstantTimeCompare(password, b.apiKey) == 1
}
