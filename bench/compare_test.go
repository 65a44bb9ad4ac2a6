package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseBrokerFlag(t *testing.T) {
	for _, c := range []struct {
		in, label, command string
		ok                 bool
	}{
		{"nats=nats-server -p {port}", "nats", "nats-server -p {port}", true},
		{" emqx = emqx foreground --port {port} ", "emqx", "emqx foreground --port {port}", true},
		{"nats-server -p {port}", "", "", false}, // no label
		{"nats=nats-server", "", "", false},      // no {port}
		{"mosquitto=mosquitto -p {port}", "", "", false},
		{"=x {port}", "", "", false},
	} {
		label, command, err := ParseBrokerFlag(c.in)
		if (err == nil) != c.ok || label != c.label || command != c.command {
			t.Errorf("ParseBrokerFlag(%q) = %q, %q, %v", c.in, label, command, err)
		}
	}
}

// TestCompareWithCommandBrokers runs the comparison against brokers given
// as command lines: one that execs the broker, one whose broker is a
// grandchild behind a wrapper shell. Both must be measured, and both must
// be gone (their ports closed) when the comparison ends.
func TestCompareWithCommandBrokers(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var addrs []string
	start := func(label, command string) func() (*Broker, error) {
		return func() (*Broker, error) {
			b, err := StartCommand(label, command, dir)
			if err == nil {
				addrs = append(addrs, b.Addr)
			}
			return b, err
		}
	}
	starters := map[string]func() (*Broker, error){
		"direct":  start("direct", exe+" broker 127.0.0.1:{port}"),
		"wrapped": start("wrapped", "/bin/sh -c '"+exe+" broker 127.0.0.1:{port} & wait'"),
	}
	order := []string{"direct", "wrapped"}
	opts := CompareOptions{Set: []CompareScenario{{Name: "fanin qos1 3->1",
		Load: LoadConfig{Scenario: "fanin", Publishers: 3, QoS: 1, Duration: 300 * time.Millisecond, Payload: 64}}}}
	rep, err := Compare(context.Background(), starters, order, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range order {
		r := rep.Rows[0].Results[b]
		if r.Delivered == 0 || r.Lost != 0 || r.Delivered != r.Expected {
			t.Fatalf("%s: %+v", b, r)
		}
	}
	// The exec'd broker's PID is its own, so /proc gives its CPU and its
	// system calls, and its name is this test binary's (at most 15 bytes
	// of it, as the kernel keeps it); the wrapper's PID is the shell's
	// (documented on StartCommand), which the report names.
	direct := rep.Rows[0].Results["direct"]
	if direct.BrokerCPU <= 0 {
		t.Fatalf("direct: no broker CPU from /proc: %+v", direct)
	}
	if direct.BrokerSyscR <= 0 || direct.BrokerSyscW <= 0 || direct.RWSyscallsPerMsg <= 0 {
		t.Fatalf("direct: no system calls from /proc/PID/io: %+v", direct)
	}
	wrapped := rep.Rows[0].Results["wrapped"]
	if wrapped.BrokerSyscR+wrapped.BrokerSyscW >= direct.BrokerSyscR+direct.BrokerSyscW {
		t.Fatalf("the wrapper shell made as many read/write calls (%d+%d) as the broker (%d+%d)",
			wrapped.BrokerSyscR, wrapped.BrokerSyscW, direct.BrokerSyscR, direct.BrokerSyscW)
	}
	comm := filepath.Base(exe)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if rep.Process["direct"] != comm || rep.Process["wrapped"] != "sh" {
		t.Fatalf("measured processes %q; want direct %q and wrapped %q", rep.Process, comm, "sh")
	}
	var out strings.Builder
	WriteCompareHost(&out, ThisMachine(), rep, order)
	WriteCompareTable(&out, rep.Rows, order)
	for _, want := range []string{"| direct/wrapped |", "| fanin qos1 3->1 | r+w syscalls/msg | " + fmt.Sprintf("%.2f", direct.RWSyscallsPerMsg) + " |",
		"| fanin qos1 3->1 | broker CPU-s |", "direct: `" + comm + "`, wrapped: `sh`", "epoll_wait"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in\n%s", want, out.String())
		}
	}
	if len(addrs) != 2 {
		t.Fatalf("started %d brokers; want 2", len(addrs))
	}
	for _, a := range addrs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("a broker still listens on %s after the comparison", a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("child processes left: %v", c)
	}
}

