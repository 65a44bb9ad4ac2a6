package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tinymq/tinymq/codec"
)

// FleetConfig is the ESP32 soak test: Devices simulated devices, each
// behaving as a client library does with its defaults (Profile; see
// docs/benchmarks.md). esp-mqtt: MQTT 3.1.1, keep-alive 120 s, clean
// session, unique client id, a retained last will "offline" (QoS 1) on
// devices/{id}/status, a retained "online" there after CONNACK, a
// subscription to devices/{id}/cmd, telemetry every Telemetry ± Jitter on
// devices/{id}/telemetry at QoS 0 or 1, QoS 1 re-sent with DUP after 1 s
// without PUBACK, and a fixed 10 s back-off before reconnecting.
// PubSubClient (Arduino): the same, but keep-alive 15 s, QoS 0 only (will
// and status included) and a 5 s back-off.
//
// A backend in the coordinating process stands for the service the fleet
// talks to: Consumers connections subscribed to devices/+/telemetry, and
// Commands QoS 1 commands a second to random devices. Storm drops a
// fraction of the fleet at StormAt at once (as a network outage would);
// those devices reconnect together after the back-off.
//
// Each device is one goroutine that blocks in Read with a deadline set to
// its next timed action (telemetry, ping, re-send), so there is no timer
// object per device and an idle device costs a parked goroutine (~8 KiB of
// stack) and a 1 KiB read buffer: about 15,000 devices per worker process
// stay well inside this machine's 20,000 open files.
type FleetConfig struct {
	Addr      string
	Devices   int
	PerWorker int
	Sources   int
	KeepAlive int           // seconds (esp-mqtt default 120)
	Telemetry time.Duration // period (default 10 s)
	Jitter    float64       // fraction of the period, ± (default 0.2)
	QoS       uint8         // telemetry QoS, 0 or 1
	Payload   int           // telemetry bytes (default 64)
	Backoff   time.Duration // reconnect back-off (esp-mqtt default 10 s)
	Ramp      int           // devices connected per second over the fleet (0: as fast as possible)
	Duration  time.Duration // whole run, ramp included
	Profile   string        // "esp-mqtt" (default) or "pubsubclient": the defaults above
	Consumers int           // backend connections on devices/+/telemetry (0: none)
	Commands  float64       // backend commands per second to random devices (0: none)
	Storm     float64       // fraction of the fleet dropped at once at StormAt (0: none)
	StormAt   time.Duration // when the storm hits (default: half of Duration)
	Token     string        // API key as the MQTT password, when the broker needs one
	BrokerPID int
	IDPrefix  string
	// Executable is the worker binary (default: this process's).
	Executable string
}

// FleetSample is one point of the run's time series.
type FleetSample struct {
	Seconds   float64 `json:"t"`
	Connected int64   `json:"connected"`
	BrokerRSS int64   `json:"broker_rss,omitempty"`
	BrokerCPU float64 `json:"broker_cpu_seconds,omitempty"`
}

// FleetCounters are the devices' totals.
type FleetCounters struct {
	Connected  int64 `json:"connected"` // now
	Connects   int64 `json:"connects"`  // successful CONNECTs, first ones and reconnects
	Failures   int64 `json:"connect_failures"`
	Drops      int64 `json:"connection_drops"` // established connections lost
	Reconnects int64 `json:"reconnects"`
	Telemetry  int64 `json:"telemetry_sent"`
	Pubacks    int64 `json:"pubacks"`
	Resends    int64 `json:"qos1_resends"`
	Commands   int64 `json:"commands_received"`
	Pings      int64 `json:"pings"`
	StormDrops int64 `json:"storm_drops"` // connections the storm cut
}

func (c *FleetCounters) add(o FleetCounters) {
	c.Connected += o.Connected
	c.Connects += o.Connects
	c.Failures += o.Failures
	c.Drops += o.Drops
	c.Reconnects += o.Reconnects
	c.Telemetry += o.Telemetry
	c.Pubacks += o.Pubacks
	c.Resends += o.Resends
	c.Commands += o.Commands
	c.Pings += o.Pings
	c.StormDrops += o.StormDrops
}

