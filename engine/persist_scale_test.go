package engine

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine/store"
)

// TestPersistRecoveryScale writes retained messages and offline sessions
// (one subscription, queued messages shared between them) straight into a
// store, then starts a broker on it in a child process and reports how
// long recovery took and the child's peak RSS. Small by default (checks
// the counts); TINYMQ_RECOVERY_SCALE=1 writes the figure:
// 1,000,000 retained messages and 100,000 sessions with 10 queued each;
// TINYMQ_RECOVERY_RETAINED, _SESSIONS and _QUEUED set each count.
func TestPersistRecoveryScale(t *testing.T) {
	if dir := os.Getenv("TINYMQ_RECOVERY_CHILD"); dir != "" {
		recoveryChild(dir)
		return
	}
	retained, sessions, queued := 10000, 1000, 10
	if os.Getenv("TINYMQ_RECOVERY_SCALE") == "1" {
		retained, sessions = 1000000, 100000
	}
	for _, v := range []struct {
		env string
		dst *int
	}{{"TINYMQ_RECOVERY_RETAINED", &retained}, {"TINYMQ_RECOVERY_SESSIONS", &sessions}, {"TINYMQ_RECOVERY_QUEUED", &queued}} {
		if x, err := strconv.Atoi(os.Getenv(v.env)); err == nil && x >= 0 {
			*v.dst = x
		}
	}
	dir := t.TempDir()
	t0 := time.Now()
	st, err := store.Open(store.Options{Dir: dir, Fsync: store.FsyncNone, QueueLen: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	submit := func(b *store.Batch) {
		for {
			_, err := st.Submit(b)
			if err == nil {
				return
			}
			if err != store.ErrQueueFull {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // the writer is behind
		}
	}
	payload := make([]byte, 64)
	b := store.NewBatch()
	for i := range retained {
		b.SetRetained(&store.Message{Topic: []byte(fmt.Sprintf("ret/%07d", i)), Payload: payload, QoS: 1, Retain: true})
		if b.Len() >= 1000 {
			submit(b)
			b = store.NewBatch()
		}
	}
	ids := make([]uint64, queued)
	for i := range ids {
		ids[i] = st.NextMessageID()
		b.PutMessage(ids[i], &store.Message{Topic: []byte("q/x"), Payload: payload, QoS: 1})
	}
	for s := range sessions {
		cid := fmt.Sprintf("dev-%06d", s)
		b.SetSession(cid, &store.SessionInfo{ProtocolVersion: 4})
		b.SetSubscription(cid, &store.Subscription{Filter: []byte("q/#"), QoS: 1})
		for i, id := range ids {
			b.Enqueue(cid, uint64(i+1), id, 1, false)
		}
		if b.Len() >= 1000 {
			submit(b)
			b = store.NewBatch()
		}
	}
	submit(b)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	written := time.Since(t0)

	cmd := exec.Command(os.Args[0], "-test.run=^TestPersistRecoveryScale$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TINYMQ_RECOVERY_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "RECOVERY ") {
			line = l
		}
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(strings.TrimPrefix(line, "RECOVERY ")) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	if f["retained"] != strconv.Itoa(retained) || f["offline"] != strconv.Itoa(sessions) || f["queued"] != strconv.Itoa(sessions*queued) {
		t.Fatalf("recovered %q; want %d retained, %d offline sessions, %d queued", line, retained, sessions, sessions*queued)
	}
	t.Logf("wrote %d retained + %d sessions x %d queued in %v; %s", retained, sessions, queued, written.Round(time.Millisecond), line)
}

// recoveryChild starts a broker on dir and prints what it recovered, how
// long New took and the process's RSS. Runs in the child process.
func recoveryChild(dir string) {
	o := DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.SysInterval = "127.0.0.1:0", "", -1
	o.Persistence, o.DataDir = true, dir
	before := vmKB("VmRSS")
	t0 := time.Now()
	b, err := New(o)
	if err != nil {
		fmt.Println("RECOVERY error", err)
		os.Exit(1)
	}
	took := time.Since(t0)
	sn := b.Snapshot()
	runtime.GC()
	if path := os.Getenv("TINYMQ_RECOVERY_HEAP"); path != "" { // where the memory is
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	fmt.Printf("RECOVERY retained=%d offline=%d queued=%d new=%v rss_before=%dkB rss_after=%dkB peak=%dkB\n",
		sn.Retained, sn.SessionsOffline, sn.Queued, took.Round(time.Millisecond), before, vmKB("VmRSS"), vmKB("VmHWM"))
	_ = b.closeStore()
	os.Exit(0)
}

// vmKB reads a kB field of /proc/self/status.
func vmKB(field string) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	return -1
}
