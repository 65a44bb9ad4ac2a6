package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tinymq/tinymq/codec"
)

// The broker as a child process (cmd/tinymq built into a temporary
// directory) with --fsync always, killed with SIGKILL at random moments
// and restarted on the same data directory. A QoS 1 publisher streams
// numbered messages (re-sending what was not acknowledged when the broker
// comes back); a persistent subscriber is online part of the time. Every
// message the publisher got a PUBACK for must reach the subscriber at
// least once, first arrivals in publishing order; a retained message set
// (and acknowledged) before each kill must be there after the last one.
// 3 kills by default; TINYMQ_CRASH_CYCLES=20 (make soak) for more.
func TestPersistCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and kills a broker binary")
	}
	cycles := 3
	if s := os.Getenv("TINYMQ_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("TINYMQ_CRASH_CYCLES=%q", s)
		}
		cycles = n
	}
	fsync := "always"
	if f := os.Getenv("TINYMQ_CRASH_FSYNC"); f != "" {
		fsync = f // to see what the other modes lose: interval or none
	}
	bin := brokerBinary(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("%d kills, --fsync %s, broker at %s, data in %s", cycles, fsync, addr, dir)

	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "--mqtt-addr", addr, "--http-addr=", "--sys-interval", "0",
			"--data-dir", dir, "--fsync", fsync, "--max-queued-messages", "100000", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("broker did not listen on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cmd := start()
	t.Cleanup(func() {
		if cmd != nil {
			_ = cmd.Process.Kill() // only the process this test started
			_ = cmd.Wait()
		}
	})

	var (
		mu       sync.Mutex
		acked    = map[int]bool{}
		received []int
	)
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	subStop := make(chan struct{})
	subDone := make(chan error, 1)

	// The subscriber's session exists before anything is published.
	if err := subscriberSetup(addr); err != nil {
		t.Fatal(err)
	}
	go func() { pubDone <- crashPublisher(addr, stop, func(n int) { mu.Lock(); acked[n] = true; mu.Unlock() }) }()
	seed := rnd.Int64() // rnd is the test goroutine's
	go func() {
		subDone <- crashSubscriber(addr, subStop, seed, func(n int) { mu.Lock(); received = append(received, n); mu.Unlock() })
	}()

	for i := range cycles {
		time.Sleep(time.Duration(300+rnd.IntN(1200)) * time.Millisecond) // a random moment
		if err := setRetained(addr, fmt.Sprintf("cret/%d", i), fmt.Sprint(i)); err != nil {
			t.Fatalf("cycle %d: retained: %v", i, err)
		}
		time.Sleep(time.Duration(rnd.IntN(200)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		mu.Lock()
		t.Logf("kill %d: %d acknowledged, %d received so far", i+1, len(acked), len(received))
		mu.Unlock()
		cmd = start()
	}
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	// The subscriber comes online for good once the publisher is done.
	close(subStop)
	if err := <-subDone; err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		err = drainSubscriber(addr, 500*time.Millisecond, func(n int) { mu.Lock(); received = append(received, n); mu.Unlock() })
		mu.Lock()
		missing := 0
		seen := make(map[int]bool, len(received))
		for _, n := range received {
			seen[n] = true
		}
		for n := range acked {
			if !seen[n] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered (last drain: %v)", missing, want, err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	seen := map[int]bool{}
	last, dups := -1, 0
	for _, n := range received {
		if seen[n] {
			dups++
			continue
		}
		seen[n] = true
		if n < last {
			t.Fatalf("message %d first arrived after %d: out of publishing order", n, last)
		}
		last = n
	}
	unacked := len(seen) - want
	t.Logf("%d kills: %d messages acknowledged, %d distinct delivered (%d published but never acknowledged, delivered anyway), %d duplicates",
		cycles, want, len(seen), unacked, dups)
	got, err := countRetained(addr, "cret/#", cycles)
	if err != nil || got != cycles {
		t.Fatalf("%d of %d retained messages after the kills (%v)", got, cycles, err)
	}
}

// freeAddr is a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// mini is a minimal MQTT 3.1.1 client for the crash test: no testing.T, so
// it can run on goroutines; every failure is an error.
type mini struct {
	c net.Conn
	r *bufio.Reader
}

func dialMini(addr, id string, clean bool) (*mini, bool, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, false, err
	}
	m := &mini{c: c, r: bufio.NewReader(c)}
	p := codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, ClientID: []byte(id), CleanStart: clean, KeepAlive: 30}
	if err := m.write(p.AppendTo(nil)); err != nil {
		c.Close()
		return nil, false, err
	}
	h, body, err := m.read(5 * time.Second)
	if err != nil || h.Type != codec.TypeConnack {
		c.Close()
		return nil, false, fmt.Errorf("CONNACK: %v %v", h.Type, err)
	}
	var ack codec.Connack
	if err := ack.Decode(codec.V311, h, body); err != nil || ack.ReturnCode != 0 {
		c.Close()
		return nil, false, fmt.Errorf("CONNACK %d: %v", ack.ReturnCode, err)
	}
	return m, ack.SessionPresent, nil
}

func (m *mini) write(b []byte) error {
	_ = m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := m.c.Write(b)
	return err
}

func (m *mini) read(d time.Duration) (codec.FixedHeader, []byte, error) {
	_ = m.c.SetReadDeadline(time.Now().Add(d))
	var hdr []byte
	var h codec.FixedHeader
	for {
		b, err := m.r.ReadByte()
		if err != nil {
			return h, nil, err
		}
		hdr = append(hdr, b)
		var n int
		if h, n, err = codec.ReadFrame(hdr, 0); err != nil {
			return h, nil, err
		}
		if n > 0 || h.HeaderLen > 0 {
			break
		}
	}
	body := make([]byte, h.Remaining)
	_, err := io.ReadFull(m.r, body)
	return h, body, err
}

// subscriberSetup creates the persistent session "csub" with its
// subscription and leaves it offline.
func subscriberSetup(addr string) error {
	m, _, err := dialMini(addr, "csub", false)
	if err != nil {
		return err
	}
	defer m.c.Close()
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("crash/#"), QoS: 1}}}
	if err := m.write(s.AppendTo(nil, codec.V311)); err != nil {
		return err
	}
	if h, _, err := m.read(5 * time.Second); err != nil || h.Type != codec.TypeSuback {
		return fmt.Errorf("SUBACK: %v %v", h.Type, err)
	}
	return m.write([]byte{0xe0, 0})
}

