package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// HTTPConfig is the http scenario: Conns keep-alive HTTP connections each
// POST /publish/bench/http/{conn} in a loop (one request in flight per
// connection), and one MQTT subscriber on bench/http/+ checks that every
// accepted request is delivered, once and in order, and how long it took.
// With MQTTAddr empty there is no subscriber: the run measures the HTTP
// server alone (as against the plain fasthttp.Server of RunHTTPRef).
type HTTPConfig struct {
	HTTPAddr  string
	MQTTAddr  string
	Conns     int
	QoS       uint8
	Payload   int // bytes (at least 24)
	Rate      int // total requests/s; 0 = as fast as responses come back
	Duration  time.Duration
	Drain     time.Duration
	Token     string // API key, sent as a bearer token and MQTT password
	BrokerPID int

	// Progress, when set, is called about once a second with the requests
	// accepted and refused so far.
	Progress func(connections, accepted, errors int64) `json:"-"`
}

// HTTPResult is the outcome of an http run.
type HTTPResult struct {
	Requests     int64   `json:"requests"`
	Accepted     int64   `json:"accepted"`
	Errors       int64   `json:"errors"`
	Seconds      float64 `json:"seconds"`
	RequestsPerS float64 `json:"requests_per_sec"`
	RTTp50us     float64 `json:"response_p50_us"`
	RTTp99us     float64 `json:"response_p99_us"`
	RTTp999us    float64 `json:"response_p999_us"`
	Delivered    int64   `json:"delivered"`
	Lost         int64   `json:"lost"`
	Duplicates   int64   `json:"duplicates"`
	OutOfOrder   int64   `json:"out_of_order"`
	DelivP50us   float64 `json:"delivery_p50_us"`
	DelivP99us   float64 `json:"delivery_p99_us"`
	DelivP999us  float64 `json:"delivery_p999_us"`
	DelivMaxUs   float64 `json:"delivery_max_us"`
	BrokerCPU    float64 `json:"broker_cpu_seconds,omitempty"`
	CPUusPerReq  float64 `json:"broker_cpu_us_per_request,omitempty"`
	FirstError   string  `json:"first_error,omitempty"`
}

// RunHTTP runs the http scenario.
func RunHTTP(ctx context.Context, cfg HTTPConfig) (HTTPResult, error) {
	var res HTTPResult
	if cfg.Conns <= 0 {
		return res, errors.New("need at least one connection")
	}
	if cfg.QoS > 2 {
		return res, errors.New("QoS must be 0, 1 or 2")
	}
	cfg.Payload = max(cfg.Payload, headerLen)
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	t := &tally{recv: make([]atomic.Int64, cfg.Conns), seen: make([][]uint64, cfg.Conns),
		maxSeq: make([]int64, cfg.Conns), hist: hdrhistogram.New(1, 60_000_000, 3)}
	var (
		sc  net.Conn
		swg sync.WaitGroup
	)
	if cfg.MQTTAddr != "" {
		c, sr, err := dialMQTTAuth(cfg.MQTTAddr, "bench-http-sub", cfg.Token)
		if err != nil {
			return res, err
		}
		sc = c
		defer sc.Close()
		if err := subscribeOne(sc, sr, "bench/http/+", cfg.QoS); err != nil {
			return res, err
		}
		swg.Add(1)
		go func() { defer swg.Done(); subscriberLoop(sc, sr, t) }()
	}

	var cpu0 float64
	if cfg.BrokerPID > 0 {
		st, err := ReadProc(cfg.BrokerPID)
		if err != nil {
			return res, err
		}
		cpu0 = st.CPUSeconds
	}
	type connResult struct {
		accepted, errors atomic.Int64
		rtt              *hdrhistogram.Histogram
		err              error
	}
	results := make([]connResult, cfg.Conns)
	start := time.Now()
	stop := start.Add(cfg.Duration)
	perConn := float64(cfg.Rate) / float64(cfg.Conns)
	var wg sync.WaitGroup
	for i := range cfg.Conns {
		c, err := net.DialTimeout("tcp", cfg.HTTPAddr, 10*time.Second)
		if err != nil {
			return res, err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.rtt = hdrhistogram.New(1, 60_000_000, 3)
			r.err = httpPublisher(ctx, c, i, &cfg, start, stop, perConn, r.rtt, &r.accepted, &r.errors)
		}()
	}
	if cfg.Progress != nil {
		stopProgress := make(chan struct{})
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					var a, e int64
					for i := range results {
						a += results[i].accepted.Load()
						e += results[i].errors.Load()
					}
					cfg.Progress(int64(cfg.Conns), a, e)
				}
			}
		}()
		defer close(stopProgress)
	}
	wg.Wait()
	rtt := hdrhistogram.New(1, 60_000_000, 3)
	for i := range results {
		r := &results[i]
		res.Accepted += r.accepted.Load()
		res.Errors += r.errors.Load()
		rtt.Merge(r.rtt)
		if r.err != nil && res.FirstError == "" {
			res.FirstError = r.err.Error()
		}
	}
	res.Requests = res.Accepted + res.Errors
	el := time.Since(start)
	// Drain: every accepted request should be delivered.
	deadline := time.Now().Add(cfg.Drain)
	for sc != nil {
		var got int64
		for p := range t.recv {
			got += t.recv[p].Load()
		}
		if got >= res.Accepted || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if cfg.BrokerPID > 0 {
		if st, err := ReadProc(cfg.BrokerPID); err == nil {
			res.BrokerCPU = st.CPUSeconds - cpu0
		}
	}
	if sc != nil {
		sc.Close()
		swg.Wait()
		for p := range t.recv {
			res.Delivered += t.recv[p].Load()
		}
		res.Duplicates, res.OutOfOrder = t.dups, t.reorder
		res.Lost = res.Accepted - res.Delivered
	}
	res.Seconds = el.Seconds()
	res.RequestsPerS = float64(res.Requests) / res.Seconds
	res.RTTp50us = float64(rtt.ValueAtQuantile(50))
	res.RTTp99us = float64(rtt.ValueAtQuantile(99))
	res.RTTp999us = float64(rtt.ValueAtQuantile(99.9))
	res.DelivP50us = float64(t.hist.ValueAtQuantile(50))
	res.DelivP99us = float64(t.hist.ValueAtQuantile(99))
	res.DelivP999us = float64(t.hist.ValueAtQuantile(99.9))
	res.DelivMaxUs = float64(t.hist.Max())
	if res.BrokerCPU > 0 && res.Requests > 0 {
		res.CPUusPerReq = res.BrokerCPU * 1e6 / float64(res.Requests)
	}
	return res, nil
}

