package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SyscallCount is one line of strace -c's summary.
type SyscallCount struct {
	Name  string `json:"name"`
	Calls int64  `json:"calls"`
}

// StraceResult is what a load row's strace pass counted: every system
// call the broker made (all threads, strace -c -f), its three most
// frequent ones, and the row's deliveries under strace. strace stops the
// broker at every call, so the pass's throughput and CPU are not the
// row's; only the counts per message are.
type StraceResult struct {
	Total     int64          `json:"total"`
	Delivered int64          `json:"delivered"`
	PerMsg    float64        `json:"syscalls_per_msg"`
	Top       []SyscallCount `json:"top"`
	Err       string         `json:"error,omitempty"`
}

// Tracer is a running strace -c -f -p PID.
type Tracer struct {
	cmd *exec.Cmd
	out string
}

// StartStrace attaches bin (strace) to every thread of pid, counting
// calls into a file in dir, and returns once every thread of pid is
// traced (TracerPid in /proc/PID/task/*/status), so that a load started
// after it is counted whole. Runs on the comparison's goroutine.
func StartStrace(bin string, pid int, dir string) (*Tracer, error) {
	f, err := os.CreateTemp(dir, "strace-*.txt")
	if err != nil {
		return nil, err
	}
	f.Close()
	cmd := exec.Command(bin, "-c", "-f", "-p", strconv.Itoa(pid), "-o", f.Name())
	cmd.Stdout, cmd.Stderr = nil, nil // "attached"/"detached" lines
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &Tracer{cmd: cmd, out: f.Name()}
	deadline := time.Now().Add(10 * time.Second)
	for !allTraced(pid) {
		if time.Now().After(deadline) {
			t.kill()
			return nil, fmt.Errorf("strace did not attach to %d within 10 s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return t, nil
}

// allTraced reports whether every thread of pid has a tracer.
func allTraced(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, st := range tasks {
		raw, err := os.ReadFile(st)
		if err != nil {
			return false
		}
		traced := false
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
				traced = strings.TrimSpace(v) != "0"
				break
			}
		}
		if !traced {
			return false
		}
	}
	return true
}

func (t *Tracer) kill() {
	_ = t.cmd.Process.Kill()
	_ = t.cmd.Wait()
	os.Remove(t.out)
}

// Stop detaches strace (SIGINT: it prints its summary and lets the
// broker run on) and returns the summary's counts.
func (t *Tracer) Stop() ([]SyscallCount, int64, error) {
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- t.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
		os.Remove(t.out)
		return nil, 0, errors.New("strace did not stop within 10 s of SIGINT")
	}
	raw, err := os.ReadFile(t.out)
	os.Remove(t.out)
	if err != nil {
		return nil, 0, err
	}
	return ParseStraceSummary(string(raw))
}

// ParseStraceSummary reads strace -c's table: a line per system call
// ("% time  seconds  usecs/call  calls  [errors]  syscall"), most time
// first, then a "total" line. It returns the calls sorted by count, most
// first, and the total.
func ParseStraceSummary(s string) ([]SyscallCount, int64, error) {
	var calls []SyscallCount
	total := int64(-1)
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || strings.HasPrefix(f[0], "-") || f[0] == "%" {
			continue
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			total = n
			continue
		}
		calls = append(calls, SyscallCount{Name: name, Calls: n})
	}
	if total < 0 {
		return nil, 0, fmt.Errorf("no strace -c summary in %q", s)
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Calls > calls[j].Calls })
	return calls, total, nil
}