// crashPublisher publishes numbered QoS 1 messages on "crash/n", up to 8
// unacknowledged, about one a millisecond, until stop; when the broker
// goes away it reconnects and re-sends the unacknowledged ones in order.
// After stop it waits (reconnecting) until every message it sent is
// acknowledged.
func crashPublisher(addr string, stop <-chan struct{}, ack func(int)) error {
	const window = 8
	next := 0
	var pending []int // unacknowledged, in order
	stopping := false
	deadline := time.Time{}
	for {
		if stopping && len(pending) == 0 {
			return nil
		}
		if stopping && time.Now().After(deadline) {
			return fmt.Errorf("%d messages still unacknowledged 30 s after the end", len(pending))
		}
		m, _, err := dialMini(addr, "cpub", true)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			select {
			case <-stop:
				if !stopping {
					stopping, deadline = true, time.Now().Add(30*time.Second)
				}
			default:
			}
			continue
		}
		ids := map[uint16]int{}
		var id uint16
		send := func(n int) error {
			id++
			if id == 0 {
				id = 1
			}
			ids[id] = n
			p := codec.Publish{Topic: []byte("crash/n"), Payload: []byte(strconv.Itoa(n)), QoS: 1, PacketID: id}
			return m.write(p.AppendTo(nil, codec.V311))
		}
		var err2 error
		for _, n := range pending { // re-sent in order (new packet ids: clean session)
			if err2 = send(n); err2 != nil {
				break
			}
		}
		for err2 == nil {
			select {
			case <-stop:
				if !stopping {
					stopping, deadline = true, time.Now().Add(30*time.Second)
				}
			default:
			}
			if stopping && len(pending) == 0 {
				break
			}
			if !stopping && len(pending) < window {
				pending = append(pending, next)
				if err2 = send(next); err2 != nil {
					break
				}
				next++
			}
			wait := time.Millisecond
			if stopping || len(pending) >= window {
				wait = time.Second
			}
			h, body, err := m.read(wait)
			if err != nil {
				if isTimeout(err) {
					if stopping && time.Now().After(deadline) {
						err2 = err
					}
					continue
				}
				err2 = err
				break
			}
			if h.Type != codec.TypePuback {
				continue
			}
			var a codec.Ack
			if err := a.Decode(codec.V311, h, body); err != nil {
				return err
			}
			n, ok := ids[a.PacketID]
			if !ok {
				continue
			}
			delete(ids, a.PacketID)
			ack(n)
			for i, p := range pending {
				if p == n {
					pending = append(pending[:i], pending[i+1:]...)
					break
				}
			}
		}
		m.c.Close()
	}
}

