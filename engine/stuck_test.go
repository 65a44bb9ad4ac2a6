package engine

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// A subscriber that stops reading must not cost the broker more than its
// bounds, nor slow the others. The broker runs as a subprocess so that its
// RSS is its own: built from ./cmd/tinymq into a temporary directory.

// brokerBinary builds cmd/tinymq into a temporary directory.
func brokerBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tinymq")
	out, err := exec.Command("go", "build", "-o", path, "github.com/tinymq/tinymq/cmd/tinymq").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return path
}

// brokerProc is a broker subprocess.
type brokerProc struct {
	cmd           *exec.Cmd
	mqtt, http    string
	peakRSS, base int64
	stopSampling  chan struct{}
	samplingDone  chan struct{}
}

// startBrokerProcess runs the broker with args (MQTT and HTTP on free
// loopback ports) and waits for its listener log lines.
func startBrokerProcess(t *testing.T, args ...string) *brokerProc {
	t.Helper()
	bin := brokerBinary(t)
	args = append([]string{"--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--sys-interval", "0",
		"--persistence=false"}, args...) // in memory, as before persistence (no ./data left behind)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &brokerProc{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // only the process this test started
		_ = cmd.Wait()
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // later log lines are not needed
			}
		}
	}()
	deadline := time.After(10 * time.Second)
	for p.mqtt == "" || p.http == "" {
		select {
		case l := <-lines:
			if !strings.Contains(l, "msg=listening") {
				continue
			}
			_, addr, _ := strings.Cut(l, "addr=")
			addr, _, _ = strings.Cut(addr, " ")
			switch {
			case strings.Contains(l, "listener=mqtt"):
				p.mqtt = addr
			case strings.Contains(l, "listener=http"):
				p.http = addr
			}
		case <-deadline:
			t.Fatal("broker process did not log its listeners within 10 s")
		}
	}
	return p
}

// rss reads VmRSS of the broker process, in bytes.
func (p *brokerProc) rss(t *testing.T) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading broker status: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// sampleRSS records the peak RSS every 20 ms until stopRSS.
func (p *brokerProc) sampleRSS(t *testing.T) {
	p.base = p.rss(t)
	p.peakRSS = p.base
	p.stopSampling = make(chan struct{})
	p.samplingDone = make(chan struct{})
	pid := p.cmd.Process.Pid
	go func() {
		defer close(p.samplingDone)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-p.stopSampling:
				return
			case <-tk.C:
			}
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(raw), "\n") {
				if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
					p.peakRSS = max(p.peakRSS, kb<<10)
				}
			}
		}
	}()
}

func (p *brokerProc) stopRSS() (base, peak int64) {
	close(p.stopSampling)
	<-p.samplingDone
	return p.base, p.peakRSS
}

// metric reads one sample of the broker's /metrics.
func (p *brokerProc) metric(t *testing.T, sample string) float64 {
	t.Helper()
	v, ok, err := scrapeMetric(p.http, sample)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if !ok {
		t.Fatalf("no %s in /metrics", sample)
	}
	return v
}

