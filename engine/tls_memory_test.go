package engine

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// BenchmarkTLSIdleMemory opens idle TLS 1.3 MQTT connections (2,000 by
// default; TINYMQ_TLS_CONNS overrides) from a separate process, so that
// only the broker's memory is in this one, and reports the broker's heap
// per connection after a GC, then again after every client sent one 16 KB
// PUBLISH (crypto/tls keeps its input buffer at the largest record's size).
// The clients offer X25519 only, as an ESP32's mbedTLS does, or Go's
// default (X25519MLKEM768 first: a 1.2 KB key share). Run it once:
//
//	go test -run '^$' -bench BenchmarkTLSIdleMemory -benchtime 1x ./engine
//
// With TINYMQ_TLS_HEAP_PROFILE=prefix it writes prefix-<curve>.pprof (idle)
// for `go tool pprof -sample_index=inuse_space -top`.
func BenchmarkTLSIdleMemory(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("TINYMQ_TLS_CONNS")); err == nil && v > 0 {
		n = v
	}
	for _, curve := range []string{"x25519", "default"} {
		b.Run(curve, func(b *testing.B) {
			for range b.N {
				idle, big := measureTLSIdle(b, n, curve)
				b.ReportMetric(idle, "heapB/idle-conn")
				b.ReportMetric(big, "heapB/conn-after-16KB")
			}
		})
	}
}

func measureTLSIdle(b *testing.B, n int, curve string) (idle, big float64) {
	if prefix := os.Getenv("TINYMQ_TLS_HEAP_PROFILE"); prefix != "" {
		runtime.MemProfileRate = 512
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	ca := newTestCA(b, "bench-ca")
	br := startTLSBroker(b, ca, func(o *Options) {
		o.MQTTAddr = "127.0.0.1:0"
		o.ReturnIdleMemory = false
		o.ConnectTimeout = 60 * time.Second
	})
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	rss := func() int64 { // after giving free pages back, as --return-idle-memory does
		debug.FreeOSMemory()
		b, _ := os.ReadFile("/proc/self/statm")
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0
		}
		pages, _ := strconv.ParseInt(f[1], 10, 64)
		return pages * int64(os.Getpagesize())
	}
	// Warm up the pools and the loops with a few connections first.
	fleet := startFleet(b, br.TLSAddr(), ca.File, 8, curve)
	fleet.stop()
	waitFor(b, 10*time.Second, "warm-up clients gone", func() bool { return br.Snapshot().TLS.Connections == 0 })
	before := heap()
	rss0 := rss()
	t0 := time.Now()
	fleet = startFleet(b, br.TLSAddr(), ca.File, n, curve)
	defer fleet.stop()
	waitFor(b, 30*time.Second, "connections established", func() bool { return br.Snapshot().TLS.Connections == int64(n) })
	elapsed := time.Since(t0)
	quiet := func() { // idle: the tick has let go of every input buffer (trimTLS)
		waitFor(b, 10*time.Second, "input buffers let go", func() bool { return br.tb.stats.untrimmed.Load() == 0 })
	}
	quiet()
	after := heap()
	idle = float64(int64(after)-int64(before)) / float64(n)
	rssIdle := float64(rss()-rss0) / float64(n)
	if prefix := os.Getenv("TINYMQ_TLS_HEAP_PROFILE"); prefix != "" {
		f, err := os.Create(prefix + "-" + curve + ".pprof")
		if err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	fleet.command("big")
	quiet()
	after16 := heap()
	big = float64(int64(after16)-int64(before)) / float64(n)
	sn := br.Snapshot().TLS
	b.Logf("%d idle TLS 1.3 connections (client curves %s) in %v: %.0f B heap per connection idle (RSS %.0f B), %.0f B after a 16 KB PUBLISH each; %.0f µs of handshake wall time each",
		n, curve, elapsed.Round(time.Millisecond), idle, rssIdle, big, sn.HandshakeSeconds/float64(sn.Handshakes)*1e6)
	return idle, big
}

// fleet is a child process holding TLS clients (TestTLSFleetHelper).
type fleet struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startFleet(t testing.TB, addr, caFile string, n int, curve string) *fleet {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSFleetHelper$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("TINYMQ_TLS_FLEET=%s,%d,%s,%s", addr, n, curve, caFile))
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, cmd: cmd, in: in, out: bufio.NewReader(outp)}
	f.await("ready")
	return f
}

// await reads the child's output up to a line equal to want.
func (f *fleet) await(want string) {
	f.t.Helper()
	for {
		line, err := f.out.ReadString('\n')
		if err != nil {
			f.t.Fatalf("fleet: %v before %q", err, want)
		}
		if strings.TrimSpace(line) == want {
			return
		}
		if strings.HasPrefix(line, "fleet error") {
			f.t.Fatal(line)
		}
	}
}

func (f *fleet) command(c string) {
	f.t.Helper()
	fmt.Fprintln(f.in, c)
	f.await("done " + c)
}

func (f *fleet) stop() {
	if f.cmd.Process == nil || f.cmd.ProcessState != nil {
		return
	}
	f.in.Close()
	done := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill() // the child we started
		<-done
	}
}

// TestTLSFleetHelper is the client side of BenchmarkTLSIdleMemory, run in
// a child process; it skips otherwise.
func TestTLSFleetHelper(t *testing.T) {
	spec := os.Getenv("TINYMQ_TLS_FLEET")
	if spec == "" {
		t.Skip("client process of BenchmarkTLSIdleMemory")
	}
	parts := strings.Split(spec, ",")
	addr, curve, caFile := parts[0], parts[2], parts[3]
	n, _ := strconv.Atoi(parts[1])
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Println("fleet error", err)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13, ClientSessionCache: nil}
	if curve == "x25519" {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	conns := make([]*tls.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := tlsDial(addr, cfg)
		if err != nil {
			fmt.Println("fleet error", err)
			return
		}
		conns = append(conns, c)
		p := connectPacket(fmt.Sprintf("fleet-%s-%d", curve, i), "", "")
		if _, err := c.Write(p.AppendTo(nil)); err != nil {
			fmt.Println("fleet error", err)
			return
		}
		var ack [4]byte
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			fmt.Println("fleet error CONNACK", ack, err)
			return
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "big":
			pub := codec.Publish{Topic: []byte("nobody/listens"), Payload: make([]byte, 16<<10)}
			raw := pub.AppendTo(nil, codec.V311)
			for _, c := range conns {
				_, _ = c.Write(raw)
			}
			// A PINGREQ round trip on the last connection, after which
			// the broker has read every connection's PUBLISH (enough for
			// a measurement: the loops work in order).
			for _, c := range conns {
				_, _ = c.Write([]byte{0xc0, 0})
			}
			for _, c := range conns {
				var resp [2]byte
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, resp[:]); err != nil {
					fmt.Println("fleet error PINGRESP", err)
					return
				}
			}
			fmt.Println("done big")
		}
	}
}
