package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// ConnConfig is the "conn" scenario: N idle MQTT connections.
type ConnConfig struct {
	Addr       string        // broker host:port
	Conns      int           // total connections
	PerWorker  int           // connections per worker process (≤ ~19,000 here)
	Sources    int           // source addresses 127.0.0.1 … 127.0.0.Sources
	KeepAlive  int           // seconds, sent in CONNECT (esp-mqtt default 120)
	Subscribe  bool          // one subscription per device: devices/{id}/cmd
	Dialers    int           // concurrent connects per worker
	Hold       time.Duration // how long to hold the connections once all are up
	Timeout    time.Duration // bound on the whole run
	BrokerPID  int           // when > 0, broker RSS and CPU are read from /proc
	IDPrefix   string
	Executable string     // worker binary (default: this process's)
	TLS        *TLSClient // when set, every connection completes a TLS handshake before CONNECT
	MetricsURL string     // TinyMQ's /metrics: when set, its Go heap is read before and after
	// MQTTVersion is the protocol of every CONNECT: "3.1.1" (default) or
	// "5" (no CONNECT properties: the idle cost of the protocol alone).
	MQTTVersion string
}

// ConnResult is the outcome of a conn run.
type ConnResult struct {
	Connected       int     `json:"connected"`
	Failed          int     `json:"failed"`
	ConnectSeconds  float64 `json:"connect_seconds"`
	ConnectsPerSec  float64 `json:"connects_per_sec"`
	Workers         int     `json:"workers"`
	Sources         int     `json:"sources"`
	BrokerRSSBefore int64   `json:"broker_rss_before,omitempty"`
	BrokerRSSAfter  int64   `json:"broker_rss_after,omitempty"`
	RSSPerConn      float64 `json:"broker_rss_per_conn,omitempty"`
	BrokerCPUPerK   float64 `json:"broker_cpu_ms_per_1k_connects,omitempty"`
	FirstError      string  `json:"first_error,omitempty"`

	// With TLS: handshakes completed (resumed ones among them) and their
	// rate over the connect phase, the mean client-side handshake time
	// (TCP connect to handshake done, queueing at the broker included),
	// and the broker's CPU time over the connect phase divided by the
	// handshakes.
	Handshakes        int     `json:"tls_handshakes,omitempty"`
	Resumed           int     `json:"tls_resumed,omitempty"`
	HandshakesPerSec  float64 `json:"tls_handshakes_per_sec,omitempty"`
	HandshakeMeanMs   float64 `json:"tls_handshake_mean_ms,omitempty"`
	BrokerCPUConnect  float64 `json:"broker_cpu_connect_seconds,omitempty"`
	CPUusPerHandshake float64 `json:"broker_cpu_us_per_handshake,omitempty"`

	// With MetricsURL: TinyMQ's Go heap objects (tinymq_go_heap_objects_bytes)
	// before the run and after the hold, and the growth per connection.
	HeapBefore  int64   `json:"broker_heap_before,omitempty"`
	HeapAfter   int64   `json:"broker_heap_after,omitempty"`
	HeapPerConn float64 `json:"broker_heap_per_conn,omitempty"`
}

// workerReport is one JSON line a worker prints.
type workerReport struct {
	Connected      int    `json:"connected"`
	Failed         int    `json:"failed"`
	Handshakes     int    `json:"handshakes,omitempty"`
	Resumed        int    `json:"resumed,omitempty"`
	HandshakeNanos int64  `json:"handshake_ns,omitempty"` // sum over the handshakes
	Done           bool   `json:"done"`
	Err            string `json:"err,omitempty"`
}