// crashSubscriber is the persistent session "csub": online for a random
// while (acknowledging what it gets), offline for a random while, until
// stop. A broker that went away is reconnected to.
func crashSubscriber(addr string, stop <-chan struct{}, seed int64, got func(int)) error {
	rnd := rand.New(rand.NewPCG(uint64(seed), 2))
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		online := time.Duration(100+rnd.IntN(500)) * time.Millisecond
		if err := drainSubscriber(addr, online, got); err != nil && !isTimeout(err) {
			time.Sleep(20 * time.Millisecond) // the broker is restarting
			continue
		}
		time.Sleep(time.Duration(100+rnd.IntN(400)) * time.Millisecond) // offline
	}
}

// drainSubscriber connects "csub" for d, acknowledging every message, then
// disconnects.
func drainSubscriber(addr string, d time.Duration, got func(int)) error {
	m, present, err := dialMini(addr, "csub", false)
	if err != nil {
		return err
	}
	defer m.c.Close()
	if !present {
		return errors.New("csub: session present = 0")
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		h, body, err := m.read(time.Until(end))
		if err != nil {
			if isTimeout(err) {
				break
			}
			return err
		}
		if h.Type != codec.TypePublish {
			continue
		}
		var p codec.Publish
		if err := p.Decode(codec.V311, h, body); err != nil {
			return err
		}
		n, err := strconv.Atoi(string(p.Payload))
		if err != nil {
			return fmt.Errorf("payload %q", p.Payload)
		}
		got(n)
		if err := m.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID)); err != nil {
			return err
		}
	}
	return m.write([]byte{0xe0, 0})
}

// setRetained publishes a retained QoS 1 message and waits for its PUBACK.
func setRetained(addr, topicName, payload string) error {
	m, _, err := dialMini(addr, "cret", true)
	if err != nil {
		return err
	}
	defer m.c.Close()
	p := codec.Publish{Topic: []byte(topicName), Payload: []byte(payload), QoS: 1, Retain: true, PacketID: 1}
	if err := m.write(p.AppendTo(nil, codec.V311)); err != nil {
		return err
	}
	if h, _, err := m.read(5 * time.Second); err != nil || h.Type != codec.TypePuback {
		return fmt.Errorf("PUBACK: %v %v", h.Type, err)
	}
	return nil
}

// countRetained subscribes to filter and counts the retained messages
// that arrive (up to want, or 1 s of quiet).
func countRetained(addr, filter string, want int) (int, error) {
	m, _, err := dialMini(addr, "ccount", true)
	if err != nil {
		return 0, err
	}
	defer m.c.Close()
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: 0}}}
	if err := m.write(s.AppendTo(nil, codec.V311)); err != nil {
		return 0, err
	}
	n := 0
	for n < want {
		h, _, err := m.read(time.Second)
		if err != nil {
			if isTimeout(err) {
				return n, nil
			}
			return n, err
		}
		if h.Type == codec.TypePublish && h.Flags&1 != 0 {
			n++
		}
	}
	return n, nil
}

// A v5 will with a delay, pending when the broker is killed, is published
// after the restart once its delay is over (a clean shutdown publishes
// pending wills instead, as Mosquitto does: only a crash leaves one in
// the store).
func TestPersistDelayedWillCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and kills a broker binary")
	}
	bin := brokerBinary(t)
	dir := t.TempDir()
	addr, web := freeAddr(t), freeAddr(t)
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "--mqtt-addr", addr, "--http-addr", web, "--sys-interval", "0",
			"--data-dir", dir, "--fsync", "always", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the broker to listen", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return cmd
	}
	cmd := start()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // only the process this test started
		_ = cmd.Wait()
	})
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cp := &paho.Connect{ClientID: "w1", KeepAlive: 30, CleanStart: true,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: u32(300)},
		WillMessage:    &paho.WillMessage{Topic: "wills/w1", QoS: 1, Payload: []byte("bye")},
		WillProperties: &paho.WillProperties{WillDelayInterval: u32(5)}}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no DISCONNECT: the will is due in 5 s
	due := time.Now().Add(5 * time.Second)
	waitFor(t, 5*time.Second, "w1 offline", func() bool {
		resp, err := http.Get("http://" + web + "/api/v1/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Offline int `json:"sessions_offline"`
		}
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Offline == 1
	})
	// The will record is submitted by the same loop batch that took the
	// session offline and synced (--fsync always) a moment later.
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	cmd = start()
	sub := connectV5(t, addr, "wsub", nil)
	sub.sub("wills/#", 1, nil)
	m := sub.next(12 * time.Second)
	if string(m.Payload) != "bye" {
		t.Fatalf("will %q", m.Payload)
	}
	// Published at the restart would be about 4 s early.
	if early := time.Until(due); early > 500*time.Millisecond {
		t.Fatalf("will published %v before its delay ended", early)
	}
}