// httpPublisher sends requests on one keep-alive connection until stop.
func httpPublisher(ctx context.Context, c net.Conn, idx int, cfg *HTTPConfig, start, stop time.Time, rate float64,
	rtt *hdrhistogram.Histogram, accepted, failed *atomic.Int64) error {
	r := bufio.NewReaderSize(c, 16*1024)
	payload := make([]byte, cfg.Payload)
	binary.BigEndian.PutUint64(payload, uint64(idx))
	head := fmt.Sprintf("POST /publish/bench/http/%d?qos=%d HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n",
		idx, cfg.QoS, cfg.HTTPAddr, cfg.Payload)
	if cfg.Token != "" {
		head += "Authorization: Bearer " + cfg.Token + "\r\n"
	}
	head += "\r\n"
	req := append([]byte(head), payload...)
	body := req[len(head):]
	var seq int64
	for time.Now().Before(stop) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if rate > 0 {
			due := time.Duration(float64(seq) / rate * float64(time.Second))
			if wait := time.Until(start.Add(due)); wait > 0 {
				time.Sleep(wait)
				continue
			}
		}
		now := time.Now()
		binary.BigEndian.PutUint64(body[8:], uint64(seq))
		binary.BigEndian.PutUint64(body[16:], uint64(now.UnixNano()))
		_ = c.SetDeadline(now.Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			return err
		}
		status, err := readHTTPResponse(r)
		if err != nil {
			return err
		}
		_ = rtt.RecordValue(time.Since(now).Microseconds())
		if status == 202 {
			accepted.Add(1)
			seq++ // only accepted requests carry sequence numbers the subscriber must see
		} else {
			failed.Add(1)
		}
	}
	return nil
}

// readHTTPResponse reads one response with a Content-Length body and
// returns its status.
func readHTTPResponse(r *bufio.Reader) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	n := 0
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	_, err = io.CopyN(io.Discard, r, int64(n))
	return status, err
}

// RunHTTPRef serves what TinyMQ answers to POST /publish/{topic} (202 and
// the same JSON body) from a plain fasthttp.Server on addr until ctx ends:
// the reference for the HTTP door's CPU per request, measured from outside
// with the same client (tinymq-bench http --addr "" --broker-pid PID).
func RunHTTPRef(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := &fasthttp.Server{
		Name: "fasthttp",
		Handler: func(c *fasthttp.RequestCtx) {
			if !c.IsPost() || !bytes.HasPrefix(c.Path(), []byte("/publish/")) {
				c.Error(`{"error":"no such endpoint"}`, fasthttp.StatusNotFound)
				return
			}
			c.SetStatusCode(fasthttp.StatusAccepted)
			c.SetContentType("application/json")
			_, _ = c.WriteString(`{"status":"accepted","topic":"`)
			_, _ = c.Write(c.Path()[len("/publish/"):])
			_, _ = c.WriteString(`"}`)
		},
	}
	if ready != nil {
		ready(ln.Addr())
	}
	go func() {
		<-ctx.Done()
		_ = s.Shutdown()
	}()
	return s.Serve(ln)
}