// RunConn runs the conn scenario: it starts workers, waits until every
// connection is up (or failed), samples the broker, holds, then stops the
// workers.
func RunConn(ctx context.Context, cfg ConnConfig, progress func(connected, failed int)) (ConnResult, error) {
	if cfg.PerWorker <= 0 {
		cfg.PerWorker = 15000
	}
	if cfg.Sources <= 0 {
		cfg.Sources = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "bench-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	v, err := ParseMQTTVersion(cfg.MQTTVersion)
	if err != nil {
		return ConnResult{}, err
	}
	exe := cfg.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return ConnResult{}, err
		}
	}
	var tlsArgs []string
	if cfg.TLS != nil {
		t := *cfg.TLS
		if _, err := t.Config(cfg.Addr); err != nil { // fail here, not in every worker
			return ConnResult{}, err
		}
		tlsArgs = t.workerArgs()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var res ConnResult
	var cpuBefore float64
	if cfg.BrokerPID > 0 {
		st, err := ReadProc(cfg.BrokerPID)
		if err != nil {
			return res, err
		}
		res.BrokerRSSBefore, cpuBefore = st.RSSBytes, st.CPUSeconds
	}
	if cfg.MetricsURL != "" {
		h, err := metricsGauge(ctx, cfg.MetricsURL, "tinymq_go_heap_objects_bytes")
		if err != nil {
			return res, err
		}
		res.HeapBefore = int64(h)
	}

	nw := (cfg.Conns + cfg.PerWorker - 1) / cfg.PerWorker
	res.Workers, res.Sources = nw, cfg.Sources
	type wstate struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		last  workerReport
	}
	workers := make([]*wstate, nw)
	reports := make(chan struct {
		i int
		r workerReport
	}, 64)
	start := time.Now()
	for i := 0; i < nw; i++ {
		n := min(cfg.PerWorker, cfg.Conns-i*cfg.PerWorker)
		srcs := make([]string, cfg.Sources)
		for k := range srcs {
			srcs[k] = fmt.Sprintf("127.0.0.%d", 1+(i+k)%cfg.Sources)
		}
		src := strings.Join(srcs, ",")
		args := []string{"worker", "conn", "--addr", cfg.Addr, "--conns", strconv.Itoa(n), "--src", src,
			"--keepalive", strconv.Itoa(cfg.KeepAlive), "--id-prefix", workerPrefix(cfg.IDPrefix, i),
			"--dialers", strconv.Itoa(max(cfg.Dialers, 1)), "--mqtt-version", VersionName(v)}
		if cfg.Subscribe {
			args = append(args, "--subscribe")
		}
		args = append(args, tlsArgs...)
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return res, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("cannot start worker: %w", err)
		}
		workers[i] = &wstate{cmd: cmd, stdin: stdin}
		go func(i int, r io.Reader) {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				var wr workerReport
				if json.Unmarshal(sc.Bytes(), &wr) == nil {
					reports <- struct {
						i int
						r workerReport
					}{i, wr}
				}
			}
		}(i, stdout)
	}
	stopAll := func() {
		for _, w := range workers {
			if w != nil {
				w.stdin.Close()
			}
		}
		for _, w := range workers {
			if w != nil {
				_ = w.cmd.Wait()
			}
		}
	}
	defer stopAll()

	done := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done < nw {
		select {
		case <-ctx.Done():
			return res, errors.New("conn: timed out before every connection was up")
		case rep := <-reports:
			w := workers[rep.i]
			if rep.r.Done && !w.last.Done {
				done++
			}
			if rep.r.Err != "" && res.FirstError == "" {
				res.FirstError = rep.r.Err
			}
			w.last = rep.r
		case <-tick.C:
		}
		c, f, h, r := 0, 0, 0, 0
		var hns int64
		for _, w := range workers {
			c += w.last.Connected
			f += w.last.Failed
			h += w.last.Handshakes
			r += w.last.Resumed
			hns += w.last.HandshakeNanos
		}
		res.Connected, res.Failed, res.Handshakes, res.Resumed = c, f, h, r
		if h > 0 {
			res.HandshakeMeanMs = float64(hns) / float64(h) / 1e6
		}
		if progress != nil {
			progress(c, f)
		}
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	if res.ConnectSeconds > 0 {
		res.ConnectsPerSec = float64(res.Connected) / res.ConnectSeconds
		res.HandshakesPerSec = float64(res.Handshakes) / res.ConnectSeconds
	}
	if cfg.BrokerPID > 0 {
		// The connect phase is over: its CPU is the handshakes' (and the CONNECTs').
		if st, err := ReadProc(cfg.BrokerPID); err == nil {
			res.BrokerCPUConnect = st.CPUSeconds - cpuBefore
			if res.Handshakes > 0 {
				res.CPUusPerHandshake = res.BrokerCPUConnect / float64(res.Handshakes) * 1e6
			}
		}
	}
	if cfg.BrokerPID > 0 {
		// Let the broker settle (its GC returns transient garbage) before sampling.
		hold := cfg.Hold
		if hold <= 0 {
			hold = 5 * time.Second
		}
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		st, err := ReadProc(cfg.BrokerPID)
		if err == nil {
			res.BrokerRSSAfter = st.RSSBytes
			if res.Connected > 0 {
				res.RSSPerConn = float64(res.BrokerRSSAfter-res.BrokerRSSBefore) / float64(res.Connected)
				res.BrokerCPUPerK = (st.CPUSeconds - cpuBefore) * 1000 / float64(res.Connected) * 1000
			}
		}
	} else if cfg.Hold > 0 {
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	if cfg.MetricsURL != "" {
		h, err := metricsGauge(ctx, cfg.MetricsURL, "tinymq_go_heap_objects_bytes")
		if err != nil {
			return res, err
		}
		res.HeapAfter = int64(h)
		if res.Connected > 0 {
			res.HeapPerConn = float64(res.HeapAfter-res.HeapBefore) / float64(res.Connected)
		}
	}
	return res, nil
}

// metricsGauge reads one unlabelled sample from a Prometheus text page.
func metricsGauge(ctx context.Context, url, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bench: metrics %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: metrics: %w", err)
	}
	return 0, fmt.Errorf("bench: metrics %s: no %s", url, name)
}

