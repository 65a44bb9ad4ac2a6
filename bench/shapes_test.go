package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCompareSetShapes: the default set is the device shapes (fan-in and
// fan-out at 1, 5 and 10 in flight, QoS 1 pairs at 10, fan-in at fixed
// 1k, 10k and 50k msg/s with a small window) and nothing deeper; the
// deep-pipeline rows come only with deep, each labelled as such.
func TestCompareSetShapes(t *testing.T) {
	type shape struct {
		scenario string
		qos      uint8
		window   int
		rate     int
		spread   bool
	}
	key := func(c CompareScenario) shape {
		return shape{c.Load.Scenario, c.Load.QoS, c.Load.Window, c.Load.Rate, c.Load.Spread}
	}
	want := []shape{
		{"fanin", 0, 1, 0, false}, {"fanin", 0, 5, 0, false}, {"fanin", 0, 10, 0, false},
		{"fanout", 0, 1, 0, false}, {"fanout", 0, 5, 0, false}, {"fanout", 0, 10, 0, false},
		{"pairs", 1, 10, 0, false},
		{"fanin", 0, 10, 1000, false}, {"fanin", 0, 10, 10000, false}, {"fanin", 0, 10, 50000, false},
		{"fanin", 0, 10, 10000, true},
	}
	set := CompareSet(3*time.Second, false)
	if len(set) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(set), len(want), set)
	}
	names := map[string]bool{}
	for i, c := range set {
		if key(c) != want[i] {
			t.Errorf("row %d %q is %+v, want %+v", i, c.Name, key(c), want[i])
		}
		if c.Load.Duration != 3*time.Second || c.About == "" {
			t.Errorf("row %q: duration %v, about %q", c.Name, c.Load.Duration, c.About)
		}
		if strings.Contains(c.Name, "deep") || c.Load.Window > 10 {
			t.Errorf("default row %q is deep (window %d)", c.Name, c.Load.Window)
		}
		if c.Load.Rate == 0 && !strings.Contains(c.Name, fmt.Sprintf("window %d", c.Load.Window)) {
			t.Errorf("row %q does not name its window %d", c.Name, c.Load.Window)
		}
		names[c.Name] = true
	}
	for _, n := range []string{"fanin qos0 100->1 window 1", "fanout qos0 1->100 window 10", "pairs qos1 x100 window 10",
		"fanin qos0 100->1 @1k/s", "fanin qos0 100->1 @10k/s", "fanin qos0 100->1 @50k/s", "fanin qos0 100->1 @10k/s spread"} {
		if !names[n] {
			t.Errorf("no row %q", n)
		}
	}
	deep := CompareSet(3*time.Second, true)
	if len(deep) <= len(set) {
		t.Fatalf("deep adds no rows: %d", len(deep))
	}
	for _, c := range deep[len(set):] {
		if c.Load.Window != 256 || !strings.Contains(c.Name, "deep pipeline (256 in flight)") || !strings.Contains(c.About, DeepLabel) {
			t.Errorf("deep row %q (%q) window %d", c.Name, c.About, c.Load.Window)
		}
	}
	var out strings.Builder
	rows := (&CompareOptions{Set: deep[len(set):]}).compareRows()
	WriteCompareTable(&out, rows, []string{"a", "b"})
	if !strings.Contains(out.String(), "| fanin qos0 100->1 deep pipeline (256 in flight) | msgs per broker CPU-s |") ||
		!strings.Contains(out.String(), "**fanin qos0 100->1 deep pipeline (256 in flight)**") {
		t.Fatalf("the deep rows are not labelled in the table:\n%s", out.String())
	}
}

// TestReadProcIO: syscr and syscw of this process grow by at least the
// reads and writes it makes between two readings.
func TestReadProcIO(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := ReadProcIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	for range 100 {
		if _, err := f.WriteAt(buf, 0); err != nil { // pwrite64
			t.Fatal(err)
		}
		if _, err := f.ReadAt(buf, 0); err != nil { // pread64
			t.Fatal(err)
		}
	}
	b, err := ReadProcIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b.SyscR-a.SyscR < 100 || b.SyscW-a.SyscW < 100 {
		t.Fatalf("100 reads and 100 writes counted as %d and %d", b.SyscR-a.SyscR, b.SyscW-a.SyscW)
	}
	if _, err := ReadProcIO(-1); err == nil {
		t.Fatal("no error for pid -1")
	}
}

// TestProcCommTruncated: /proc/PID/comm is the first 15 bytes of the
// executable's name, which is what a report shows.
func TestProcCommTruncated(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	raw, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(t.TempDir(), "a-broker-with-a-long-name")
	if err := os.WriteFile(long, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(long, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	comm, err := ProcComm(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if comm != "a-broker-with-a" {
		t.Fatalf("comm %q, want the first 15 bytes %q", comm, "a-broker-with-a")
	}
}

// TestParseStraceSummary reads strace 6's -c table, with and without the
// errors column, most calls first, and refuses text without a total.
func TestParseStraceSummary(t *testing.T) {
	const s = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 45.10    0.010090          14       696           epoll_pwait
 31.28    0.008802          12       900        12 read
 22.59    0.006356           9      1200           write
  1.03    0.000230           4        10           futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.028138          10      2806        12 total
`
	calls, total, err := ParseStraceSummary(s)
	if err != nil {
		t.Fatal(err)
	}
	if total != 2806 || len(calls) != 4 || calls[0] != (SyscallCount{"write", 1200}) || calls[1] != (SyscallCount{"read", 900}) ||
		calls[2] != (SyscallCount{"epoll_pwait", 696}) {
		t.Fatalf("total %d, calls %+v", total, calls)
	}
	if _, _, err := ParseStraceSummary("strace: Process 1 attached\n"); err == nil {
		t.Fatal("no error without a summary")
	}
}

// TestDueCount: at a fixed rate publishers start with one message and
// add one per period; in phase they are all due at the same instants,
// spread publisher i of n is due i/n of a period after publisher 0.
func TestDueCount(t *testing.T) {
	const perPub = 100.0 // a 10 ms period
	cases := []struct {
		elapsed time.Duration
		idx     int
		spread  bool
		want    int64
	}{
		{0, 0, false, 1}, {0, 99, false, 1}, {9 * time.Millisecond, 99, false, 1}, {10 * time.Millisecond, 50, false, 2},
		{0, 0, true, 1}, {4 * time.Millisecond, 50, true, 1}, {5 * time.Millisecond, 50, true, 2},
		{9 * time.Millisecond, 0, true, 1}, {10 * time.Millisecond, 0, true, 2}, {1 * time.Millisecond, 99, true, 2},
	}
	for _, c := range cases {
		if got := dueCount(c.elapsed, perPub, c.idx, 100, c.spread); got != c.want {
			t.Errorf("dueCount(%v, publisher %d of 100, spread %v) = %d; want %d", c.elapsed, c.idx, c.spread, got, c.want)
		}
	}
	// Spread, the due instants of 100 publishers over one period are
	// 100 µs apart; in phase they are one instant.
	instants := map[time.Duration]bool{}
	for idx := range 100 {
		for us := time.Duration(0); us <= 10*time.Millisecond; us += 10 * time.Microsecond {
			if dueCount(us, perPub, idx, 100, true) == 2 {
				instants[us] = true
				break
			}
		}
	}
	if len(instants) != 100 {
		t.Fatalf("spread: %d distinct due instants for 100 publishers; want 100", len(instants))
	}
}