// FleetResult is the outcome of a fleet run.
type FleetResult struct {
	FleetCounters
	PeakConnected int64         `json:"peak_connected"`
	Workers       int           `json:"workers"`
	Seconds       float64       `json:"seconds"`
	BrokerRSSPeak int64         `json:"broker_rss_peak,omitempty"`
	BrokerCPU     float64       `json:"broker_cpu_seconds,omitempty"`
	Series        []FleetSample `json:"series"`
	FirstError    string        `json:"first_error,omitempty"`

	// Backend figures. Telemetry: deliveries to the consumers (each gets
	// every message); unique, duplicate and lost count on the first one
	// (lost = sent - unique: QoS 0 messages in flight when a connection
	// drops, or anything the broker dropped). Commands: sent by the
	// backend, acknowledged by the broker, received by devices (a command
	// to an offline device is not delivered: clean sessions).
	TelemetryDelivered  int64   `json:"telemetry_delivered"`
	TelemetryUnique     int64   `json:"telemetry_unique"`
	TelemetryDuplicates int64   `json:"telemetry_duplicates"`
	TelemetryLost       int64   `json:"telemetry_lost"`
	TelemetryPerS       float64 `json:"telemetry_delivered_per_s"`
	TelemetryP50us      float64 `json:"telemetry_latency_p50_us"`
	TelemetryP99us      float64 `json:"telemetry_latency_p99_us"`
	TelemetryMaxUs      float64 `json:"telemetry_latency_max_us"`
	CommandsSent        int64   `json:"commands_sent"`
	CommandsAcked       int64   `json:"commands_acked"`
	CommandsLost        int64   `json:"commands_lost"`
	CommandP50us        float64 `json:"command_latency_p50_us"`
	CommandP99us        float64 `json:"command_latency_p99_us"`
	CommandMaxUs        float64 `json:"command_latency_max_us"`
}

type fleetReport struct {
	FleetCounters
	Done bool   `json:"done"`
	Err  string `json:"err,omitempty"`
	// CmdLatency is the worker's command latency histogram (µs), sent
	// with the final report.
	CmdLatency *hdrhistogram.Snapshot `json:"cmd_latency,omitempty"`
}