// TestCompareStrace: with Strace set, each broker runs the set once more
// under strace -c -f, and the row gets every system call it made per
// delivered message and the three most frequent ones: for an event-loop
// broker more calls than its read+write ones, with read or write among
// the top three.
func TestCompareStrace(t *testing.T) {
	bin, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
			t.Fatal("no strace (apt-get install strace)")
		}
		t.Skip("no strace (apt-get install strace)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	starters := map[string]func() (*Broker, error){
		"direct": func() (*Broker, error) { return StartCommand("direct", exe+" broker 127.0.0.1:{port}", dir) },
	}
	opts := CompareOptions{Strace: bin, StraceDir: dir, Set: []CompareScenario{{Name: "pairs qos1 x2",
		Load: LoadConfig{Scenario: "pairs", Publishers: 2, QoS: 1, Window: 4, Duration: 300 * time.Millisecond, Payload: 64}}}}
	rep, err := Compare(context.Background(), starters, []string{"direct"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	row := rep.Rows[0]
	st, r := row.Strace["direct"], row.Results["direct"]
	if st.Err != "" || st.Total <= 0 || st.Delivered <= 0 || st.PerMsg <= 0 || len(st.Top) != 3 {
		t.Fatalf("strace pass: %+v", st)
	}
	if st.PerMsg <= r.RWSyscallsPerMsg {
		t.Fatalf("strace counted %.2f calls/msg, no more than the %.2f read+write ones", st.PerMsg, r.RWSyscallsPerMsg)
	}
	rw := false
	for _, c := range st.Top {
		rw = rw || c.Name == "read" || c.Name == "write" || c.Name == "writev"
	}
	if !rw {
		t.Fatalf("no read or write among the top 3: %+v", st.Top)
	}
	var out strings.Builder
	WriteCompareTable(&out, rep.Rows, []string{"direct"})
	for _, want := range []string{fmt.Sprintf("| pairs qos1 x2 | all syscalls/msg (strace pass) | %.2f |", st.PerMsg),
		"| pairs qos1 x2 | top 3 syscalls per msg (strace pass) | " + st.Top[0].Name + " "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in\n%s", want, out.String())
		}
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("child processes left: %v", c)
	}
}

// TestPeerWrappers: bench/flashmq.sh and bench/nanomq.sh write a
// configuration for the port they are given and exec the binary in
// FLASHMQ / NANOMQ, so the process the comparison measures is the broker
// (here this test binary posing as each, serving the port it finds in the
// configuration), not the shell.
func TestPeerWrappers(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(exe)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	dir := t.TempDir()
	for _, c := range []struct{ label, command string }{
		{"flashmq", "env FLASHMQ=" + exe + " ./flashmq.sh {port} {dir}"},
		{"nanomq", "env NANOMQ=" + exe + " ./nanomq.sh {port} {dir}"},
	} {
		b, err := StartCommand(c.label, c.command, dir)
		if err != nil {
			t.Fatalf("%s: %v", c.label, err)
		}
		res, err := RunLoad(context.Background(), LoadConfig{Scenario: "fanin", Addr: b.Addr, BrokerPID: b.PID(), Publishers: 2,
			QoS: 1, Window: 4, Duration: 200 * time.Millisecond})
		proc := b.Process
		b.Stop()
		if err != nil {
			t.Fatalf("%s: %v", c.label, err)
		}
		if proc != comm || res.Delivered == 0 || res.Lost != 0 || res.RWSyscallsPerMsg <= 0 {
			t.Fatalf("%s: process %q (want %q): %+v", c.label, proc, comm, res)
		}
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("child processes left: %v", c)
	}
}

