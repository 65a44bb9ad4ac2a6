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
//
// # SCRAM-SHA-512
//
// SCRAMServer and SCRAMClient implement SCRAM-SHA-512 (RFC 5802 with
// SHA-512, as RFC 7677 does it for SHA-256) for MQTT 5 enhanced
// authentication, method SCRAMMethod. They are pure state machines: the
// engine carries their messages in the Authentication Data of CONNECT and
// AUTH packets and creates one SCRAMServer per exchange. A Mosquitto $7$
// hash is SCRAM's SaltedPassword (PasswordFile.SCRAM), so the server runs
// no PBKDF2: one exchange is a few HMAC-SHA512s (about 7 µs and 40
// allocations, BenchmarkSCRAMServer) and never blocks. The client runs
// PBKDF2 and belongs off the loops.
//
// What the server accepts: gs2 header "n,," or "y,," (no
// SCRAM-SHA-512-PLUS, so channel binding "p=" is refused); no authzid
// ("a=" is refused: MQTT has no identity apart from the user name); user
// names with =2C and =3D escapes only, compared byte for byte without
// SASLprep, as the password file stores them; printable nonces; unknown
// extensions ignored, the reserved "m=" refused; messages up to 4 KiB.
// Syntax and rule violations are ErrSCRAMMalformed, a wrong proof
// ErrSCRAMFailed, and both end the exchange. A user without SCRAM
// credentials (unknown, or a $6$ entry) gets a server-first like any
// other: a 12-byte salt derived with HMAC from the user name and a
// per-process random key (stable per user while the process runs),
// DefaultIterations (a file hashed with another -I count shows a
// difference here), and the exchange fails at the proof like a wrong
// password. The proof is compared in constant time.
//
// The client accepts iteration counts from 101 (Mosquitto's default,
// below RFC 7677's 4096) to 10,000,000, checks that the server nonce
// extends its own, and verifies the server signature in constant time.
// Passwords are used as raw bytes (no SASLprep), as mosquitto_passwd
// hashes them.
package auth
