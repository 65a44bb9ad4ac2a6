package engine

import (
	"errors"
	"strings"
)

// setupAuth wires authentication and authorization from the options:
// the API key, the password and ACL files, or the caller's Authenticator
// and Authorizer, and the worker pool for authenticators that block. Runs
// in New.
func (b *Broker) setupAuth() error {
	o := &b.opts
	if o.APIKey != "" {
		b.apiKey = []byte(o.APIKey)
	}
	b.authCache.init()
	b.fails.init()
	if err := b.files.load(o.PasswordFile, o.ACLFile); err != nil {
		return err
	}
	authn := o.Auth
	if authn == nil && b.files.passwords != nil {
		authn = b.files.authenticator()
	}
	if authn != nil {
		b.authn.Store(&authnRef{a: authn, inline: inline(authn)})
		if !inline(authn) {
			b.authPool = newAuthPool(b, o.AuthWorkers)
		}
	}
	authz := o.ACL
	if authz == nil && b.files.acl != nil {
		authz = b.files.authorizer()
	}
	if authz != nil {
		b.authz.Store(&authzRef{a: authz})
	}
	b.allowAnonymous = authn == nil && b.apiKey == nil
	if o.AllowAnonymous != nil {
		b.allowAnonymous = *o.AllowAnonymous
	}
	return nil
}

// Reload re-reads the password file, the ACL file and the TLS
// certificates (SIGHUP). Each file is parsed whole before it replaces the
// one in force; a broken file keeps the old one and its error (file,
// line, reason) is returned. New permissions apply to every online
// connection at once, existing subscriptions included: each delivery is
// checked against the identity's current grants. Any goroutine.
func (b *Broker) Reload() error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	var errs []error
	pw, acl, err := b.files.reload()
	if err != nil {
		errs = append(errs, err)
	}
	if pw && b.opts.Auth == nil {
		b.authn.Store(&authnRef{a: b.files.authenticator()})
		b.authCache.forget()
		b.log.Info("password file reloaded", "file", b.opts.PasswordFile, "users", b.files.users())
	}
	if acl && b.opts.ACL == nil {
		b.authz.Store(&authzRef{a: b.files.authorizer()})
		n := b.refreshPermissions()
		b.log.Info("ACL file reloaded", "file", b.opts.ACLFile, "connections", n)
	}
	if err := b.reloadTLS(); err != nil {
		errs = append(errs, err)
	}
	for _, e := range errs {
		b.log.Error("reload failed; the previous settings stay in force", "err", e.Error())
	}
	return errors.Join(errs...)
}

// refreshPermissions recomputes the permissions of every online
// connection from the current Authorizer and returns how many it updated.
// Deliveries read them atomically, so the new rules apply from the next
// message on. Any goroutine (the reload).
func (b *Broker) refreshPermissions() int {
	az := b.authz.Load()
	if az == nil {
		return 0
	}
	type online struct {
		x  *connExt
		id string
	}
	var conns []online
	b.sessMu.Lock()
	b.sessions.Range(func(s *session) bool {
		s.mu.Lock()
		if c := s.c; c != nil && c.x != nil && c.x.id.perms.Load() != nil {
			conns = append(conns, online{c.x, s.id})
		}
		s.mu.Unlock()
		return true
	})
	b.sessMu.Unlock()
	for _, o := range conns {
		o.x.id.perms.Store(&permsRef{az.a.For(o.x.identityFor(o.id))})
	}
	return len(conns)
}

// identityFor is the Authorizer's view of this connection. The fields it
// reads are written once, at CONNECT, before the connection is attached to
// its session. Any goroutine.
func (x *connExt) identityFor(clientID string) Identity {
	return Identity{Username: x.id.user, HasUsername: x.id.hasUser, ClientID: clientID}
}

// authDescription names what decides credentials and topic access, for
// the stats endpoint and the start-up log. Any goroutine.
func (b *Broker) authDescription() (authn, authz string) {
	var parts []string
	if b.apiKey != nil {
		parts = append(parts, "api-key")
	}
	switch {
	case b.opts.Auth != nil:
		parts = append(parts, "custom")
	case b.files.pwPath != "":
		parts = append(parts, "password-file")
	}
	authn = strings.Join(parts, "+")
	switch {
	case b.opts.ACL != nil:
		authz = "custom"
	case b.files.aclPath != "":
		authz = "acl-file"
	}
	return authn, authz
}
