package auth

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

var sinkBool bool

// benchACL has n rules for user u: n-1 that do not match the benchmark
// topics, then the grant that does (the worst case for a linear scan).
func benchACL(n int) *ACL {
	var b strings.Builder
	b.WriteString("user u\n")
	for i := range n - 1 {
		fmt.Fprintf(&b, "topic read other/%d/+/#\n", i)
	}
	b.WriteString("topic read devices/+/telemetry/#\n")
	a, err := ParseACL("bench", []byte(b.String()))
	if err != nil {
		panic(err)
	}
	return a
}

// BenchmarkCanRead: a hit is the cached decision for one topic; a miss
// evaluates the rules (a new topic each time, so the cache keeps evicting);
// parallel runs hits from every core on one shared Grants.
func BenchmarkCanRead(b *testing.B) {
	for _, rules := range []int{10, 100} {

		topic := []byte("devices/dev-42/telemetry/temp")
		b.Run(fmt.Sprintf("rules=%d/cache=hit", rules), func(b *testing.B) {
			g := benchACL(rules).For("u", true, "c") // a fresh cache per sub-benchmark
			g.CanRead(topic)
			b.ReportAllocs()
			b.SetBytes(int64(len(topic)))
			for b.Loop() {
				sinkBool = g.CanRead(topic)
			}
		})
		b.Run(fmt.Sprintf("rules=%d/cache=miss", rules), func(b *testing.B) {
			g := benchACL(rules).For("u", true, "c") // a fresh cache per sub-benchmark
			topics := make([][]byte, 4096)
			for i := range topics {
				topics[i] = fmt.Appendf(nil, "devices/dev-%d/telemetry/temp", i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				sinkBool = g.CanRead(topics[i%len(topics)])
				i++
			}
		})
		b.Run(fmt.Sprintf("rules=%d/cache=none", rules), func(b *testing.B) {
			g := benchACL(rules).For("u", true, "c") // a fresh cache per sub-benchmark
			b.ReportAllocs()
			for b.Loop() {
				sinkBool = g.eval(topic, accRead) // the rules alone: the baseline
			}
		})
		b.Run(fmt.Sprintf("rules=%d/cache=hit/parallel", rules), func(b *testing.B) {
			g := benchACL(rules).For("u", true, "c") // a fresh cache per sub-benchmark
			topics := make([][]byte, 64)
			for i := range topics {
				topics[i] = fmt.Appendf(nil, "devices/dev-%d/telemetry/temp", i)
				g.CanRead(topics[i])
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(1)) * 7
				var ok bool
				for pb.Next() {
					ok = g.CanRead(topics[i%len(topics)])
					i++
				}
				sinkBool = ok
			})
		})
	}
}

// BenchmarkVerify is the cost of one login check: PBKDF2-SHA512 at
// Mosquitto's default 101 iterations (and the same dummy work for an
// unknown user).
func BenchmarkVerify(b *testing.B) {
	h, err := HashPassword([]byte("s3cret"))
	if err != nil {
		b.Fatal(err)
	}
	f, err := ParsePasswordFile("bench", []byte("u:"+h+"\n"))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, user string }{{"user=known", "u"}, {"user=unknown", "nobody"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkBool = f.Verify(c.user, []byte("s3cret"))
			}
		})
	}
}
