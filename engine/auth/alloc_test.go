//go:build !race

package auth

import "testing"

func TestGrantsAllocs(t *testing.T) {
	a := mustParse(t, testACL)
	g := a.For("alice", true, "c")
	read, write := []byte("a/b/c"), []byte("alice/x")
	g.CanRead(read)
	g.CanWrite(write)
	for name, f := range map[string]func(){
		"CanRead hit":  func() { _ = g.CanRead(read) },
		"CanWrite hit": func() { _ = g.CanWrite(write) },
		"CanRead denied hit": func() {
			if g.CanRead([]byte("alice/private")) {
				t.Fatal("granted")
			}
		},
	} {
		f()
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %.1f allocations; want 0", name, n)
		}
	}
}
