package auth_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tinymq/tinymq/engine/auth"
	"github.com/tinymq/tinymq/internal/acltest"
	"github.com/tinymq/tinymq/internal/mosquittotest"
)

// TestMosquittoACLDecisions runs acltest's fixture through the real
// Mosquitto and compares each decision with ACL.For(...).CanRead/CanWrite
// (and with the fixture's recorded answer).
func TestMosquittoACLDecisions(t *testing.T) {
	mosquittotest.Require(t, "mosquitto")
	dir := t.TempDir()
	var pw strings.Builder
	users := make([]string, 0, len(acltest.FixtureUsers))
	for u := range acltest.FixtureUsers {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		h, err := auth.HashPassword([]byte(acltest.FixtureUsers[u]))
		if err != nil {
			t.Fatal(err)
		}
		pw.WriteString(u + ":" + h + "\n")
	}
	pwPath, aclPath := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(pwPath, []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclPath, []byte(acltest.FixtureACL), 0o644); err != nil {
		t.Fatal(err)
	}
	acl, err := auth.LoadACLFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	addr := mosquittotest.Start(t, dir, "allow_anonymous true\npersistence false\npassword_file "+pwPath+"\nacl_file "+aclPath+"\n")

	probes := make([]acltest.Probe, len(acltest.FixtureCases))
	for i, c := range acltest.FixtureCases {
		probes[i] = c.Probe
	}
	got := acltest.Run(t, addr, acltest.PrivUser, acltest.PrivPass, probes)
	for i, c := range acltest.FixtureCases {
		g := acl.For(c.User, c.HasUser, c.ClientID)
		ours := g.CanRead([]byte(c.Topic))
		if c.Write {
			ours = g.CanWrite([]byte(c.Topic))
		}
		if got[i] != ours {
			t.Errorf("%v: mosquitto %v, auth %v (%s)", c.Probe, got[i], ours, c.Why)
		}
		if got[i] != c.Want {
			t.Errorf("%v: mosquitto %v, fixture says %v (%s)", c.Probe, got[i], c.Want, c.Why)
		}
	}
}
