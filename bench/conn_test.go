package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine"
)

// TestMain lets this test binary act as a worker process, as
// tinymq-bench does, or as a broker process ("broker <addr>").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		if err := WorkerMain(os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "fake-tinymq" {
		// A stand-in for a TinyMQ with TLS, for the compare tests: it
		// accepts exactly the flags the comparison gives tinymq.
		if err := fakeTinyMQ(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fake-tinymq:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	addr := ""
	if len(os.Args) > 2 && os.Args[1] == "broker" {
		addr = os.Args[2]
	}
	if len(os.Args) > 2 && (os.Args[1] == "--config-file" || os.Args[1] == "start" && os.Args[2] == "--conf") {
		// FlashMQ's or NanoMQ's command line (bench/flashmq.sh,
		// nanomq.sh): serve the port the configuration names.
		var err error
		if addr, err = peerConfigAddr(os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if addr != "" {
		// A broker process for the compare tests (StartCommand).
		o := engine.DefaultOptions()
		o.MQTTAddr, o.HTTPAddr, o.SysInterval = addr, "", -1
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := engine.New(o)
		if err == nil {
			err = b.Start()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		select {} // until killed
	}
	os.Exit(m.Run())
}

// peerConfigAddr is the MQTT address in a FlashMQ configuration
// ("inet4_bind_address A" and "port N" lines) or a NanoMQ one
// (bind = "A:N").
func peerConfigAddr(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	host, port := "", ""
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "inet4_bind_address":
			host = f[1]
		case len(f) == 2 && f[0] == "port":
			port = f[1]
		case strings.Contains(l, "bind = \""):
			a := l[strings.Index(l, "bind = \"")+len("bind = \""):]
			if i := strings.IndexByte(a, '"'); i > 0 {
				return a[:i], nil
			}
		}
	}
	if host == "" || port == "" {
		return "", fmt.Errorf("%s: no listener address", path)
	}
	return net.JoinHostPort(host, port), nil
}

// fakeBroker accepts connections and answers CONNECT and SUBSCRIBE at
// the CONNECT's protocol level, with connackCode and subackCode; it counts
// CONNECTs (5.0 ones apart), SUBSCRIBEs and distinct source addresses.
type fakeBroker struct {
	ln                      net.Listener
	connects, v5, subs      atomic.Int64
	sources                 map[string]bool
	srcCh                   chan string
	connackCode, subackCode byte // set before the first connection
}

func startFake(t *testing.T) *fakeBroker { return startFakeCodes(t, 0, 1) }

// startFakeCodes is a fakeBroker that answers every CONNECT with
// connackCode and every SUBSCRIBE with subackCode.
func startFakeCodes(t *testing.T, connackCode, subackCode byte) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBroker{ln: ln, srcCh: make(chan string, 1024), connackCode: connackCode, subackCode: subackCode}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeBroker) serve(c net.Conn) {
	defer c.Close()
	select {
	case f.srcCh <- c.RemoteAddr().(*net.TCPAddr).IP.String():
	default: // a long-running fake (fake-tinymq) does not count sources
	}
	var buf []byte
	tmp := make([]byte, 4096)
	v := codec.V311
	for {
		n, err := c.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			h, fn, err := codec.ReadFrame(buf, 0)
			if err != nil || fn == 0 {
				break
			}
			switch h.Type {
			case codec.TypeConnect:
				f.connects.Add(1)
				var p codec.Connect
				if p.Decode(h, buf[h.HeaderLen:fn]) == nil && p.Version == codec.V5 {
					v = codec.V5
					f.v5.Add(1)
					_, _ = c.Write([]byte{0x20, 3, 0, f.connackCode, 0}) // empty properties
				} else {
					_, _ = c.Write([]byte{0x20, 2, 0, f.connackCode})
				}
			case codec.TypeSubscribe:
				f.subs.Add(1)
				if v == codec.V5 {
					_, _ = c.Write([]byte{0x90, 4, buf[h.HeaderLen], buf[h.HeaderLen+1], 0, f.subackCode})
				} else {
					_, _ = c.Write([]byte{0x90, 3, buf[h.HeaderLen], buf[h.HeaderLen+1], f.subackCode})
				}
			}
			buf = buf[fn:]
		}
	}
}

// TestRunConnSpreadsWorkersAndSources runs the conn scenario end to end:
// 3 worker processes, 3 source addresses, every connection up and
// subscribed, workers stopped at the end.
func TestRunConnSpreadsWorkersAndSources(t *testing.T) {
	f := startFake(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ConnConfig{Addr: f.ln.Addr().String(), Conns: 60, PerWorker: 20, Sources: 3, KeepAlive: 60,
		Subscribe: true, Dialers: 4, Hold: 10 * time.Millisecond, Timeout: 30 * time.Second, Executable: exe}
	res, err := RunConn(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 60 || res.Failed != 0 || res.Workers != 3 {
		t.Fatalf("result %+v; want 60 connected by 3 workers", res)
	}
	if f.connects.Load() != 60 || f.subs.Load() != 60 {
		t.Fatalf("broker saw %d CONNECTs and %d SUBSCRIBEs; want 60 each", f.connects.Load(), f.subs.Load())
	}
	seen := map[string]bool{}
	for len(f.srcCh) > 0 {
		seen[<-f.srcCh] = true
	}
	if len(seen) != 3 {
		t.Fatalf("source addresses %v; want 3", seen)
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("worker processes left running: %v", c)
	}
}

func TestReadProcSelf(t *testing.T) {
	st, err := ReadProc(os.Getpid())
	if err != nil || st.RSSBytes <= 0 {
		t.Fatalf("ReadProc: %+v %v", st, err)
	}
}

// children lists the live processes whose parent is this test process.
func children(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me && f[0] != "Z" {
			out = append(out, e.Name())
		}
	}
	return out
}
