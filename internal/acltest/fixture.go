package acltest

// The fixture TestMosquittoACLDecisions runs against Mosquitto 2.0.11 and
// the engine can run against TinyMQ: an ACL file exercising every rule, the
// users of its password file, and probes with the answers Mosquitto gives.

// PrivUser and PrivPass are the privileged observer of the fixture.
const (
	PrivUser = "priv"
	PrivPass = "priv-pw"
)

// FixtureACL is the fixture's ACL file.
const FixtureACL = `# Lines before any user line: the anonymous section.
topic read public/#
topic deny public/secret
topic readwrite anon/+
topic read acltest/sentinel

user priv
topic readwrite #
topic read $SYS/#

user alice
topic read acltest/sentinel
topic deny alice/private
topic readwrite alice/#
topic read a/#
topic allowed
topic read a/+/leaf
topic read $SYS/broker/#

user bob
topic #

user carol
topic read acltest/sentinel
topic deny devices/carol-1/state

user da+ve
topic read acltest/sentinel
topic read own/thing

# Patterns: everyone, %c = client id, %u = user name.
pattern write devices/%c/state
pattern read users/%u/#
pattern deny users/%u/secret
pattern readwrite clients/%c/+
pattern read acltest/sentinel
`

// FixtureUsers maps the fixture's users to their passwords.
var FixtureUsers = map[string]string{
	PrivUser: PrivPass, "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw",
	"dave": "dave-pw", "da+ve": "da+ve-pw",
}

// Case is a probe and Mosquitto 2.0.11's answer.
type Case struct {
	Probe
	Want bool
	Why  string
}

func anon(cid, topic string, write, want bool, why string) Case {
	return Case{Probe{ClientID: cid, Topic: topic, Write: write}, want, why}
}

func user(u, cid, topic string, write, want bool, why string) Case {
	return Case{Probe{User: u, HasUser: true, Password: FixtureUsers[u], ClientID: cid, Topic: topic, Write: write}, want, why}
}

const (
	r = false
	w = true
)

// FixtureCases are the probes of the fixture with Mosquitto's answers.
var FixtureCases = []Case{
	anon("anon-1", "public/x", r, true, "anonymous section grants"),
	anon("anon-1", "public/x", w, false, "read is not write"),
	anon("anon-1", "public/secret", r, false, "deny beats a grant listed before it"),
	anon("anon-1", "anon/x", w, true, "readwrite +"),
	anon("anon-1", "anon/x/y", w, false, "+ is one level"),
	anon("anon-1", "$SYS/broker/version", r, false, "no $SYS grant"),
	anon("anon-1", "devices/anon-1/state", w, true, "%c patterns apply to anonymous clients"),
	anon("anon-1", "users//inbox", r, false, "%u patterns never apply to anonymous clients"),
	user("alice", "alice-1", "public/x", r, false, "the anonymous section is not a user's"),
	user("alice", "alice-1", "alice/private", r, false, "deny beats a grant listed after it"),
	user("alice", "alice-1", "alice/private", w, false, "deny covers write too"),
	user("alice", "alice-1", "alice/x", w, true, "readwrite alice/#"),
	user("alice", "alice-1", "a/b", r, true, "read a/#"),
	user("alice", "alice-1", "a", r, true, "a/# covers a"),
	user("alice", "alice-1", "a/b", w, false, "read a/# is not write"),
	user("alice", "alice-1", "allowed", w, true, "plain topic = readwrite"),
	user("alice", "alice-1", "allowed/secret", r, false, "a grant never matches more than it says"),
	user("alice", "alice-1", "b/x/leaf", r, false, "no grant"),
	user("alice", "alice-1", "$SYS/broker/version", r, true, "$SYS read by rule"),
	user("alice", "alice-1", "$SYS/broker/x", w, false, "$SYS is never written"),
	user("alice", "alice-1", "$SYS/broker/connection/x/state", w, false, "no write grant there"),
	user("alice", "alice-1", "clients/alice-1/x", r, true, "own list silent: patterns"),
	user("alice", "alice-1", "users/alice/inbox", r, true, "pattern %u"),
	user("alice", "alice-1", "users/alice/secret", r, false, "pattern deny first"),
	user("alice", "a+b", "alice/x", r, true, "own grants apply whatever the client id"),
	user("alice", "a+b", "users/alice/inbox", r, false, "wildcard in the client id: no pattern grants"),
	user("bob", "bob-1", "any/thing", w, true, "topic # = readwrite everything"),
	user("bob", "bob-1", "$SYS/broker/version", r, false, "# does not cover $SYS"),
	user("bob", "bob-1", "$SYS/x", w, false, "$SYS is never written"),
	user("bob", "bob-1", "users/bob/secret", r, true, "own grant beats a pattern deny"),
	user("dave", "dev1", "devices/dev1/state", w, true, "pattern %c"),
	user("dave", "dev1", "devices/dev2/state", w, false, "another client's topic"),
	user("dave", "dev1", "devices/dev1/state", r, false, "pattern write is not read"),
	user("dave", "dev1", "users/dave/inbox", r, true, "pattern %u"),
	user("dave", "dev1", "users/dave/secret", r, false, "pattern deny"),
	user("dave", "dv", "clients/dv/x", r, true, "pattern readwrite clients/%c/+"),
	user("carol", "carol-1", "devices/carol-1/state", w, false, "own deny is final: patterns are not reached"),
	user("carol", "carol-2", "devices/carol-2/state", w, true, "own list silent: pattern grants"),
	user("da+ve", "dv", "own/thing", r, true, "own grants apply to a wildcard user name"),
	user("da+ve", "dv", "clients/dv/x", r, false, "wildcard in the user name: no pattern grants"),
	// A subscription broader than the grants delivers only what read allows.
	through("#", user("alice", "alice-1", "a/b", r, true, "# delivers what read a/# allows")),
	through("#", user("alice", "alice-1", "b/x/leaf", r, false, "# delivers nothing else")),
	through("#", user("alice", "alice-1", "alice/private", r, false, "# does not bypass a deny")),
	through("a/#", user("alice", "alice-1", "a/x", r, true, "a matching filter")),
	through("+/b", user("dave", "dev1", "users/b", r, false, "+/b overlaps nothing of dave's read grants but users/dave/#")),
	through("#", anon("anon-1", "public/secret", r, false, "anonymous # does not bypass a deny")),
}

// through makes a read probe subscribe to filter rather than the topic.
func through(filter string, c Case) Case {
	c.Filter = filter
	return c
}
