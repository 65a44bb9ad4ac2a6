package engine

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
	"github.com/tinymq/tinymq/engine/store"
)

// checkpointBroker runs a broker with HTTP and persistence in dir, its
// checkpoints under ckDir; --fsync interval with a 10 s interval and a 10 s
// commit window, so that what the test writes is still in the store's
// writer's memory when it asks for a checkpoint.
func checkpointBroker(t *testing.T, dir, ckDir string, edit func(*Options)) *Broker {
	t.Helper()
	return startHTTPBroker(t, func(o *Options) {
		o.Persistence, o.DataDir, o.Fsync = true, dir, store.FsyncInterval
		o.FsyncInterval, o.storeWindow = 10*time.Second, 10*time.Second
		o.CheckpointDir = ckDir
		if edit != nil {
			edit(o)
		}
	})
}

type checkpointReply struct {
	Dir    string `json:"dir"`
	Bytes  int64  `json:"bytes"`
	TookMS *int64 `json:"took_ms"`
	Error  string `json:"error"`
}

func postCheckpoint(t *testing.T, b *Broker, body string, hdr ...string) (int, checkpointReply) {
	t.Helper()
	code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/checkpoint", body, hdr...)
	var r checkpointReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("checkpoint answer %d %q: %v", code, out, err)
	}
	return code, r
}