// Normalize checks the configuration and fills in the profile's defaults.
func (c *FleetConfig) Normalize() error {
	if c.Devices <= 0 {
		return errors.New("fleet: need at least one device")
	}
	if c.QoS > 1 {
		return errors.New("fleet: telemetry QoS is 0 or 1")
	}
	switch c.Profile {
	case "", "esp-mqtt":
		c.Profile = "esp-mqtt"
		if c.KeepAlive <= 0 {
			c.KeepAlive = 120
		}
		if c.Backoff <= 0 {
			c.Backoff = 10 * time.Second
		}
	case "pubsubclient":
		if c.QoS > 0 {
			return errors.New("fleet: PubSubClient publishes at QoS 0 only")
		}
		if c.KeepAlive <= 0 {
			c.KeepAlive = 15
		}
		if c.Backoff <= 0 {
			c.Backoff = 5 * time.Second
		}
	default:
		return fmt.Errorf("fleet: unknown profile %q (esp-mqtt or pubsubclient)", c.Profile)
	}
	if c.Storm < 0 || c.Storm > 1 {
		return errors.New("fleet: storm is a fraction in [0, 1]")
	}
	if c.Commands < 0 || c.Consumers < 0 {
		return errors.New("fleet: negative commands or consumers")
	}
	if c.PerWorker <= 0 {
		c.PerWorker = 15000
	}
	if c.Sources <= 0 {
		c.Sources = 4
	}
	if c.Telemetry <= 0 {
		c.Telemetry = 10 * time.Second
	}
	if c.Jitter < 0 || c.Jitter >= 1 {
		return errors.New("fleet: jitter is a fraction in [0, 1)")
	}
	if c.Payload <= 0 {
		c.Payload = 64
	}
	c.Payload = max(c.Payload, 16) // sequence number and send time
	if c.Duration <= 0 {
		c.Duration = time.Minute
	}
	if c.StormAt <= 0 {
		c.StormAt = c.Duration / 2
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "esp32-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	return nil
}

// RunFleet runs the fleet: workers simulate the devices for cfg.Duration
// and stop by themselves; the coordinator samples the broker every second.
// progress, when not nil, gets the totals once a second.
func RunFleet(ctx context.Context, cfg FleetConfig, progress func(elapsed time.Duration, c FleetCounters)) (FleetResult, error) {
	var res FleetResult
	if err := cfg.Normalize(); err != nil {
		return res, err
	}
	exe := cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return res, err
		}
	}
	// Workers stop by themselves at Duration; the context bounds stragglers.
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+30*time.Second)
	defer cancel()
	nw := (cfg.Devices + cfg.PerWorker - 1) / cfg.PerWorker
	res.Workers = nw
	// Device i is the (i % PerWorker)-th of worker i / PerWorker.
	ids := func(i int) string {
		return workerPrefix(cfg.IDPrefix, i/cfg.PerWorker) + strconv.Itoa(i%cfg.PerWorker)
	}
	backend := newFleetBackend(&cfg, ids)
	defer backend.close()
	if err := backend.start(ctx); err != nil {
		return res, err
	}
	last := make([]fleetReport, nw)
	var mu sync.Mutex
	var wg sync.WaitGroup
	cmds := make([]*exec.Cmd, nw)
	for i := range nw {
		n := min(cfg.PerWorker, cfg.Devices-i*cfg.PerWorker)
		srcs := make([]string, cfg.Sources)
		for k := range srcs {
			srcs[k] = fmt.Sprintf("127.0.0.%d", 1+(i+k)%cfg.Sources)
		}
		ramp := 0.0
		if cfg.Ramp > 0 {
			ramp = float64(cfg.Ramp) * float64(n) / float64(cfg.Devices)
		}
		args := []string{"worker", "fleet", "--addr", cfg.Addr, "--devices", strconv.Itoa(n),
			"--src", strings.Join(srcs, ","), "--id-prefix", workerPrefix(cfg.IDPrefix, i),
			"--keepalive", strconv.Itoa(cfg.KeepAlive), "--telemetry", cfg.Telemetry.String(),
			"--jitter", strconv.FormatFloat(cfg.Jitter, 'f', -1, 64), "--qos", strconv.Itoa(int(cfg.QoS)),
			"--payload", strconv.Itoa(cfg.Payload), "--backoff", cfg.Backoff.String(),
			"--ramp", strconv.FormatFloat(ramp, 'f', -1, 64), "--duration", cfg.Duration.String(),
			"--profile", cfg.Profile, "--storm", strconv.FormatFloat(cfg.Storm, 'f', -1, 64), "--storm-at", cfg.StormAt.String()}
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stderr = os.Stderr
		if cfg.Token != "" {
			cmd.Env = append(os.Environ(), "TINYMQ_BENCH_TOKEN="+cfg.Token)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("cannot start worker: %w", err)
		}
		cmds[i] = cmd
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var r fleetReport
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					mu.Lock()
					last[i] = r
					mu.Unlock()
				}
			}
		}()
	}
	var cpu0 float64
	if cfg.BrokerPID > 0 {
		if st, err := ReadProc(cfg.BrokerPID); err == nil {
			cpu0 = st.CPUSeconds
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
	// Commands start once the ramp is over (1 s when there is none) and
	// stop shortly before the devices leave, so that every command is
	// addressed to a device that should be online.
	rampEnd := time.Second
	if cfg.Ramp > 0 {
		rampEnd = time.Duration(float64(cfg.Devices) / float64(cfg.Ramp) * float64(time.Second))
	}
	go backend.commands(ctx, start.Add(min(rampEnd, cfg.Duration/4)), start.Add(cfg.Duration-min(3*time.Second, cfg.Duration/4)))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sample := func() FleetCounters {
		var tot FleetCounters
		mu.Lock()
		for _, r := range last {
			tot.add(r.FleetCounters)
			if r.Err != "" && res.FirstError == "" {
				res.FirstError = r.Err
			}
		}
		mu.Unlock()
		s := FleetSample{Seconds: time.Since(start).Seconds(), Connected: tot.Connected}
		if cfg.BrokerPID > 0 {
			if st, err := ReadProc(cfg.BrokerPID); err == nil {
				s.BrokerRSS, s.BrokerCPU = st.RSSBytes, st.CPUSeconds-cpu0
				res.BrokerRSSPeak = max(res.BrokerRSSPeak, st.RSSBytes)
				res.BrokerCPU = s.BrokerCPU
			}
		}
		res.PeakConnected = max(res.PeakConnected, tot.Connected)
		res.Series = append(res.Series, s)
		if progress != nil {
			progress(time.Since(start), tot)
		}
		return tot
	}
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
			sample()
		}
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
	mu.Lock()
	var tot FleetCounters
	cmdHist := hdrhistogram.New(1, 60_000_000, 3)
	for _, r := range last {
		tot.add(r.FleetCounters)
		if r.CmdLatency != nil {
			cmdHist.Merge(hdrhistogram.Import(r.CmdLatency))
		}
	}
	mu.Unlock()
	res.FleetCounters = tot
	res.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil && res.FirstError == "" {
		res.FirstError = "fleet: workers did not finish in time"
	}
	res.fillBackend(backend, cmdHist)
	return res, nil
}

