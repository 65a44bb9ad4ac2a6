package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "TINYMQ_STORE_CRASH_CHILD"

// TestCrashChild is the child of TestCrashRecovery: it writes numbered
// records with fsync always and prints each durable sequence number.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("child of TestCrashRecovery only")
	}
	dir, round, _ := strings.Cut(spec, ",")
	s, err := Open(Options{Dir: dir, Fsync: FsyncAlways, OnDurable: func(n uint64) {
		fmt.Fprintf(os.Stdout, "D %d\n", n)
	}})
	if err != nil {
		fmt.Fprintf(os.Stdout, "E %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stdout, "R\n")
	cid := "crash-" + round
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; i <= 200000 && time.Now().Before(deadline); i++ {
		b := NewBatch()
		id := s.NextMessageID()
		b.PutMessage(id, &Message{Topic: []byte("c"), Payload: []byte(strconv.Itoa(i)), QoS: 1})
		b.Enqueue(cid, uint64(i), id, 1, false)
		b.SetRetained(&Message{Topic: fmt.Appendf(nil, "k/%s/%d", round, i), Payload: []byte("v")})
		for {
			if _, err := s.Submit(b); err == nil {
				break
			}
			time.Sleep(100 * time.Microsecond) // queue full: let the writer catch up
		}
	}
	s.Close()
	os.Exit(0)
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	for round := 0; round < 5; round++ {
		killAt := uint64(50 + rand.IntN(50000)) // a durable seq past which to kill
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", crashEnv, dir, round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var durable uint64
		reports, killed := 0, false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "E "):
				t.Fatalf("round %d: child: %s", round, line)
			case strings.HasPrefix(line, "D "):
				n, err := strconv.ParseUint(line[2:], 10, 64)
				if err != nil {
					t.Fatalf("child line %q", line)
				}
				if n > durable {
					durable = n
				}
				reports++
				if durable >= killAt && !killed {
					// Every line read after this was written before the
					// kill, so it counts as reported durable too.
					_ = cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				}
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited (%v) after %d reports, durable %d, before the kill at %d", round, err, reports, durable, killAt)
		}
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		// Each record i has seq i in the child (one submitter).
		missing := 0
		for i := uint64(1); i <= durable; i++ {
			page, err := s.Queue(fmt.Sprintf("crash-%d", round), i-1, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != 1 || page[0].Pos != i || string(page[0].Message.Payload) != strconv.FormatUint(i, 10) {
				missing++
			}
		}
		got := 0
		_, err = s.Load(Loader{Retained: func(m Message) error {
			if strings.HasPrefix(string(m.Topic), fmt.Sprintf("k/%d/", round)) {
				got++
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if missing > 0 || uint64(got) < durable {
			t.Fatalf("round %d: child reported %d durable; %d queue entries missing, %d retained present", round, durable, missing, got)
		}
		t.Logf("round %d: killed after %d reports, durable up to %d, %d retained recovered (>= durable)", round, reports, durable, got)
	}
}
