package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine"
	"github.com/tinymq/tinymq/engine/store"
)

// TestBridgeQueueSurvivesRestart: with the durable store, QoS 1 messages
// queued for a remote that is down survive a restart of the local broker
// (the bridge's local session is persistent) and reach the remote once it
// is back.
func TestBridgeQueueSurvivesRestart(t *testing.T) {
	remote := startTinyMQ(t)
	rsub := dialClient(t, remote.MQTTAddr(), "rsub", codec.V311, true)
	rsub.subscribe("keep/#", 1)
	px := newProxy(t, remote.MQTTAddr())
	dir := t.TempDir()
	persistent := func(o *engine.Options) {
		o.Persistence, o.DataDir, o.Fsync = true, dir, store.FsyncAlways
	}
	cfg := fmt.Sprintf("connection cloud\naddress %s\ntopic keep/# out 1\nrestart_timeout 0.1 0.3\n", px.addr)

	b1 := startTinyMQWith(t, persistent)
	m1 := startBridges(t, b1, cfg)
	waitFor(t, "the bridge's local session", 5*time.Second, func() bool {
		st := m1.Status()[0]
		return st.State == "backoff" && st.LastError != "" // local session up, remote refused
	})
	lpub := dialClient(t, b1.MQTTAddr(), "lpub", codec.V311, true)
	const n = 20
	for i := range n {
		lpub.publish("keep/x", fmt.Sprint("m-", i), 1, false) // acknowledged once durable (--fsync always)
	}
	waitFor(t, "queued for the remote", 5*time.Second, func() bool { l := b1.Bridges(); return l[0].Queued+l[0].Inflight == n })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b1.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	b2 := startTinyMQWith(t, persistent) // same data directory
	startBridges(t, b2, cfg)
	px.up()
	got := map[string]bool{}
	for len(got) < n {
		got[rsub.expect("the messages queued before the restart").payload] = true
	}
	for i := range n {
		if !got[fmt.Sprint("m-", i)] {
			t.Fatalf("m-%d lost across the restart; got %v", i, got)
		}
	}
}
