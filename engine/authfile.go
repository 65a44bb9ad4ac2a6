package engine

import (
	"sync"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
)

// authFiles holds the parsed Mosquitto password and ACL files (engine/auth)
// and re-reads them on Reload. Safe from any goroutine.
type authFiles struct {
	pwPath, aclPath string

	mu        sync.Mutex
	passwords *auth.PasswordFile
	acl       *auth.ACL
}

// load reads the configured files; an error names the file, line and
// reason. Runs in New.
func (f *authFiles) load(pwPath, aclPath string) error {
	f.pwPath, f.aclPath = pwPath, aclPath
	if pwPath != "" {
		p, err := auth.LoadPasswordFile(pwPath)
		if err != nil {
			return err
		}
		f.passwords = p
	}
	if aclPath != "" {
		a, err := auth.LoadACLFile(aclPath)
		if err != nil {
			return err
		}
		f.acl = a
	}
	return nil
}

// reload re-reads both files; a file that fails to parse keeps the old
// one. It reports which files were replaced.
func (f *authFiles) reload() (pw, acl bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first error
	if f.pwPath != "" {
		if p, e := auth.LoadPasswordFile(f.pwPath); e != nil {
			first = e
		} else {
			f.passwords, pw = p, true
		}
	}
	if f.aclPath != "" {
		if a, e := auth.LoadACLFile(f.aclPath); e != nil {
			if first == nil {
				first = e
			}
		} else {
			f.acl, acl = a, true
		}
	}
	return pw, acl, first
}

func (f *authFiles) users() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.passwords == nil {
		return 0
	}
	return f.passwords.Len()
}

// authenticator is the current password file as an Authenticator.
func (f *authFiles) authenticator() Authenticator {
	f.mu.Lock()
	defer f.mu.Unlock()
	return passwordAuth{f.passwords}
}

// authorizer is the current ACL file as an Authorizer.
func (f *authFiles) authorizer() Authorizer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return aclAuthorizer{f.acl}
}

// passwordAuth checks a username and password against a Mosquitto
// password file. Verify is PBKDF2: it runs on the worker pool.
type passwordAuth struct{ f *auth.PasswordFile }

// Authenticate implements Authenticator. Any goroutine; slow on purpose.
func (a passwordAuth) Authenticate(cr *Credentials) codec.ReasonCode {
	// Mosquitto answers an unknown user and a wrong password alike.
	if !cr.HasUsername || !cr.HasPassword || !a.f.Verify(cr.Username, cr.Password) {
		return codec.NotAuthorized
	}
	return codec.Success
}

// aclAuthorizer answers with the grants of a Mosquitto ACL file.
type aclAuthorizer struct{ a *auth.ACL }

// For implements Authorizer. Any goroutine; never blocks.
func (z aclAuthorizer) For(id Identity) Permissions {
	return z.a.For(id.Username, id.HasUsername, id.ClientID)
}