// fillBackend waits briefly for the last telemetry to reach the backend,
// then records its figures.
func (res *FleetResult) fillBackend(f *fleetBackend, cmdHist *hdrhistogram.Histogram) {
	if f.cfg.Consumers > 0 {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			f.mu.Lock()
			u := f.unique
			f.mu.Unlock()
			if u >= res.Telemetry {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	f.close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg.Consumers > 0 {
		res.TelemetryDelivered, res.TelemetryUnique, res.TelemetryDuplicates = f.received, f.unique, f.dups
		res.TelemetryLost = max(res.Telemetry-f.unique, 0)
		if res.Seconds > 0 {
			res.TelemetryPerS = float64(f.received) / res.Seconds
		}
		res.TelemetryP50us = float64(f.hist.ValueAtQuantile(50))
		res.TelemetryP99us = float64(f.hist.ValueAtQuantile(99))
		res.TelemetryMaxUs = float64(f.hist.Max())
	}
	res.CommandsSent, res.CommandsAcked = f.cmdSent.Load(), f.cmdAcked.Load()
	res.CommandsLost = max(res.CommandsSent-res.Commands, 0)
	res.CommandP50us = float64(cmdHist.ValueAtQuantile(50))
	res.CommandP99us = float64(cmdHist.ValueAtQuantile(99))
	res.CommandMaxUs = float64(cmdHist.Max())
	if e, ok := f.errs.Load().(string); ok && res.FirstError == "" {
		res.FirstError = e
	}
}

// fleetWorkerMain is "worker fleet ...".
func fleetWorkerMain(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("worker fleet", flag.ContinueOnError)
	var cfg FleetConfig
	src := fs.String("src", "127.0.0.1", "")
	fs.StringVar(&cfg.Addr, "addr", "", "")
	fs.IntVar(&cfg.Devices, "devices", 0, "")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", "esp32-", "")
	fs.IntVar(&cfg.KeepAlive, "keepalive", 120, "")
	fs.DurationVar(&cfg.Telemetry, "telemetry", 10*time.Second, "")
	fs.Float64Var(&cfg.Jitter, "jitter", 0.2, "")
	qos := fs.Int("qos", 0, "")
	fs.IntVar(&cfg.Payload, "payload", 64, "")
	fs.DurationVar(&cfg.Backoff, "backoff", 10*time.Second, "")
	ramp := fs.Float64("ramp", 0, "")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "")
	fs.StringVar(&cfg.Profile, "profile", "esp-mqtt", "")
	fs.Float64Var(&cfg.Storm, "storm", 0, "")
	fs.DurationVar(&cfg.StormAt, "storm-at", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	cfg.Token = os.Getenv("TINYMQ_BENCH_TOKEN")
	return FleetWorker(cfg, strings.Split(*src, ","), *ramp, out)
}

// fleetStats are a worker's live counters.
type fleetStats struct {
	connected, connects, failures, drops, reconnects atomic.Int64
	telemetry, pubacks, resends, commands, pings     atomic.Int64
	stormDrops                                       atomic.Int64
	firstErr                                         atomic.Value

	mu      sync.Mutex
	cmdHist *hdrhistogram.Histogram // command latency, µs
}

func (s *fleetStats) snapshot() FleetCounters {
	return FleetCounters{Connected: s.connected.Load(), Connects: s.connects.Load(), Failures: s.failures.Load(),
		Drops: s.drops.Load(), Reconnects: s.reconnects.Load(), Telemetry: s.telemetry.Load(),
		Pubacks: s.pubacks.Load(), Resends: s.resends.Load(), Commands: s.commands.Load(), Pings: s.pings.Load(),
		StormDrops: s.stormDrops.Load()}
}

// FleetWorker simulates cfg.Devices devices from the given source
// addresses until cfg.Duration has passed, reporting totals as JSON lines
// on out every second. ramp is this worker's connects per second (0: all
// at once).
func FleetWorker(cfg FleetConfig, sources []string, ramp float64, out io.Writer) error {
	if err := cfg.Normalize(); err != nil {
		return err
	}
	st := fleetStats{cmdHist: hdrhistogram.New(1, 60_000_000, 3)}
	enc := json.NewEncoder(out)
	start := time.Now()
	end := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Devices {
		d := &device{cfg: &cfg, st: &st, id: cfg.IDPrefix + strconv.Itoa(i), end: end, stormAt: stormTime(start, &cfg, i),
			dialer: net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(sources[i%len(sources)])}}}
		at := start
		if ramp > 0 {
			at = start.Add(time.Duration(float64(i) / ramp * float64(time.Second)))
		}
		wg.Add(1)
		go func() { defer wg.Done(); d.run(at) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			rep := fleetReport{FleetCounters: st.snapshot(), Done: true}
			st.mu.Lock()
			rep.CmdLatency = st.cmdHist.Export()
			st.mu.Unlock()
			if e, ok := st.firstErr.Load().(string); ok {
				rep.Err = e
			}
			return enc.Encode(rep)
		case <-t.C:
			_ = enc.Encode(fleetReport{FleetCounters: st.snapshot()})
		}
	}
}