// metricsText returns the /metrics lines containing any of the words.
func (p *brokerProc) metricsText(t *testing.T, words ...string) string {
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		for _, w := range words {
			if !strings.HasPrefix(l, "#") && strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// countingSub reads PUBLISHes as fast as it can (acknowledging QoS 1)
// and counts them.
type countingSub struct {
	c    net.Conn
	n    atomic.Int64
	err  atomic.Pointer[error]
	done chan struct{}
}

func newCountingSub(t *testing.T, addr, id string, qos uint8) *countingSub {
	rc := connected(t, addr, id, true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("big/#"), QoS: qos})
	s := &countingSub{c: rc.c, done: make(chan struct{})}
	_ = rc.c.SetReadDeadline(time.Time{}) // rawClient's reads left one
	go func() {
		defer close(s.done)
		r := bufio.NewReaderSize(rc.r, 64*1024)
		var ack []byte
		for {
			h, body, err := readFrame(r)
			if err != nil {
				s.err.Store(&err)
				return
			}
			if h.Type != codec.TypePublish {
				continue
			}
			if h.Flags&0x06 != 0 { // QoS 1: the packet id follows the topic
				tl := int(body[0])<<8 | int(body[1])
				ack = codec.AppendAck(ack[:0], codec.TypePuback, uint16(body[2+tl])<<8|uint16(body[3+tl]))
				if _, err := s.c.Write(ack); err != nil {
					s.err.Store(&err)
					return
				}
			}
			s.n.Add(1)
		}
	}()
	return s
}

// pumpWindowed publishes n copies of raw (one PUBLISH) in batches, never
// more than window messages ahead of the slowest reader, and returns the
// readers' delivery rate in messages per second. A reader that stops
// making progress for 10 s fails the test.
func pumpWindowed(t *testing.T, p *brokerProc, pub net.Conn, raw []byte, n, window int, readers []*countingSub) float64 {
	t.Helper()
	const batch = 32
	buf := bytes.Repeat(raw, batch)
	base := make([]int64, len(readers))
	for i, r := range readers {
		base[i] = r.n.Load()
	}
	slowest := func() int64 {
		m := int64(1 << 62)
		for i, r := range readers {
			m = min(m, r.n.Load()-base[i])
		}
		return m
	}
	start := time.Now()
	for sent := 0; sent < n; sent += batch {
		progress, since := slowest(), time.Now()
		for int64(sent)-slowest() > int64(window) {
			for i, r := range readers {
				if e := r.err.Load(); e != nil {
					t.Fatalf("reader %d: %v", i, *e)
				}
			}
			if s := slowest(); s != progress {
				progress, since = s, time.Now()
			} else if time.Since(since) > 10*time.Second {
				var counts []int64
				for i, r := range readers {
					counts = append(counts, r.n.Load()-base[i])
				}
				_, port, _ := net.SplitHostPort(p.mqtt)
				ss, _ := exec.Command("sh", "-c", "ss -tn | grep :"+port).CombinedOutput()
				t.Fatalf("readers stalled at %v of %d sent; broker: %s\n%s", counts, sent, p.metricsText(t, "dropped", "closed", "queued", "inflight"), ss)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := pub.Write(buf); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	waitFor(t, 20*time.Second, "every reader to get every message", func() bool { return slowest() >= int64(n) })
	return float64(n) / time.Since(start).Seconds()
}

// drainAcks reads and drops what the broker sends the publisher (PUBACKs).
func drainAcks(c net.Conn) {
	go func() { _, _ = io.Copy(io.Discard, c) }()
}

// TestStuckSubscriberQoS0: a subscriber to big/# that never reads while
// 1 GiB of QoS 0 (65,536 x 16 KiB) is published to big/x; three others
// read normally. The broker's RSS grows by less than 64 MiB, the readers
// get every message (the publisher stays at most 2 MiB ahead of the
// slowest of them, below --max-outbound-bytes, so none of their messages
// may be dropped), their rate is within a factor of 2 of a baseline run
// without the stuck subscriber, and the stuck subscriber's drops are
// counted. Here (2 cores) 1 GiB takes 4-8 s, the whole test under 10 s.
func TestStuckSubscriberQoS0(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB through a broker subprocess")
	}
	p := startBrokerProcess(t, "--slow-consumer-timeout", "10m") // the stuck one stays for the whole run
	readers := make([]*countingSub, 3)
	for i := range readers {
		readers[i] = newCountingSub(t, p.mqtt, fmt.Sprintf("reader-%d", i), 0)
	}
	pub := connected(t, p.mqtt, "pub", true)
	drainAcks(pub.c)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
	raw := (&codec.Publish{Topic: []byte("big/x"), Payload: payload}).AppendTo(nil, codec.V311)
	const window = 128 // messages: 2 MiB

	baseline := pumpWindowed(t, p, pub.c, raw, 4096, window, readers) // 64 MiB without the stuck one

	stuck := dialRaw(t, p.mqtt)
	stuck.connect(codec.Connect{ClientID: []byte("stuck"), CleanStart: true, KeepAlive: 0})
	stuck.subscribe(1, codec.Subscription{Filter: []byte("big/#")})
	// From here the stuck client never reads again.

	p.sampleRSS(t)
	const n = 65536 // 1 GiB
	t0 := time.Now()
	rate := pumpWindowed(t, p, pub.c, raw, n, window, readers)
	base, peak := p.stopRSS()
	dropped := p.metric(t, `tinymq_messages_dropped_total{reason="slow_consumer"}`)
	t.Logf("1 GiB in %v: readers %.0f msg/s (baseline %.0f); broker RSS %d -> peak %d MiB; %v QoS 0 drops for the stuck one",
		time.Since(t0).Round(time.Millisecond), rate, baseline, base>>20, peak>>20, dropped)
	for i, r := range readers {
		if e := r.err.Load(); e != nil {
			t.Fatalf("reader %d: %v", i, *e)
		}
	}
	if peak-base > 64<<20 {
		t.Fatalf("broker RSS grew by %d MiB with a stuck subscriber; bound 64 MiB", (peak-base)>>20)
	}
	if rate < baseline/2 {
		t.Fatalf("readers' rate %.0f msg/s with a stuck subscriber; baseline %.0f (want within a factor of 2)", rate, baseline)
	}
	// The stuck one can hold at most its socket buffers plus 4 MiB: almost
	// everything it was sent is dropped and counted.
	if dropped < n/2 {
		t.Fatalf("%v QoS 0 messages dropped for the stuck subscriber; want most of %d", dropped, n)
	}
	if c := p.metric(t, `tinymq_connections_closed_total{reason="slow_consumer"}`); c != 0 {
		t.Fatalf("%v slow-consumer disconnects with a 10 min timeout", c)
	}
}

// TestStuckSubscriberQoS1: the same with QoS 1 (1 GiB, 65,536 x 16 KiB):
// the stuck subscriber's in-flight window fills, then its queue up to
// --max-queued-messages; further messages to it are dropped and counted
// (queue_full), it is disconnected after --slow-consumer-timeout, and the
// readers get every message at a rate within a factor of 2 of the
// baseline, while the broker's RSS grows by less than 64 MiB.
func TestStuckSubscriberQoS1(t *testing.T) {
	if testing.Short() {
		t.Skip("broker subprocess")
	}
	p := startBrokerProcess(t, "--slow-consumer-timeout", "3s", "--max-queued-messages", "200", "--max-queued-bytes", "8388608")
	readers := make([]*countingSub, 3)
	for i := range readers {
		readers[i] = newCountingSub(t, p.mqtt, fmt.Sprintf("reader-%d", i), 1)
	}
	pub := connected(t, p.mqtt, "pub", true)
	drainAcks(pub.c)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	// QoS 1 with one packet id: the broker acknowledges each at once and
	// routes it; the id is ours to reuse.
	raw := (&codec.Publish{Topic: []byte("big/x"), Payload: payload, QoS: 1, PacketID: 1}).AppendTo(nil, codec.V311)
	const window = 128

	baseline := pumpWindowed(t, p, pub.c, raw, 1024, window, readers)

	stuck := dialRaw(t, p.mqtt)
	stuck.connect(codec.Connect{ClientID: []byte("stuck"), CleanStart: true, KeepAlive: 0})
	stuck.subscribe(1, codec.Subscription{Filter: []byte("big/#"), QoS: 1})

	p.sampleRSS(t)
	const n = 65536 // 1 GiB
	t0 := time.Now()
	rate := pumpWindowed(t, p, pub.c, raw, n, window, readers)
	elapsed := time.Since(t0)
	// The stream goes on until the stuck one is cut off: its queue has
	// been full (dropping) for --slow-consumer-timeout.
	deadline := time.Now().Add(15 * time.Second)
	for p.metric(t, `tinymq_connections_closed_total{reason="slow_consumer"}`) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("stuck QoS 1 subscriber not disconnected 15 s after its queue filled (timeout 3 s)")
		}
		pumpWindowed(t, p, pub.c, raw, 64, window, readers)
	}
	base, peak := p.stopRSS()
	dropped := p.metric(t, `tinymq_messages_dropped_total{reason="queue_full"}`)
	t.Logf("1 GiB QoS 1 in %v: readers %.0f msg/s (baseline %.0f); broker RSS %d -> peak %d MiB; %v dropped (queue full)",
		elapsed.Round(time.Millisecond), rate, baseline, base>>20, peak>>20, dropped)
	for i, r := range readers {
		if e := r.err.Load(); e != nil {
			t.Fatalf("reader %d: %v", i, *e)
		}
	}
	if peak-base > 64<<20 {
		t.Fatalf("broker RSS grew by %d MiB; bound 64 MiB", (peak-base)>>20)
	}
	if rate < baseline/2 {
		t.Fatalf("readers' rate %.0f msg/s with a stuck subscriber; baseline %.0f", rate, baseline)
	}
	// 32 in flight + 200 queued at most; what it was sent beyond that
	// until it was cut off (at least 3 s of the stream) is dropped.
	if dropped < 1000 {
		t.Fatalf("%v messages dropped (queue full); want thousands", dropped)
	}
	stuck.expectClosed(5 * time.Second)
	if q := p.metric(t, "tinymq_queued_messages"); q != 0 {
		t.Fatalf("%v messages still queued after the stuck clean session was cut off", q)
	}
}
