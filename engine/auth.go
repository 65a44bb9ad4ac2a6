package engine

import (
	"crypto/subtle"

	"github.com/tinymq/tinymq/codec"
)

// Authenticator decides whether a CONNECT may proceed. It runs on the
// connection's event loop and must not block.
type Authenticator interface {
	// Authenticate returns codec.Success to accept, or the reason to refuse
	// (BadUserNameOrPassword, NotAuthorized, ...). The byte slices alias the
	// read buffer: copy to keep.
	Authenticate(clientID, username, password []byte, hasPassword bool) codec.ReasonCode
}

// APIKeyAuth accepts a client whose MQTT password equals the key, whatever its
// username, as the TinyMQ gateway does. The comparison is constant-time.
type APIKeyAuth struct{ Key []byte }

// Authenticate implements Authenticator. Any goroutine.
func (a APIKeyAuth) Authenticate(_, _, password []byte, hasPassword bool) codec.ReasonCode {
	if !hasPassword || subtle.ConstantTimeCompare(password, a.Key) != 1 {
		return codec.NotAuthorized // 3.1.1 return code 5, as the gateway answers
	}
	return codec.Success
}
