package engine

import (
	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
)

// MQTT 5.0 enhanced authentication: the AUTH exchange (5.0 §4.12).

// AuthMethod is an MQTT 5 enhanced-authentication method, named by a
// client's Authentication Method property. Its exchanges run on the
// event loops, so Step must be quick and must never block: a method that
// needs I/O or a slow hash belongs in an Authenticator instead. The
// built-in SCRAM-SHA-512 costs a few HMACs per step (the password file
// already holds PBKDF2's output).
type AuthMethod interface {
	Name() string
	// Start begins an exchange for a CONNECT or a re-authentication.
	// cr carries the client id, the username when the CONNECT has one,
	// and the client's address; it has no password.
	Start(cr *Credentials) AuthExchange
}

// AuthExchange is one exchange of an AuthMethod. Step takes the client's
// Authentication Data and returns the server's next data; done reports a
// verified client (out then goes in CONNACK, or in the final AUTH of a
// re-authentication); an error refuses it.
type AuthExchange interface {
	Step(in []byte) (out []byte, done bool, err error)
	// Username is the identity the exchange proved, once done.
	Username() string
}

// authExchange is a connection's exchange in progress.
type authExchange struct {
	method string
	ex     AuthExchange
	pc     *pendingConnect // during CONNECT; nil for a re-authentication
}

// scramMethod serves SCRAM-SHA-512 from the password file (the one a
// reload swapped in, for each new exchange).
type scramMethod struct{ f *authFiles }

func (scramMethod) Name() string { return auth.SCRAMMethod }

func (m scramMethod) Start(*Credentials) AuthExchange { return auth.NewSCRAMServer(m.f.scram) }

// scram looks a user up for SCRAM in the current password file. Any
// goroutine.
func (f *authFiles) scram(user string) ([]byte, int, []byte, bool) {
	f.mu.Lock()
	p := f.passwords
	f.mu.Unlock()
	if p == nil {
		return nil, 0, nil, false
	}
	return p.SCRAM(user)
}

// setupAuthMethods registers the enhanced-authentication methods:
// SCRAM-SHA-512 when a password file is configured, then
// Options.AuthMethods (which may replace it). Runs in New.
func (b *Broker) setupAuthMethods() {
	b.authMethods = map[string]AuthMethod{}
	if b.opts.PasswordFile != "" {
		b.authMethods[auth.SCRAMMethod] = scramMethod{&b.files}
	}
	for _, m := range b.opts.AuthMethods {
		b.authMethods[m.Name()] = m
	}
}

// startAuth5 begins the AUTH exchange of a v5 CONNECT that names an
// Authentication Method: an unknown method is refused with 0x8C (5.0
// [MQTT5-4.12.0-1]), and the connection closed. Runs on c's loop.
func (c *conn) startAuth5(pc *pendingConnect, p *codec.Connect) error {
	b := c.l.b
	name := string(p.Props.AuthMethod)
	m := b.authMethods[name]
	if m == nil {
		c.l.stats.authFailures.Add(1)
		c.refuse(codec.BadAuthenticationMethod)
		c.closeReason = closeNotAuthorized
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("connection refused: unknown authentication method", "client", pc.id, "method", name, "remote", c.remote())
		}
		return errClose
	}
	pc.user, pc.hasUser = string(p.Username), p.UsernameFlag
	cr := Credentials{ClientID: pc.id, Username: pc.user, HasUsername: pc.hasUser, Remote: c.remote(), Transport: protoNames[c.proto]}
	own := *pc
	x := &authExchange{method: name, ex: m.Start(&cr), pc: &own}
	c.ext().auth5 = x
	return c.stepAuth5(x, p.Props.AuthData)
}

// stepAuth5 feeds the client's data to the exchange and answers: AUTH
// 0x18 to go on, CONNACK (or AUTH 0x00 for a re-authentication) when
// done, a refusal when it failed. Runs on c's loop.
func (c *conn) stepAuth5(x *authExchange, in []byte) error {
	b := c.l.b
	out, done, err := x.ex.Step(in)
	if err != nil {
		c.x.auth5 = nil
		if x.pc == nil {
			// Re-authentication failed: the connection ends (5.0 §4.12.1).
			c.l.stats.authFailures.Add(1)
			c.closeReason = closeNotAuthorized
			c.disconnect5(codec.NotAuthorized, "re-authentication failed")
			return errClose
		}
		b.refuseLogin(c, codec.NotAuthorized, x.pc.id, x.pc.user)
		if c.authWait {
			return nil // held: refused by the loop's tick
		}
		return errClose
	}
	if !done {
		c.sendAuth(codec.ContinueAuthentication, x.method, out)
		return nil
	}
	c.x.auth5 = nil
	user := x.ex.Username()
	if x.pc == nil {
		if c.x.id.user != user {
			c.closeReason = closeNotAuthorized
			c.disconnect5(codec.NotAuthorized, "re-authentication as another user")
			return errClose
		}
		c.sendAuth(codec.Success, x.method, out) // 5.0 §4.12.1
		return nil
	}
	pc := x.pc
	pc.user, pc.hasUser = user, true
	pc.v5.authMethod, pc.v5.authData = x.method, out
	if !c.accept(pc) {
		return errClose
	}
	return nil
}

// onAuth handles an AUTH packet: the next step of the CONNECT's exchange,
// or a re-authentication (0x19) of an accepted connection with the
// method it connected with. Runs on c's loop.
func (c *conn) onAuth(h codec.FixedHeader, body []byte) error {
	var a codec.Auth
	if err := a.Decode(codec.V5, h, body); err != nil {
		return err
	}
	var x *authExchange
	if c.x != nil {
		x = c.x.auth5
	}
	method := string(a.Props.AuthMethod)
	switch {
	case a.Reason == codec.ContinueAuthentication && x != nil && method == x.method:
		return c.stepAuth5(x, a.Props.AuthData)
	case a.Reason == codec.ReAuthenticate && x == nil && c.s != nil:
		s := c.s
		s.mu.Lock()
		connected := ""
		if v := s.v5(); v != nil {
			connected = v.authMethod
		}
		s.mu.Unlock()
		if connected == "" || method != connected {
			return errAuthMethod // [MQTT5-4.12.1-1]: the method of the CONNECT
		}
		m := c.l.b.authMethods[method]
		if m == nil {
			return errAuthMethod
		}
		cr := Credentials{ClientID: s.id, Username: c.username(), HasUsername: c.x != nil && c.x.id.hasUser, Remote: c.remote(), Transport: protoNames[c.proto]}
		x = &authExchange{method: method, ex: m.Start(&cr)}
		c.ext().auth5 = x
		return c.stepAuth5(x, a.Props.AuthData)
	}
	return errAuthUnexpected
}

var (
	errAuthMethod     = &codec.Error{Code: codec.ProtocolError, Msg: "AUTH with another method than the CONNECT's"}
	errAuthUnexpected = &codec.Error{Code: codec.ProtocolError, Msg: "AUTH out of an exchange"}
)

// sendAuth sends an AUTH packet: straight to the socket during CONNECT
// (there is no session yet), through the session afterwards. Runs on c's
// loop.
func (c *conn) sendAuth(rc codec.ReasonCode, method string, data []byte) {
	a := codec.Auth{Reason: rc}
	a.Props.AuthMethod = []byte(method)
	a.Props.Set(codec.PropAuthMethod)
	if data != nil {
		a.Props.AuthData = data
		a.Props.Set(codec.PropAuthData)
	}
	raw := a.AppendTo(c.l.outBuf[:0], codec.V5)
	if c.s == nil {
		c.write(raw)
		return
	}
	c.send(raw)
}