// workerPrefix is the client-id prefix of worker w's devices; its device i
// is workerPrefix(prefix, w) + i (FleetWorker).
func workerPrefix(prefix string, w int) string { return prefix + "-" + strconv.Itoa(w) + "-" }

// stormTime is when device i's connection is cut (zero: never): the
// storm picks cfg.Storm of each worker's devices, spread over its index
// range.
func stormTime(start time.Time, cfg *FleetConfig, i int) time.Time {
	if cfg.Storm <= 0 {
		return time.Time{}
	}
	// Device i is picked when the integer part of i*Storm advances at i.
	if int(float64(i+1)*cfg.Storm) == int(float64(i)*cfg.Storm) {
		return time.Time{}
	}
	return start.Add(cfg.StormAt)
}

// errStorm ends a connection that the storm cuts.
var errStorm = errors.New("storm")

// device is one simulated ESP32. Its goroutine owns everything here.
type device struct {
	cfg     *FleetConfig
	st      *fleetStats
	id      string
	end     time.Time
	stormAt time.Time // zero once the storm has hit it, or when it never will
	dialer  net.Dialer
	rng     *rand.Rand

	c        net.Conn
	out      []byte
	in       []byte
	nextID   uint16
	inflight []pending // QoS 1 telemetry awaiting PUBACK, oldest first
	lastSend time.Time
	nextTele time.Time
	seq      uint64
}

type pending struct {
	id     uint16
	sentAt time.Time
	pkt    []byte
}

const qos1Resend = time.Second // esp-mqtt re-sends after this without PUBACK

func (d *device) fail(err error) {
	d.st.firstErr.CompareAndSwap(nil, d.id+": "+err.Error())
}

// run connects, lives and reconnects until end.
func (d *device) run(at time.Time) {
	d.rng = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(d.id))))
	time.Sleep(time.Until(at))
	first := true
	for time.Now().Before(d.end) {
		if !first {
			d.st.reconnects.Add(1)
		}
		first = false
		if err := d.connect(); err != nil {
			d.st.failures.Add(1)
			d.fail(err)
		} else {
			d.st.connects.Add(1)
			d.st.connected.Add(1)
			err := d.live()
			d.st.connected.Add(-1)
			if err == nil { // the run ended: leave cleanly
				d.c.Close()
				return
			}
			d.st.drops.Add(1)
			if errors.Is(err, errStorm) {
				d.st.stormDrops.Add(1)
			} else {
				d.fail(err)
			}
			d.c.Close()
		}
		wait := min(d.cfg.Backoff, time.Until(d.end))
		if wait <= 0 {
			return
		}
		time.Sleep(wait)
	}
}

func (d *device) topic(leaf string) []byte { return []byte("devices/" + d.id + "/" + leaf) }

