package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// submitRetry submits b, yielding while the writer's queue is full.
func submitRetry(s *Store, b *Batch) uint64 {
	for {
		seq, err := s.Submit(b)
		if err == nil {
			return seq
		}
		runtime.Gosched()
	}
}

// BenchmarkSubmit measures records/s through Submit to durable, per fsync
// mode and records per Batch. Each record is a QoS 1 message queued for one
// offline session (message record + queue entry + reference).
func BenchmarkSubmit(b *testing.B) {
	payload := make([]byte, 64)
	for _, mode := range []Fsync{FsyncAlways, FsyncInterval, FsyncNone} {
		for _, per := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("fsync=%s/batch=%d", mode, per), func(b *testing.B) {
				s := openT(b, Options{Fsync: mode, Interval: 50 * time.Millisecond})
				defer s.Close()
				b.ReportAllocs()
				b.ResetTimer()
				var pos uint64
				var last uint64
				for i := 0; i < b.N; i++ {
					bt := NewBatch()
					for r := 0; r < per; r++ {
						pos++
						id := s.NextMessageID()
						bt.PutMessage(id, &Message{Topic: []byte("sensors/x/temp"), Payload: payload, QoS: 1})
						bt.Enqueue("bench", pos, id, 1, false)
					}
					last = submitRetry(s, bt)
				}
				deadline := time.Now().Add(time.Minute)
				for s.Durable() < last && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if s.Durable() < last {
					b.Fatalf("not durable: %d < %d", s.Durable(), last)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// TestOfflineSessionsScenario writes sessions x queued messages (each
// message shared by every session, stored once), then measures disk size,
// the time of Load and of paging one queue. Small by default; set
// TINYMQ_STORE_SESSIONS=100000 for the documented run.
func TestOfflineSessionsScenario(t *testing.T) {
	sessions, perSession := 2000, 100
	if v := os.Getenv("TINYMQ_STORE_SESSIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 1_000_000 {
			t.Fatalf("TINYMQ_STORE_SESSIONS=%q: want 1..1000000", v)
		}
		sessions = n
	}
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Fsync: FsyncNone})
	start := time.Now()
	ids := make([]uint64, perSession)
	b := NewBatch()
	payload := make([]byte, 100)
	for i := range ids {
		ids[i] = s.NextMessageID()
		b.PutMessage(ids[i], &Message{Topic: fmt.Appendf(nil, "broadcast/%d", i), Payload: payload, QoS: 1})
	}
	submitRetry(s, b)
	var last uint64
	for c := 0; c < sessions; c++ {
		cid := fmt.Sprintf("device-%07d", c)
		b := NewBatch()
		b.SetSession(cid, &SessionInfo{ProtocolVersion: 4})
		b.SetSubscription(cid, &Subscription{Filter: []byte("broadcast/#"), QoS: 1})
		for i, id := range ids {
			b.Enqueue(cid, uint64(i+1), id, 1, false)
		}
		last = submitRetry(s, b)
	}
	waitFor(t, 10*time.Minute, "all committed", func() bool { return s.Committed() >= last })
	write := time.Since(start)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	size := dirSize(t, dir)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	n, queued := 0, 0
	st, err := s.Load(Loader{Session: func(se *Session) error {
		n++
		queued += int(se.QueueTail - se.QueueHead + 1)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n != sessions || queued != sessions*perSession {
		t.Fatalf("loaded %d sessions, %d queued; want %d, %d", n, queued, sessions, sessions*perSession)
	}
	if got := countPrefix(t, s, prefixMessage); got != perSession {
		t.Fatalf("%d message records, want %d (stored once)", got, perSession)
	}
	ps := time.Now()
	page, err := s.Queue(fmt.Sprintf("device-%07d", sessions/2), 0, perSession, nil)
	if err != nil || len(page) != perSession {
		t.Fatalf("page: %d %v", len(page), err)
	}
	pageDur := time.Since(ps)
	t.Logf("%d sessions x %d queued: write %v, disk %.1f MiB, load %v (%s), heap allocated by load %.1f MiB, page of %d in %v",
		sessions, perSession, write.Round(time.Millisecond), float64(size)/(1<<20), st.Duration.Round(time.Millisecond), st,
		float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), perSession, pageDur)
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

const rssEnv = "TINYMQ_STORE_RSS_CHILD"

func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return -1
}

// TestRSSChild prints the process RSS before and after opening an empty
// store (child of TestEmptyStoreRSS).
func TestRSSChild(t *testing.T) {
	dir := os.Getenv(rssEnv)
	if dir == "" {
		t.Skip("child of TestEmptyStoreRSS only")
	}
	runtime.GC()
	before := vmRSS()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Printf("E %v\n", err)
		os.Exit(2)
	}
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("t"), Payload: []byte("p")})
	seq := submitRetry(s, b)
	for s.Committed() < seq {
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	after := vmRSS()
	fmt.Printf("RSS %d %d\n", before, after)
	s.Close()
	os.Exit(0)
}

// TestEmptyStoreRSS measures the RSS an empty store adds to a process.
func TestEmptyStoreRSS(t *testing.T) {
	if os.Getenv(rssEnv) != "" {
		t.Skip("in the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRSSChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), rssEnv+"="+t.TempDir())
	out, _ := cmd.CombinedOutput()
	var before, after int64
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(line, "RSS %d %d", &before, &after); err == nil {
			break
		}
	}
	if before <= 0 || after <= 0 {
		t.Fatalf("child output: %s", out)
	}
	delta := after - before
	t.Logf("RSS before Open %d KiB, after Open and one write %d KiB: +%d KiB", before, after, delta)
	if delta > 16<<10 {
		t.Fatalf("an empty store adds %d KiB RSS, want < 16 MiB", delta)
	}
}