// A checkpoint of a running broker, taken through the HTTP API while the
// records are still in the store's commit window (nothing of them written
// to pebble: a 10 s window), holds the retained messages and the
// persistent session with its queue: a second broker started on the
// checkpoint directory has both retained messages, and the session
// resumes (session present) with its five queued messages in order. The
// name is taken under --checkpoint-dir; the same name again is refused
// (409), and so are names that would leave it (400) and other methods
// (405). The first broker goes on serving.
func TestStoreCheckpointHTTP(t *testing.T) {
	dir, ckDir := t.TempDir(), t.TempDir()
	b := checkpointBroker(t, dir, ckDir, nil)
	sub := dialRaw(t, b.MQTTAddr())
	sub.connect(codec.Connect{ClientID: []byte("dev"), KeepAlive: 60})
	sub.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 1})
	sub.c.Close()
	pub := connected(t, b.MQTTAddr(), "pub", true)
	waitFor(t, 5*time.Second, "dev offline", func() bool { return b.Stats().Connected == 1 })
	pub.publish("r/a", "ra", 1, true, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/b", "rb", 1, true, 2)
	pub.expect(codec.TypePuback, 5*time.Second)
	for i := range 5 {
		pub.publish("q/x", fmt.Sprint("m", i), 1, false, uint16(10+i))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if w := b.ps.st.Overlay().Written; w != 0 {
		t.Fatalf("%d records reached pebble before the checkpoint; the test wants them in the commit window", w)
	}

	code, r := postCheckpoint(t, b, `{"name":"c1"}`)
	if code != 200 || r.Dir != filepath.Join(ckDir, "c1") || r.Bytes <= 0 || r.TookMS == nil {
		t.Fatalf("checkpoint: %d %+v; want 200 with dir %s, bytes and took_ms", code, r, filepath.Join(ckDir, "c1"))
	}
	if code, r := postCheckpoint(t, b, `{"name":"c1"}`); code != 409 || !strings.Contains(r.Error, "not empty") {
		t.Fatalf("checkpoint into an existing one: %d %+v; want 409", code, r)
	}
	for _, bad := range []string{`{"name":"../c2"}`, `{"name":".c2"}`, `{"name":"a/b"}`, `{"dir":"/tmp/x","name":7}`} {
		if code, r := postCheckpoint(t, b, bad); code != 400 {
			t.Fatalf("checkpoint %s: %d %+v; want 400", bad, code, r)
		}
	}
	if code, _, _ := do(t, "GET", "http://"+b.HTTPAddr()+"/api/v1/store/checkpoint", ""); code != 405 {
		t.Fatalf("GET checkpoint: %d; want 405", code)
	}
	if ents, _ := os.ReadDir(ckDir); len(ents) != 1 {
		t.Fatalf("%s holds %d entries; want only c1", ckDir, len(ents))
	}
	pub.publish("r/c", "after", 1, true, 3) // the first broker goes on
	pub.expect(codec.TypePuback, 5*time.Second)

	b2 := checkpointBroker(t, r.Dir, t.TempDir(), nil)
	if n := b2.Stats().Retained; n != 2 {
		t.Fatalf("broker on the checkpoint: %d retained; want 2 (r/a, r/b)", n)
	}
	dev := dialRaw(t, b2.MQTTAddr())
	if ack := dev.connect(codec.Connect{ClientID: []byte("dev"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("broker on the checkpoint: session present = 0; want the persistent session")
	}
	for i := range 5 {
		p := dev.expectPublish(5 * time.Second)
		if want := fmt.Sprint("m", i); string(p.Payload) != want {
			t.Fatalf("queued message %d: %q; want %q", i, p.Payload, want)
		}
		dev.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	rd := connected(t, b2.MQTTAddr(), "rd", true)
	rd.subscribe(1, codec.Subscription{Filter: []byte("r/#"), QoS: 0})
	got := map[string]string{}
	for range 2 {
		p := rd.expectPublish(5 * time.Second)
		got[string(p.Topic)] = string(p.Payload)
	}
	if got["r/a"] != "ra" || got["r/b"] != "rb" {
		t.Fatalf("retained on the checkpoint: %v", got)
	}
	rd.expectNothing(200 * time.Millisecond)
}

// The request waits off the loop and is answered in order with the
// requests pipelined behind it on the same connection; without a name the
// checkpoint is named after the time. While another operation runs the
// endpoints answer 409.
func TestStoreCheckpointPipelined(t *testing.T) {
	ckDir := t.TempDir()
	b := checkpointBroker(t, t.TempDir(), ckDir, nil)
	h := dialHTTP(t, b.HTTPAddr())
	h.send("POST /api/v1/store/checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" +
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := h.response()
	var r checkpointReply
	if err := json.Unmarshal([]byte(body), &r); err != nil || resp.StatusCode != 200 ||
		filepath.Dir(r.Dir) != ckDir || !strings.HasPrefix(filepath.Base(r.Dir), "checkpoint-") {
		t.Fatalf("checkpoint: %d %s (%v); want 200 and a dir checkpoint-TIME under %s", resp.StatusCode, body, err, ckDir)
	}
	if resp, body := h.response(); resp.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("pipelined /healthz: %d %s", resp.StatusCode, body)
	}
	b.ps.adminBusy.Store(true)
	for _, p := range []string{"checkpoint", "compact"} {
		if code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/"+p, `{"name":"busy"}`); code != 409 {
			t.Fatalf("%s while another runs: %d %s; want 409", p, code, out)
		}
	}
	b.ps.adminBusy.Store(false)
}

// Without persistence there is no store: 503 for both endpoints, and
// Broker.Checkpoint says ErrNoPersistence.
func TestStoreCheckpointNoPersistence(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.CheckpointDir = t.TempDir() })
	for _, p := range []string{"checkpoint", "compact"} {
		if code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/"+p, `{"name":"x"}`); code != 503 {
			t.Fatalf("%s without persistence: %d %s; want 503", p, code, out)
		}
	}
	if _, err := b.Checkpoint(t.TempDir()); err != ErrNoPersistence {
		t.Fatalf("Checkpoint without persistence: %v; want ErrNoPersistence", err)
	}
}