// connect dials and completes CONNECT, the retained "online" and the
// command subscription.
func (d *device) connect() error {
	c, err := d.dialer.Dial("tcp", d.cfg.Addr)
	if err != nil {
		return err
	}
	d.c = c
	p := codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true,
		KeepAlive: uint16(d.cfg.KeepAlive), ClientID: []byte(d.id),
		WillFlag: true, WillTopic: d.topic("status"), WillPayload: []byte("offline"), WillQoS: d.statusQoS(), WillRetain: true}
	if d.cfg.Token != "" {
		p.UsernameFlag, p.Username, p.PasswordFlag, p.Password = true, []byte("esp32"), true, []byte(d.cfg.Token)
	}
	d.out = p.AppendTo(d.out[:0])
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(d.out); err != nil {
		c.Close()
		return err
	}
	if d.in == nil {
		d.in = make([]byte, 0, 1024)
	}
	d.in = d.in[:0]
	h, body, err := d.readPacket()
	if err != nil {
		c.Close()
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	if h.Type != codec.TypeConnack || len(body) < 2 || body[1] != 0 {
		c.Close()
		return fmt.Errorf("connection refused: %v % x", h.Type, body)
	}
	online := codec.Publish{Topic: d.topic("status"), Payload: []byte("online"), QoS: d.statusQoS(), Retain: true}
	d.inflight = d.inflight[:0]
	if online.QoS == 1 {
		online.PacketID = d.packetID()
		d.out = online.AppendTo(d.out[:0], codec.V311)
		d.inflight = append(d.inflight, pending{id: online.PacketID, sentAt: time.Now(), pkt: append([]byte(nil), d.out...)})
	} else {
		d.out = online.AppendTo(d.out[:0], codec.V311)
	}
	sub := codec.Subscribe{PacketID: d.packetID(), Subs: []codec.Subscription{{Filter: d.topic("cmd"), QoS: 1}}}
	d.out = sub.AppendTo(d.out, codec.V311)
	if _, err := c.Write(d.out); err != nil {
		c.Close()
		return err
	}
	now := time.Now()
	d.lastSend = now
	d.nextTele = now.Add(d.period())
	return nil
}

// statusQoS is the QoS of the will and the "online" status: PubSubClient
// publishes at QoS 0 only.
func (d *device) statusQoS() uint8 {
	if d.cfg.Profile == "pubsubclient" {
		return 0
	}
	return 1
}

func (d *device) packetID() uint16 {
	d.nextID++
	if d.nextID == 0 {
		d.nextID = 1
	}
	return d.nextID
}

// period is the telemetry interval with jitter.
func (d *device) period() time.Duration {
	j := (d.rng.Float64()*2 - 1) * d.cfg.Jitter
	return time.Duration(float64(d.cfg.Telemetry) * (1 + j))
}

