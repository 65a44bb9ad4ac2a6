package bench

import (
	"context"
	"net"
	"os"
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
	// The exec'd broker's PID is its own, so /proc gives its CPU; the
	// wrapper's PID is the shell's (documented on StartCommand).
	if r := rep.Rows[0].Results["direct"]; r.BrokerCPU <= 0 {
		t.Fatalf("direct: no broker CPU from /proc: %+v", r)
	}
	var out strings.Builder
	WriteCompareTable(&out, rep.Rows, order)
	if !strings.Contains(out.String(), "| direct/wrapped |") {
		t.Fatalf("no ratio column:\n%s", out.String())
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