// TestCompareRoundsInterleaved: with Rounds, every row runs against each
// broker in turn on a fresh process, the first broker rotating from row to
// row and round to round; each row keeps every round, its result is the
// median round, and the table shows every round with its ratios.
func TestCompareRoundsInterleaved(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var started []string
	pids := map[int]bool{}
	start := func(label string) func() (*Broker, error) {
		return func() (*Broker, error) {
			b, err := StartCommand(label, exe+" broker 127.0.0.1:{port}", dir)
			if err == nil {
				started = append(started, label)
				pids[b.PID()] = true
			}
			return b, err
		}
	}
	order := []string{"a", "b"}
	starters := map[string]func() (*Broker, error){"a": start("a"), "b": start("b")}
	load := LoadConfig{Scenario: "fanin", Publishers: 2, QoS: 0, Window: 4, Duration: 200 * time.Millisecond, Payload: 64}
	opts := CompareOptions{Rounds: 3, Set: []CompareScenario{{Name: "row0", Load: load}, {Name: "row1", Load: load}}}
	rep, err := Compare(context.Background(), starters, order, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := "a b b a b a a b a b b a" // round r, row i: order rotated by i+r
	if got := strings.Join(started, " "); got != want {
		t.Fatalf("brokers started in the order %q; want %q", got, want)
	}
	if len(pids) != 12 {
		t.Fatalf("%d broker processes for 12 runs; want a fresh one each", len(pids))
	}
	for _, row := range rep.Rows {
		for _, b := range order {
			rs := row.Rounds[b]
			if len(rs) != 3 {
				t.Fatalf("%s %s: %d rounds; want 3", row.Scenario, b, len(rs))
			}
			for _, r := range rs {
				if r.Delivered == 0 || r.Lost != 0 || r.PerBrokerCPU <= 0 {
					t.Fatalf("%s %s: %+v", row.Scenario, b, r)
				}
			}
			v := []float64{rs[0].PerBrokerCPU, rs[1].PerBrokerCPU, rs[2].PerBrokerCPU}
			slices.Sort(v)
			if row.Results[b].PerBrokerCPU != v[1] {
				t.Fatalf("%s %s: result %.0f msgs/CPU-s is not the median of %v", row.Scenario, b, row.Results[b].PerBrokerCPU, v)
			}
		}
	}
	var out strings.Builder
	WriteCompareHost(&out, ThisMachine(), rep, order)
	WriteCompareTable(&out, rep.Rows, order)
	r0 := rep.Rows[0].Rounds
	line := fmt.Sprintf("| row0 | msgs per broker CPU-s, each round | %.0f / %.0f / %.0f |", r0["a"][0].PerBrokerCPU, r0["a"][1].PerBrokerCPU, r0["a"][2].PerBrokerCPU)
	ratio := fmt.Sprintf(" %.2f / ", r0["a"][0].PerBrokerCPU/r0["b"][0].PerBrokerCPU)
	for _, w := range []string{line, ratio, "- rounds: 3;"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("no %q in\n%s", w, out.String())
		}
	}
}

func TestMedianRound(t *testing.T) {
	rs := []LoadResult{{PerBrokerCPU: 5, Delivered: 1}, {PerBrokerCPU: 1, Delivered: 2}, {PerBrokerCPU: 3, Delivered: 3}, {PerBrokerCPU: 4, Delivered: 4}}
	if m := medianRound(rs); m.Delivered != 3 {
		t.Fatalf("median of 5, 1, 3, 4: the round with %v msgs/CPU-s; want the lower middle, 3", m.PerBrokerCPU)
	}
	if m := medianRound(rs[:3]); m.Delivered != 3 {
		t.Fatalf("median of 5, 1, 3: the round with %v msgs/CPU-s; want 3", m.PerBrokerCPU)
	}
	if rs[0].PerBrokerCPU != 5 {
		t.Fatal("medianRound reordered its argument")
	}
}
