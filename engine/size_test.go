package engine

import (
	"testing"
	"unsafe"
)

// TestConnSize guards the per-connection structs: each is allocated once
// per connection (a session once per client), so a field that pushes one
// into the next size class costs 16 bytes per connection on every host.
// Measured idle cost: docs/benchmarks.md.
func TestConnSize(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"conn", unsafe.Sizeof(conn{}), 80},
		{"session", unsafe.Sizeof(session{}), 96},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes; the budget is %d (reorder fields or move rare ones out)", c.name, c.size, c.max)
		}
	}
}