// With an API key only its holder may checkpoint or compact (401 without
// it or with a wrong one, 403 for a user of the password file); with a
// password file and anonymous access allowed, an anonymous caller gets
// 403 (as it would not for GET /api/v1/clients) and a user of the file may.
// Nothing is written for a refused request.
func TestStoreCheckpointAuth(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	h, err := auth.HashPassword([]byte("ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("ops:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	basic := []string{"Authorization", "Basic b3BzOm9wcy1wdw=="} // ops:ops-pw

	ckDir := t.TempDir()
	b := checkpointBroker(t, t.TempDir(), ckDir, func(o *Options) { o.APIKey, o.PasswordFile = "k3y", pw })
	for _, c := range []struct {
		hdr  []string
		want int
	}{
		{nil, 401},
		{[]string{"Authorization", "Bearer wrong"}, 401},
		{basic, 403},
	} {
		for _, p := range []string{"checkpoint", "compact"} {
			if code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/"+p, `{"name":"x"}`, c.hdr...); code != c.want {
				t.Fatalf("%s with %v: %d %s; want %d", p, c.hdr, code, out, c.want)
			}
		}
	}
	if ents, _ := os.ReadDir(ckDir); len(ents) != 0 {
		t.Fatalf("refused requests wrote %d entries into %s", len(ents), ckDir)
	}
	if code, r := postCheckpoint(t, b, `{"name":"x"}`, "Authorization", "Bearer k3y"); code != 200 {
		t.Fatalf("checkpoint with the API key: %d %+v", code, r)
	}

	yes := true
	ckDir = t.TempDir()
	b = checkpointBroker(t, t.TempDir(), ckDir, func(o *Options) { o.PasswordFile, o.AllowAnonymous = pw, &yes })
	if code, _, _ := do(t, "GET", "http://"+b.HTTPAddr()+"/api/v1/clients", ""); code != 200 {
		t.Fatalf("anonymous GET /api/v1/clients: %d; the test assumes it is open here", code)
	}
	for _, p := range []string{"checkpoint", "compact"} {
		if code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/"+p, `{"name":"x"}`); code != 403 {
			t.Fatalf("anonymous %s: %d %s; want 403", p, code, out)
		}
	}
	if ents, _ := os.ReadDir(ckDir); len(ents) != 0 {
		t.Fatalf("refused requests wrote %d entries into %s", len(ents), ckDir)
	}
	if code, r := postCheckpoint(t, b, `{"name":"x"}`, basic...); code != 200 {
		t.Fatalf("checkpoint as ops: %d %+v", code, r)
	}
}

// POST /api/v1/store/compact writes what the commit window holds and
// compacts: after 200 retained messages of 1 KiB (incompressible) and the
// deletion of 190, the sorted tables hold the 10 live ones (none without
// the compaction, or when the window is not written first: it all sits in
// the write-ahead log, or in the window), and a restart loads the 10.
func TestStoreCompactHTTP(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncNone, func(o *Options) { o.HTTPAddr = "127.0.0.1:0" })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	rnd := rand.NewChaCha8([32]byte{})
	const n, keep = 200, 10
	id := uint16(0)
	for i := range n {
		p := make([]byte, 1024)
		_, _ = rnd.Read(p)
		id++
		pub.publish(fmt.Sprintf("r/%03d", i), string(p), 1, true, id)
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	for i := keep; i < n; i++ {
		id++
		pub.publish(fmt.Sprintf("r/%03d", i), "", 1, true, id)
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	waitFor(t, 5*time.Second, "10 retained", func() bool { return b.Stats().Retained == keep })
	code, out, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/store/compact", "")
	var r struct {
		Status string `json:"status"`
		Bytes  int64  `json:"bytes"`
		TookMS *int64 `json:"took_ms"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 200 || r.Status != "compacted" || r.Bytes <= 0 || r.TookMS == nil {
		t.Fatalf("compact: %d %s (%v)", code, out, err)
	}
	stopBroker(t, b)
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	var sst int64
	for _, f := range m {
		if fi, err := os.Stat(f); err == nil {
			sst += fi.Size()
		}
	}
	if sst < keep*1024 || sst > 5*keep*1024 {
		t.Fatalf("sorted tables hold %d bytes after the compaction; want the %d live KiB (between %d and %d)", sst, keep, keep*1024, 5*keep*1024)
	}
	b = persistentBroker(t, dir, store.FsyncNone, nil)
	if got := b.Stats().Retained; got != keep {
		t.Fatalf("after restart: %d retained; want %d", got, keep)
	}
}
