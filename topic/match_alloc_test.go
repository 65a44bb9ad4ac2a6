//go:build !race

package topic

import "testing"

func TestMatchAllocs(t *testing.T) {
	f, n := []byte("devices/+/cmd/#"), []byte("devices/42/cmd/reboot")
	zeroAllocs(t, "MatchFilter", func() {
		if !MatchFilter(f, n) {
			t.Fatal("no match")
		}
	})
	zeroAllocs(t, "Intersects", func() {
		if !Intersects(f, []byte("+/42/#")) {
			t.Fatal("no intersection")
		}
	})
	zeroAllocs(t, "Covers", func() { _ = Covers(f, []byte("devices/1/cmd")) })
}