// live runs the connected device until end (nil) or an error.
func (d *device) live() error {
	buf := make([]byte, 512)
	if err := d.handleInput(); err != nil { // what arrived with CONNACK
		return err
	}
	for {
		now := time.Now()
		if !now.Before(d.end) {
			// Leave cleanly: status offline (retained), then DISCONNECT.
			off := codec.Publish{Topic: d.topic("status"), Payload: []byte("offline"), Retain: true}
			d.out = off.AppendTo(d.out[:0], codec.V311)
			d.out = append(d.out, 0xe0, 0)
			_ = d.c.SetWriteDeadline(now.Add(5 * time.Second))
			_, _ = d.c.Write(d.out)
			return nil
		}
		d.out = d.out[:0]
		// Timed actions.
		for i := range d.inflight {
			f := &d.inflight[i]
			if now.Sub(f.sentAt) >= qos1Resend {
				f.pkt[0] |= 0x08 // DUP
				d.out = append(d.out, f.pkt...)
				f.sentAt = now
				d.st.resends.Add(1)
			}
		}
		if !now.Before(d.nextTele) {
			d.nextTele = d.nextTele.Add(d.period())
			if d.nextTele.Before(now) {
				d.nextTele = now.Add(d.period())
			}
			payload := make([]byte, d.cfg.Payload)
			binary.BigEndian.PutUint64(payload, d.seq)
			binary.BigEndian.PutUint64(payload[8:], uint64(now.UnixNano()))
			d.seq++
			p := codec.Publish{Topic: d.topic("telemetry"), Payload: payload, QoS: d.cfg.QoS}
			if p.QoS == 1 {
				p.PacketID = d.packetID()
				pkt := p.AppendTo(nil, codec.V311)
				d.inflight = append(d.inflight, pending{id: p.PacketID, sentAt: now, pkt: pkt})
				d.out = append(d.out, pkt...)
			} else {
				d.out = p.AppendTo(d.out, codec.V311)
			}
			d.st.telemetry.Add(1)
		}
		ka := time.Duration(d.cfg.KeepAlive) * time.Second
		if len(d.out) == 0 && now.Sub(d.lastSend) >= ka/2 {
			d.out = append(d.out, 0xc0, 0) // PINGREQ
			d.st.pings.Add(1)
		}
		if len(d.out) > 0 {
			_ = d.c.SetWriteDeadline(now.Add(10 * time.Second))
			if _, err := d.c.Write(d.out); err != nil {
				return err
			}
			d.lastSend = now
		}
		if !d.stormAt.IsZero() && !now.Before(d.stormAt) {
			// The network goes away: no DISCONNECT, the broker publishes
			// the will.
			d.stormAt = time.Time{}
			return errStorm
		}
		// Sleep in Read until the next timed action.
		wake := d.nextTele
		if !d.stormAt.IsZero() {
			wake = minTime(wake, d.stormAt)
		}
		if len(d.inflight) > 0 {
			wake = minTime(wake, d.inflight[0].sentAt.Add(qos1Resend))
		}
		wake = minTime(wake, d.lastSend.Add(ka/2))
		wake = minTime(wake, d.end)
		_ = d.c.SetReadDeadline(wake)
		n, err := d.c.Read(buf)
		if n > 0 {
			d.in = append(d.in, buf[:n]...)
			if err := d.handleInput(); err != nil {
				return err
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// handleInput consumes the complete packets in d.in.
func (d *device) handleInput() error {
	off := 0
	var acks []byte
	for {
		h, n, err := codec.ReadFrame(d.in[off:], 1<<20)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		body := d.in[off+h.HeaderLen : off+n]
		switch h.Type {
		case codec.TypePuback:
			if len(body) >= 2 {
				id := binary.BigEndian.Uint16(body)
				for i := range d.inflight {
					if d.inflight[i].id == id {
						d.inflight = append(d.inflight[:i], d.inflight[i+1:]...)
						d.st.pubacks.Add(1)
						break
					}
				}
			}
		case codec.TypePublish: // a command
			var p codec.Publish
			if p.Decode(codec.V311, h, body) == nil {
				d.st.commands.Add(1)
				if len(p.Payload) >= 16 {
					sent := int64(binary.BigEndian.Uint64(p.Payload[8:]))
					d.st.mu.Lock()
					_ = d.st.cmdHist.RecordValue(max((time.Now().UnixNano()-sent)/1000, 1))
					d.st.mu.Unlock()
				}
				if p.QoS == 1 {
					acks = codec.AppendAck(acks, codec.TypePuback, p.PacketID)
				} else if p.QoS == 2 {
					acks = codec.AppendAck(acks, codec.TypePubrec, p.PacketID)
				}
			}
		case codec.TypePubrel:
			if len(body) >= 2 {
				acks = codec.AppendAck(acks, codec.TypePubcomp, binary.BigEndian.Uint16(body))
			}
		}
		off += n
	}
	d.in = append(d.in[:0], d.in[off:]...)
	if len(acks) > 0 {
		_ = d.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := d.c.Write(acks)
		return err
	}
	return nil
}

// readPacket reads one whole packet during connect.
func (d *device) readPacket() (codec.FixedHeader, []byte, error) {
	buf := make([]byte, 256)
	for {
		h, n, err := codec.ReadFrame(d.in, 1<<20)
		if err != nil {
			return h, nil, err
		}
		if n > 0 {
			body := append([]byte(nil), d.in[h.HeaderLen:n]...)
			d.in = append(d.in[:0], d.in[n:]...)
			return h, body, nil
		}
		k, err := d.c.Read(buf)
		if err != nil {
			return h, nil, err
		}
		d.in = append(d.in, buf[:k]...)
	}
}
