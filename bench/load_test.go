package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tinymq/tinymq/engine"
)

func startTinyMQ(t *testing.T, edit func(*engine.Options)) *engine.Broker {
	t.Helper()
	o := engine.DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.SysInterval = "127.0.0.1:0", "", -1
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if edit != nil {
		edit(&o)
	}
	b, err := engine.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Stop(ctx)
	})
	return b
}

// TestTallyAccounting: duplicates, reordering and latency are counted
// from the payload header.
func TestTallyAccounting(t *testing.T) {
	tl := &tally{recv: make([]atomic.Int64, 2), seen: make([][]uint64, 2), maxSeq: make([]int64, 2), hist: hdrhistogram.New(1, 60_000_000, 3)}
	now := time.Now().UnixNano()
	for _, seq := range []int64{0, 1, 3, 2, 2, 100, 1} { // 2 and 1 repeat; 2 arrives after 3
		tl.record(0, seq, now-int64(seq+1)*1000, now)
	}
	tl.record(1, 0, now-5000, now)
	if got := tl.recv[0].Load(); got != 5 {
		t.Fatalf("unique from publisher 0: %d; want 5", got)
	}
	if tl.dups != 2 || tl.reorder != 1 {
		t.Fatalf("dups %d reorder %d; want 2 and 1", tl.dups, tl.reorder)
	}
	if tl.hist.TotalCount() != 6 || tl.hist.Max() < 100 {
		t.Fatalf("histogram count %d max %d", tl.hist.TotalCount(), tl.hist.Max())
	}
	if p := tl.hist.ValueAtQuantile(50); p < 1 || p > 5 {
		t.Fatalf("median latency %d µs; want between 1 and 5", p)
	}
}

// TestRunLoadSmoke runs each scenario for a moment against TinyMQ: nothing
// lost, duplicated or reordered.
func TestRunLoadSmoke(t *testing.T) {
	b := startTinyMQ(t, nil)
	for _, cfg := range []LoadConfig{
		{Scenario: "fanin", Publishers: 5, QoS: 0},
		{Scenario: "fanout", Subscribers: 5, QoS: 1},
		{Scenario: "pairs", Publishers: 3, QoS: 2},
		{Scenario: "fanin", Publishers: 2, QoS: 1, Rate: 2000},
	} {
		cfg.Addr, cfg.Duration, cfg.Payload = b.MQTTAddr(), 300*time.Millisecond, 100
		res, err := RunLoad(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", cfg.Scenario, err)
		}
		if res.Delivered == 0 || res.Lost != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 || res.Delivered != res.Expected {
			t.Fatalf("%s qos %d: %+v", cfg.Scenario, cfg.QoS, res)
		}
		if cfg.Rate > 0 && (res.Sent < 400 || res.Sent > 800) {
			t.Fatalf("rate 2000/s for 0.3 s sent %d; want about 600", res.Sent)
		}
	}
}

// TestRunLoadReportsBrokerDrops: with a tiny outbound cap and no flow
// control, the broker drops QoS 0 messages for slow subscribers; the tool
// must report exactly as many lost as the broker counted dropped.
func TestRunLoadReportsBrokerDrops(t *testing.T) {
	b := startTinyMQ(t, func(o *engine.Options) { o.MaxOutboundBytes = 2048 })
	res, err := RunLoad(context.Background(), LoadConfig{Scenario: "fanout", Addr: b.MQTTAddr(), Subscribers: 20,
		QoS: 0, Payload: 1024, Window: 1 << 30, Duration: 300 * time.Millisecond, Drain: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dropped := int64(b.Stats().Dropped)
	if dropped == 0 {
		t.Skip("the broker dropped nothing this time; nothing to compare")
	}
	if res.Lost != dropped {
		t.Fatalf("tool reports %d lost; broker dropped %d", res.Lost, dropped)
	}
}

// TestRunHTTPSmoke: HTTP publishes reach the MQTT subscriber, all counted,
// with the API key on both sides.
func TestRunHTTPSmoke(t *testing.T) {
	// HTTP publishes get no back-pressure from a slow MQTT subscriber: on
	// a loaded machine the subscriber's QoS 1 queue (1,000 by default)
	// can fill and drop, which this test of the tool's accounting must
	// not mistake for loss. Give the queue room for the whole run.
	b := startTinyMQ(t, func(o *engine.Options) {
		o.HTTPAddr = "127.0.0.1:0"
		o.APIKey = "k"
		o.MaxQueuedMsgs = 1 << 20
	})
	res, err := RunHTTP(context.Background(), HTTPConfig{HTTPAddr: b.HTTPAddr(), MQTTAddr: b.MQTTAddr(),
		Conns: 4, QoS: 1, Payload: 32, Duration: time.Second, Token: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted == 0 || res.Errors != 0 || res.FirstError != "" {
		t.Fatalf("accepted %d errors %d (%s)", res.Accepted, res.Errors, res.FirstError)
	}
	if res.Delivered != res.Accepted || res.Lost != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 {
		t.Fatalf("delivered %d of %d (lost %d dup %d reordered %d)", res.Delivered, res.Accepted, res.Lost, res.Duplicates, res.OutOfOrder)
	}
	if res.RTTp50us <= 0 || res.DelivP50us <= 0 {
		t.Fatalf("latencies not measured: %+v", res)
	}
	// Without the key the subscriber is refused: the run fails loudly.
	if _, err := RunHTTP(context.Background(), HTTPConfig{HTTPAddr: b.HTTPAddr(), MQTTAddr: b.MQTTAddr(),
		Conns: 1, Duration: 200 * time.Millisecond}); err == nil {
		t.Fatal("run without the API key succeeded")
	}
}

// TestRunHTTPRef: the plain fasthttp.Server reference answers the http
// scenario as TinyMQ does (202 for every request), and the scenario runs
// without an MQTT subscriber against it.
func TestRunHTTPRef(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- RunHTTPRef(ctx, "127.0.0.1:0", func(a net.Addr) { addr <- a.String() }) }()
	res, err := RunHTTP(context.Background(), HTTPConfig{HTTPAddr: <-addr, Conns: 2, Payload: 32, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted == 0 || res.Errors != 0 || res.FirstError != "" || res.Delivered != 0 || res.Lost != 0 {
		t.Fatalf("reference run: %+v", res)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("reference server: %v", err)
	}
}

// TestRunHTTPRateLimit: a fixed rate is held within 10%.
func TestRunHTTPRateLimit(t *testing.T) {
	b := startTinyMQ(t, func(o *engine.Options) { o.HTTPAddr = "127.0.0.1:0" })
	res, err := RunHTTP(context.Background(), HTTPConfig{HTTPAddr: b.HTTPAddr(), MQTTAddr: b.MQTTAddr(),
		Conns: 2, Rate: 500, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests < 900 || res.Requests > 1100 {
		t.Fatalf("%d requests at 500/s for 2s; want 1000 ±10%%", res.Requests)
	}
}
