package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tinymq/tinymq/codec"
)

// fleetBackend is the service side of a fleet run, in the coordinating
// process: Consumers connections subscribed to devices/+/telemetry (as a
// backend ingesting telemetry would be), and a commander that sends QoS 1
// commands to devices/{id}/cmd of randomly chosen devices at a fixed rate.
//
// Telemetry payloads carry the device's sequence number and send time
// (bytes 0–8 and 8–16), commands their send time (bytes 8–16): the first
// consumer accounts per device for unique deliveries and duplicates, every
// consumer for latency; devices measure command latency themselves.
type fleetBackend struct {
	cfg  *FleetConfig
	ids  func(i int) string // the i-th device's client id
	errs atomic.Value       // first error (string)

	mu       sync.Mutex              // guards what follows
	conns    []net.Conn              // closed by close
	hist     *hdrhistogram.Histogram // telemetry latency, µs
	received int64                   // telemetry deliveries, all consumers
	unique   int64                   // first consumer: first deliveries of (device, seq)
	dups     int64                   // first consumer: seq already seen
	lastSeq  map[string]uint64       // first consumer: highest seq + 1 per device

	cmdSent, cmdAcked atomic.Int64
}

func newFleetBackend(cfg *FleetConfig, ids func(int) string) *fleetBackend {
	return &fleetBackend{cfg: cfg, ids: ids, hist: hdrhistogram.New(1, 60_000_000, 3), lastSeq: map[string]uint64{}}
}

func (f *fleetBackend) fail(err error) { f.errs.CompareAndSwap(nil, "backend: "+err.Error()) }

// start connects the consumers and subscribes them; it returns once they
// are subscribed, so that no telemetry is missed.
func (f *fleetBackend) start(ctx context.Context) error {
	for k := range f.cfg.Consumers {
		c, r, err := dialMQTTAuth(f.cfg.Addr, f.cfg.IDPrefix+"-backend-"+strconv.Itoa(k), f.cfg.Token)
		if err != nil {
			return fmt.Errorf("fleet backend: %w", err)
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		if err := subscribeOne(c, r, "devices/+/telemetry", f.cfg.QoS); err != nil {
			return fmt.Errorf("fleet backend: %w", err)
		}
		w := &lockedWriter{c: c}
		go f.consume(r, w, k == 0)
		go keepAlive(ctx, w, 30*time.Second)
	}
	return nil
}

// commands sends cfg.Commands commands a second to random devices from
// begin until stop.
func (f *fleetBackend) commands(ctx context.Context, begin, stop time.Time) {
	if f.cfg.Commands <= 0 || f.cfg.Devices == 0 {
		return
	}
	select {
	case <-time.After(time.Until(begin)):
	case <-ctx.Done():
		return
	}
	c, r, err := dialMQTTAuth(f.cfg.Addr, f.cfg.IDPrefix+"-backend-cmd", f.cfg.Token)
	if err != nil {
		f.fail(err)
		return
	}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	w := &lockedWriter{c: c}
	go keepAlive(ctx, w, 30*time.Second)
	go func() {
		for {
			h, _, err := readPacket(r)
			if err != nil {
				return
			}
			if h.Type == codec.TypePuback {
				f.cmdAcked.Add(1)
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	interval := time.Duration(float64(time.Second) / f.cfg.Commands)
	next := time.Now()
	var id uint16
	payload := make([]byte, 16)
	var out []byte
	for {
		now := time.Now()
		if !now.Before(stop) || ctx.Err() != nil {
			return
		}
		out = out[:0]
		for ; !next.After(now); next = next.Add(interval) {
			id++
			if id == 0 {
				id = 1
			}
			binary.BigEndian.PutUint64(payload, uint64(f.cmdSent.Load()))
			binary.BigEndian.PutUint64(payload[8:], uint64(time.Now().UnixNano()))
			p := codec.Publish{Topic: []byte("devices/" + f.ids(rng.IntN(f.cfg.Devices)) + "/cmd"), Payload: payload, QoS: 1, PacketID: id}
			out = p.AppendTo(out, codec.V311)
			f.cmdSent.Add(1)
		}
		if len(out) > 0 {
			if err := w.write(out); err != nil {
				f.fail(err)
				return
			}
		}
		time.Sleep(min(time.Until(next), time.Until(stop)))
	}
}

// consume reads telemetry deliveries on one consumer connection.
func (f *fleetBackend) consume(r *bufio.Reader, w *lockedWriter, account bool) {
	for {
		h, body, err := readPacket(r)
		if err != nil {
			return // closed at the end of the run
		}
		if h.Type != codec.TypePublish {
			continue
		}
		var p codec.Publish
		if err := p.Decode(codec.V311, h, body); err != nil {
			f.fail(err)
			return
		}
		now := time.Now().UnixNano()
		if p.QoS == 1 {
			if err := w.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID)); err != nil {
				return
			}
		}
		if len(p.Payload) < 16 {
			continue
		}
		seq := binary.BigEndian.Uint64(p.Payload)
		sent := int64(binary.BigEndian.Uint64(p.Payload[8:]))
		dev := deviceOf(p.Topic)
		f.mu.Lock()
		f.received++
		_ = f.hist.RecordValue(max((now-sent)/1000, 1))
		if account {
			if next := f.lastSeq[dev]; seq >= next {
				f.unique++
				f.lastSeq[dev] = seq + 1
			} else {
				f.dups++ // a QoS 1 re-send the broker had delivered already
			}
		}
		f.mu.Unlock()
	}
}

// deviceOf is the {id} of devices/{id}/telemetry.
func deviceOf(topic []byte) string {
	s := strings.TrimPrefix(string(topic), "devices/")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (f *fleetBackend) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// lockedWriter serializes writes to a connection shared by a reader (its
// acks) and a keep-alive goroutine.
type lockedWriter struct {
	mu sync.Mutex
	c  net.Conn
}

func (w *lockedWriter) write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := w.c.Write(b)
	return err
}

// keepAlive sends PINGREQ every period until ctx ends or a write fails.
func keepAlive(ctx context.Context, w *lockedWriter, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if w.write([]byte{0xc0, 0}) != nil {
				return
			}
		}
	}
}
