// Package auth reads Mosquitto's password file and ACL file and answers
// "may this identity connect" (PasswordFile.Verify) and "may it publish,
// receive or subscribe on this topic" (ACL.For, Grants).
//
// Both files are parsed whole into immutable values: a reload parses the
// new file and, only if it parses, replaces the old *PasswordFile or *ACL;
// the old value keeps working for whoever still holds it. The semantics
// follow Mosquitto 2.0.11's src/security_default.c, checked against the
// real broker by TestMosquittoACLDecisions; docs/security.md has the
// details and the few deliberate differences.
//
// auth knows no connection and does no I/O except LoadPasswordFile and
// LoadACLFile. PasswordFile.Verify is slow on purpose (PBKDF2): callers
// run it off the event loops. Grants.CanRead and CanWrite never block and
// do not allocate once a decision is cached: they are made for the loops.
// It imports only the standard library and topic, never the engine.
package auth