// WorkerMain runs a worker from its command line ("conn --addr ..."), as
// started by RunConn. The coordinator's binary must route its "worker"
// command here.
func WorkerMain(args []string, in io.Reader, out io.Writer) error {
	if len(args) > 0 && args[0] == "fleet" {
		return fleetWorkerMain(args[1:], out)
	}
	if len(args) == 0 || args[0] != "conn" {
		return fmt.Errorf("worker: unknown scenario %q", args)
	}
	fs := flag.NewFlagSet("worker conn", flag.ContinueOnError)
	addr := fs.String("addr", "", "")
	src := fs.String("src", "127.0.0.1", "")
	n := fs.Int("conns", 0, "")
	ka := fs.Int("keepalive", 120, "")
	dialers := fs.Int("dialers", 32, "")
	sub := fs.Bool("subscribe", false, "")
	prefix := fs.String("id-prefix", "w-", "")
	useTLS := fs.Bool("tls", false, "")
	var t TLSClient
	fs.StringVar(&t.Version, "tls-version", "1.3", "")
	fs.StringVar(&t.CAFile, "tls-ca", "", "")
	fs.StringVar(&t.CertFile, "tls-cert", "", "")
	fs.StringVar(&t.KeyFile, "tls-key", "", "")
	fs.StringVar(&t.Curve, "tls-curve", "x25519", "")
	fs.StringVar(&t.ServerName, "tls-server-name", "", "")
	fs.BoolVar(&t.Resume, "tls-resume", false, "")
	version := fs.String("mqtt-version", "3.1.1", "")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	v, err := ParseMQTTVersion(*version)
	if err != nil {
		return err
	}
	var tc *tls.Config
	if *useTLS {
		if tc, err = t.Config(*addr); err != nil {
			return err
		}
	}
	return ConnWorker(*addr, *src, *n, *ka, *dialers, *sub, *prefix, v, tc, in, out)
}

// ConnWorker is the worker side of the conn scenario: it opens n
// connections at protocol level v from the comma-separated source
// addresses src, in turn, over TLS when tc is not nil (one configuration,
// and so one session cache, for all), reports progress as JSON lines on
// out, and holds them until in is closed. A held connection costs its
// socket and, with TLS, its tls.Conn: no goroutine and no buffer of ours.
func ConnWorker(addr, src string, n, keepAlive, dialers int, subscribe bool, idPrefix string, v codec.Version, tc *tls.Config, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	var connected, failed, handshakes, resumed, handshakeNanos atomic.Int64
	report := func() workerReport {
		return workerReport{Connected: int(connected.Load()), Failed: int(failed.Load()),
			Handshakes: int(handshakes.Load()), Resumed: int(resumed.Load()), HandshakeNanos: handshakeNanos.Load()}
	}
	var firstErr atomic.Value
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var dialerList []net.Dialer
	for _, s := range strings.Split(src, ",") {
		dialerList = append(dialerList, net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}})
	}
	stopReports := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopReports:
				return
			case <-t.C:
				_ = enc.Encode(report())
			}
		}
	}()
	for w := 0; w < max(dialers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 256)
			rd := make([]byte, 256)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				var hs *handshakeStats
				if tc != nil {
					hs = &handshakeStats{&handshakes, &resumed, &handshakeNanos}
				}
				c, err := dialDevice(&dialerList[i%len(dialerList)], addr, tc, hs, idPrefix+strconv.Itoa(i), v, keepAlive, subscribe, buf, rd)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
				connected.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopReports)
	rep := report()
	rep.Done = true
	if e, ok := firstErr.Load().(string); ok {
		rep.Err = e
	}
	if err := enc.Encode(rep); err != nil {
		return err
	}
	// Hold until the coordinator closes stdin; ping when keep-alive asks.
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, in); close(stop) }()
	var ping <-chan time.Time
	if keepAlive > 0 {
		t := time.NewTicker(time.Duration(keepAlive) * time.Second / 2)
		defer t.Stop()
		ping = t.C
	}
	for {
		select {
		case <-stop:
			for _, c := range conns {
				if c != nil {
					_, _ = c.Write([]byte{0xe0, 0}) // DISCONNECT
					c.Close()
				}
			}
			return nil
		case <-ping:
			for _, c := range conns {
				if c != nil {
					_, _ = c.Write([]byte{0xc0, 0}) // PINGREQ; replies stay in the socket buffer
				}
			}
		}
	}
}

