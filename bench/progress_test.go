package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressTerminalUpdatesOneLine(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, true, time.Minute)
	p.Update(10, 0, 0)
	p.Update(20, 500, 1)
	p.Done()
	out := b.String()
	if strings.Count(out, "\r") != 2 || strings.Count(out, "\n") != 1 {
		t.Fatalf("terminal output %q: want two carriage returns and one final newline", out)
	}
	if !strings.Contains(out, "connected 20") || !strings.Contains(out, "errors 1") || !strings.Contains(out, "remaining") {
		t.Fatalf("missing fields in %q", out)
	}
}

func TestProgressPlainLinesAreThrottled(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, false, 0)
	p.Every = time.Hour
	p.Update(1, 0, 0)
	p.Update(2, 10, 0) // within Every: not printed
	p.Done()
	out := b.String()
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "\r") || strings.Contains(out, "remaining") {
		t.Fatalf("plain output %q: want one line without \\r and without remaining time", out)
	}
}

func TestProgressRate(t *testing.T) {
	p := NewProgress(nil, false, 10*time.Second)
	s := p.format(3*time.Second, 5, 1234.4, 2)
	if s != "elapsed 3s remaining 7s  connected 5  msgs/s 1234  errors 2" {
		t.Fatalf("got %q", s)
	}
}