// handshakeStats are a worker's TLS counters.
type handshakeStats struct{ done, resumed, nanos *atomic.Int64 }

// dialDevice opens one connection, completes the TLS handshake when tc is
// not nil (counted in hs), then CONNECT (and SUBSCRIBE) at protocol level
// v. rd (at least 256 bytes) is scratch for the replies.
func dialDevice(d *net.Dialer, addr string, tc *tls.Config, hs *handshakeStats, id string, v codec.Version, keepAlive int, subscribe bool, buf, rd []byte) (net.Conn, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		t0 := time.Now()
		tl := tls.Client(c, tc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tl.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		hs.nanos.Add(int64(time.Since(t0)))
		hs.done.Add(1)
		if tl.ConnectionState().DidResume {
			hs.resumed.Add(1)
		}
		c = tl
	}
	p := codec.Connect{ProtocolName: []byte("MQTT"), Version: v, CleanStart: true,
		KeepAlive: uint16(keepAlive), ClientID: []byte(id)}
	buf = p.AppendTo(buf[:0])
	if subscribe {
		s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("devices/" + id + "/cmd"), QoS: 1}}}
		buf = s.AppendTo(buf, v)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(buf); err != nil {
		c.Close()
		return nil, err
	}
	if v == codec.V5 {
		if err := deviceAcksV5(c, subscribe, rd); err != nil {
			c.Close()
			return nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return c, nil
	}
	want := 4
	if subscribe {
		want += 5
	}
	if _, err := io.ReadFull(c, rd[:want]); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	if rd[0] != 0x20 || rd[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("connection refused: CONNACK % x", rd[:4])
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// deviceAcksV5 reads a 5.0 device's CONNACK (and SUBACK), whose
// properties make their size unknown in advance; a failure code, or a
// DISCONNECT instead, is an error that carries the code in hex.
func deviceAcksV5(c net.Conn, subscribe bool, rd []byte) error {
	h, body, err := readFrameConn(c, rd)
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	if h.Type != codec.TypeConnack {
		return fmt.Errorf("connect: %s", unexpected(codec.V5, h, body))
	}
	var ack codec.Connack
	if err := ack.Decode(codec.V5, h, body); err != nil {
		return fmt.Errorf("CONNACK: %w", err)
	}
	if ack.Reason != codec.Success {
		return fmt.Errorf("connection refused: CONNACK reason code %s", reasonHex(ack.Reason))
	}
	if !subscribe {
		return nil
	}
	if h, body, err = readFrameConn(c, rd); err != nil {
		return fmt.Errorf("reading SUBACK: %w", err)
	}
	if h.Type != codec.TypeSuback {
		return fmt.Errorf("subscribe: %s", unexpected(codec.V5, h, body))
	}
	var sa codec.Suback
	if err := sa.Decode(codec.V5, h, body); err != nil || len(sa.Reasons) != 1 {
		return fmt.Errorf("SUBACK % x: %v", body, err)
	}
	if sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("subscription refused: SUBACK reason %s", reasonHex(sa.Reasons[0]))
	}
	return nil
}

// readFrameConn reads one packet from c into rd: the fixed header a byte
// at a time past its first two, then the body. The body aliases rd; a
// packet larger than rd is an error.
func readFrameConn(c net.Conn, rd []byte) (codec.FixedHeader, []byte, error) {
	if _, err := io.ReadFull(c, rd[:2]); err != nil {
		return codec.FixedHeader{}, nil, err
	}
	n := 2
	for {
		h, _, err := codec.ReadFrame(rd[:n], 0)
		if err != nil {
			return h, nil, err
		}
		if h.HeaderLen > 0 {
			if h.HeaderLen+h.Remaining > len(rd) {
				return h, nil, fmt.Errorf("%s of %d bytes", h.Type, h.HeaderLen+h.Remaining)
			}
			if _, err := io.ReadFull(c, rd[n:h.HeaderLen+h.Remaining]); err != nil {
				return h, nil, err
			}
			return h, rd[h.HeaderLen : h.HeaderLen+h.Remaining], nil
		}
		if n == 5 {
			return h, nil, errors.New("bad fixed header")
		}
		if _, err := io.ReadFull(c, rd[n:n+1]); err != nil {
			return h, nil, err
		}
		n++
	}
}
