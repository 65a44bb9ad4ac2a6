package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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
	runCrash(t, crashFlow{qos: 1, pub: "cpub", sub: "csub", topic: "crash/n"})
}

// The same kills under QoS 2 end to end: the publisher keeps its session
// (clean session 0) and, after each reconnect, re-sends what got no
// PUBREC (DUP, same packet id) and PUBREL for what got PUBREC but no
// PUBCOMP [MQTT-4.4.0-1]; it reuses the lowest free packet id, as small
// clients do. The subscriber's session is persistent too and keeps its
// own state across connections: the packet ids it sent PUBREC for and got
// no PUBREL yet (a PUBLISH with such an id is a re-send, not a new
// message: 4.3.3 method B). Every message the publisher got PUBREC for
// must be delivered exactly once (a message number arriving twice is a
// duplicate), in publishing order, and no PUBREL may be owed at the end.
// What the broker holds for it: docs/durability.md "QoS 2 across a
// crash".
func TestPersistCrashSIGKILLQoS2(t *testing.T) {
	runCrash(t, crashFlow{qos: 2, pub: "cpub2", sub: "csub2", topic: "crash2/n"})
}

// The same kills with the default --fsync interval, which acknowledges
// before the records are on disk: a crash may lose what was acknowledged
// in the store's commit window just before it (docs/durability.md), and
// nothing else. Every acknowledged message not delivered must have been
// acknowledged at most crashLoss before a kill. The offline queue's bound
// is far above what the test publishes (the publisher is not slowed by
// syncs here): a message dropped at a full queue would count as lost.
func TestPersistCrashSIGKILLInterval(t *testing.T) {
	runCrash(t, crashFlow{qos: 1, pub: "ipub", sub: "isub", topic: "crashi/n", fsync: "interval"})
}

// crashLoss bounds how long before a kill an acknowledged message may have
// been lost with --fsync interval or none: the store's commit window (100
// ms) and the writer's backlog on a loaded machine.
const crashLoss = 300 * time.Millisecond

// inCrashWindow reports whether a message acknowledged at ackAt was
// acknowledged at most crashLoss before one of the kills.
func inCrashWindow(ackAt time.Duration, kills []time.Duration) bool {
	for _, k := range kills {
		if k >= ackAt && k-ackAt <= crashLoss {
			return true
		}
	}
	return false
}

// crashFlow is one publisher and one persistent subscriber of a crash
// test: client ids, topic, and the QoS of both the PUBLISH and the
// subscription.
type crashFlow struct {
	qos      byte
	pub, sub string
	topic    string
	fsync    string // --fsync; "" is always (TINYMQ_CRASH_FSYNC overrides it)
}

// crashRecv is one message the subscriber took as new: its number, and
// how it came (for the report of a duplicate).
type crashRecv struct {
	n    int
	id   uint16
	dup  bool // the DUP flag
	conn int  // the subscriber's connection count when it came
	at   time.Duration
}

// runCrash runs the kill cycles of TestPersistCrashSIGKILL* for f.
func runCrash(t *testing.T, f crashFlow) {
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
	fsync := f.fsync
	if fsync == "" {
		fsync = "always"
	}
	if e := os.Getenv("TINYMQ_CRASH_FSYNC"); e != "" {
		fsync = e // to see what the other modes lose: interval or none
	}
	lossy := fsync != "always"
	bin := brokerBinary(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("QoS %d, %d kills, --fsync %s, broker at %s, data in %s", f.qos, cycles, fsync, addr, dir)
	t0 := time.Now()

	start := func() *exec.Cmd {
		return runBroker(t, bin, addr, "--http-addr=", "--data-dir", dir, "--fsync", fsync, "--max-queued-messages", "5000000")
	}
	cmd := start()

	var (
		mu       sync.Mutex
		acked    = map[int]time.Duration{} // message number -> when its PUBACK came
		received []crashRecv
		kills    []time.Duration
	)
	got := func(r crashRecv) {
		r.at = time.Since(t0)
		mu.Lock()
		received = append(received, r)
		mu.Unlock()
	}
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	subStop := make(chan struct{})
	subDone := make(chan error, 1)

	// The subscriber's session exists before anything is published.
	sub := &crashSub{flow: f, awaitingRel: map[uint16]bool{}}
	if err := sub.setup(addr); err != nil {
		t.Fatal(err)
	}
	go func() {
		pubDone <- crashPublisher(addr, f, stop, func(n int) { mu.Lock(); acked[n] = time.Since(t0); mu.Unlock() })
	}()
	seed := rnd.Int64() // rnd is the test goroutine's
	go func() { subDone <- sub.run(addr, subStop, seed, got) }()

	for i := range cycles {
		time.Sleep(time.Duration(300+rnd.IntN(1200)) * time.Millisecond) // a random moment
		if err := setRetained(addr, fmt.Sprintf("cret/%d", i), fmt.Sprint(i)); err != nil {
			t.Fatalf("cycle %d: retained: %v", i, err)
		}
		pause := time.Duration(rnd.IntN(200)) * time.Millisecond
		if lossy {
			pause += crashLoss // a retained message the kill may lose is not checked
		}
		time.Sleep(pause)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		mu.Lock()
		kills = append(kills, time.Since(t0))
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
	lost := 0 // lossy modes: acknowledged just before a kill, never delivered
	for {
		err = sub.drain(addr, 500*time.Millisecond, got)
		mu.Lock()
		var missing []int
		seen := make(map[int]bool, len(received))
		for _, r := range received {
			seen[r.n] = true
		}
		lost = 0
		for n, at := range acked {
			if seen[n] {
				continue
			}
			if lossy && inCrashWindow(at, kills) {
				lost++
				continue
			}
			missing = append(missing, n)
		}
		mu.Unlock()
		if len(missing) == 0 && (f.qos < 2 || len(sub.awaitingRel) == 0) {
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			if len(missing) > 0 {
				mu.Lock()
				t.Logf("around the first missing one (%d): %+v", missing[0], around(received, missing[0]))
				for _, line := range missingRanges(missing, acked, kills) {
					t.Log(line)
				}
				mu.Unlock()
			}
			owed := slices.Sorted(maps.Keys(sub.awaitingRel))
			t.Fatalf("%d of %d acknowledged messages never delivered (%v; --fsync %s), PUBREL owed for %d ids (%v), kills at %v (last drain: %v)",
				len(missing), want, missing[:min(len(missing), 20)], fsync, len(owed), owed[:min(len(owed), 20)], kills, err)
		}
	}
	if lossy {
		t.Logf("--fsync %s: %d acknowledged messages lost, each acknowledged within %v before a kill (the commit window; none lost earlier)",
			fsync, lost, crashLoss)
	}

	mu.Lock()
	defer mu.Unlock()
	first := map[int]int{} // message number -> index in received
	last, dups := -1, 0
	for i, r := range received {
		if j, ok := first[r.n]; ok {
			dups++
			if f.qos == 2 {
				t.Errorf("message %d delivered twice: first %+v, again %+v (kills at %v)", r.n, received[j], r, kills)
			}
			continue
		}
		first[r.n] = i
		if r.n < last {
			t.Fatalf("message %d first arrived after %d: out of publishing order", r.n, last)
		}
		last = r.n
	}
	unacked := len(first) - (want - lost)
	t.Logf("QoS %d, %d kills: %d messages acknowledged, %d distinct delivered (%d published but never acknowledged, delivered anyway), %d duplicates, %d re-sent PUBLISH the subscriber recognised",
		f.qos, cycles, want, len(first), unacked, dups, sub.resent)
	got2, err := countRetained(addr, "cret/#", cycles)
	if err != nil || got2 != cycles {
		t.Fatalf("%d of %d retained messages after the kills (%v)", got2, cycles, err)
	}
}

// missingRanges describes the runs of consecutive missing message numbers:
// when their PUBACKs came, and how long before the next kill (a loss far
// from any kill is not the crash window). At most 40 lines.
func missingRanges(missing []int, acked map[int]time.Duration, kills []time.Duration) []string {
	var out []string
	for i := 0; i < len(missing) && len(out) < 40; {
		j := i
		for j+1 < len(missing) && missing[j+1] == missing[j]+1 {
			j++
		}
		a0, a1 := acked[missing[i]], acked[missing[j]]
		next := "after the last kill"
		for k, at := range kills {
			if at >= a1 {
				next = fmt.Sprintf("%v before kill %d", (at - a1).Round(time.Millisecond), k+1)
				break
			}
		}
		out = append(out, fmt.Sprintf("missing %d-%d (%d), acknowledged at %v-%v, %s",
			missing[i], missing[j], j-i+1, a0.Round(time.Millisecond), a1.Round(time.Millisecond), next))
		i = j + 1
	}
	return out
}

// around is what received holds just before and after message n would
// have come.
func around(received []crashRecv, n int) []crashRecv {
	i := slices.IndexFunc(received, func(r crashRecv) bool { return r.n > n })
	if i < 0 {
		i = len(received)
	}
	return received[max(0, i-3):min(len(received), i+3)]
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

// crashSub is the subscriber of a crashFlow: a persistent session, and
// the client's own part of it, kept across connections and broker
// restarts (QoS 2: the packet ids it sent PUBREC for, awaiting PUBREL).
// Used by one goroutine at a time.
type crashSub struct {
	flow        crashFlow
	awaitingRel map[uint16]bool
	conns       int // connections made
	resent      int // QoS 2: PUBLISH with an id awaiting PUBREL (not delivered again)
}

// setup creates the persistent session with its subscription and leaves
// it offline.
func (s *crashSub) setup(addr string) error {
	m, _, err := dialMini(addr, s.flow.sub, false)
	if err != nil {
		return err
	}
	defer m.c.Close()
	filter := s.flow.topic[:strings.IndexByte(s.flow.topic, '/')] + "/#"
	sb := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: s.flow.qos}}}
	if err := m.write(sb.AppendTo(nil, codec.V311)); err != nil {
		return err
	}
	if h, _, err := m.read(5 * time.Second); err != nil || h.Type != codec.TypeSuback {
		return fmt.Errorf("SUBACK: %v %v", h.Type, err)
	}
	return m.write([]byte{0xe0, 0})
}

// crashPublisher publishes numbered messages at f.qos on f.topic, up to 8
// unacknowledged, about one a millisecond, until stop; when the broker
// goes away it reconnects and re-sends, in order, what was not
// acknowledged. QoS 1: a clean session, so the re-sends are new PUBLISH
// packets with new packet ids; ack(n) at PUBACK. QoS 2: a persistent
// session, so it re-sends PUBLISH with DUP and the same packet id for what
// got no PUBREC, and PUBREL for what got PUBREC and no PUBCOMP; ack(n) at
// PUBREC. Packet ids: the lowest free. After stop it waits (reconnecting)
// until every exchange it started is complete.
func crashPublisher(addr string, f crashFlow, stop <-chan struct{}, ack func(int)) error {
	const window = 8
	type out struct {
		n   int
		id  uint16
		rel bool // PUBREC received, PUBREL sent
	}
	next := 0
	var pending []out // not complete, in publishing order
	stopping := false
	deadline := time.Time{}
	checkStop := func() {
		select {
		case <-stop:
			if !stopping {
				stopping, deadline = true, time.Now().Add(30*time.Second)
			}
		default:
		}
	}
	freeID := func() uint16 {
		for id := uint16(1); ; id++ {
			used := false
			for _, o := range pending {
				if o.id == id {
					used = true
					break
				}
			}
			if !used {
				return id
			}
		}
	}
	for conns := 0; ; conns++ {
		if stopping && len(pending) == 0 {
			return nil
		}
		if stopping && time.Now().After(deadline) {
			return fmt.Errorf("%d messages still unacknowledged 30 s after the end", len(pending))
		}
		m, present, err := dialMini(addr, f.pub, f.qos < 2)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			checkStop()
			continue
		}
		if f.qos == 2 && conns > 0 && !present {
			m.c.Close()
			return fmt.Errorf("%s: session present = 0 after a restart", f.pub)
		}
		publish := func(o *out, dup bool) error {
			p := codec.Publish{Topic: []byte(f.topic), Payload: []byte(strconv.Itoa(o.n)), QoS: f.qos, PacketID: o.id, Dup: dup}
			return m.write(p.AppendTo(nil, codec.V311))
		}
		var err2 error
		if f.qos < 2 { // a clean session: the old packet ids mean nothing now
			for i := range pending {
				pending[i].id = 0
			}
		}
		for i := range pending { // re-sent in order
			o := &pending[i]
			switch {
			case o.id == 0:
				o.id = freeID()
				err2 = publish(o, false)
			case o.rel:
				err2 = m.write(codec.AppendAck(nil, codec.TypePubrel, o.id))
			default:
				err2 = publish(o, true)
			}
			if err2 != nil {
				break
			}
		}
		for err2 == nil {
			checkStop()
			if stopping && len(pending) == 0 {
				break
			}
			if !stopping && len(pending) < window {
				pending = append(pending, out{n: next, id: freeID()})
				if err2 = publish(&pending[len(pending)-1], false); err2 != nil {
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
			var a codec.Ack
			switch h.Type {
			case codec.TypePuback, codec.TypePubrec, codec.TypePubcomp:
				if err := a.Decode(codec.V311, h, body); err != nil {
					return err
				}
			default:
				continue
			}
			i := slices.IndexFunc(pending, func(o out) bool { return o.id == a.PacketID })
			if i < 0 {
				continue // PUBREC re-sent for an exchange already past it, or a stray id
			}
			o := &pending[i]
			n := o.n
			switch {
			case f.qos == 1 && h.Type == codec.TypePuback, f.qos == 2 && h.Type == codec.TypePubcomp && o.rel:
				pending = slices.Delete(pending, i, i+1)
			case f.qos == 2 && h.Type == codec.TypePubrec:
				if !o.rel {
					o.rel = true
					ack(o.n)
				}
				err2 = m.write(codec.AppendAck(nil, codec.TypePubrel, o.id))
				continue
			default:
				return fmt.Errorf("%v for packet id %d (QoS %d, PUBREL sent %v)", h.Type, a.PacketID, f.qos, o.rel)
			}
			if f.qos == 1 {
				ack(n)
			}
		}
		m.c.Close()
	}
}

// run is the subscriber online for a random while (acknowledging what it
// gets), offline for a random while, until stop. A broker that went away
// is reconnected to.
func (s *crashSub) run(addr string, stop <-chan struct{}, seed int64, got func(crashRecv)) error {
	rnd := rand.New(rand.NewPCG(uint64(seed), 2))
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		online := time.Duration(100+rnd.IntN(500)) * time.Millisecond
		if err := s.drain(addr, online, got); err != nil && !isTimeout(err) {
			if errors.Is(err, errCrashSession) {
				return err
			}
			time.Sleep(20 * time.Millisecond) // the broker is restarting
			continue
		}
		time.Sleep(time.Duration(100+rnd.IntN(400)) * time.Millisecond) // offline
	}
}

var errCrashSession = errors.New("session present = 0")

// drain connects the subscriber for d, acknowledging every message (QoS
// 2: PUBREC, then PUBCOMP for PUBREL), then disconnects. got gets each
// message taken as new.
func (s *crashSub) drain(addr string, d time.Duration, got func(crashRecv)) error {
	m, present, err := dialMini(addr, s.flow.sub, false)
	if err != nil {
		return err
	}
	defer m.c.Close()
	s.conns++
	if !present {
		return fmt.Errorf("%s: %w", s.flow.sub, errCrashSession)
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
		if h.Type == codec.TypePubrel {
			var a codec.Ack
			if err := a.Decode(codec.V311, h, body); err != nil {
				return err
			}
			delete(s.awaitingRel, a.PacketID)
			if err := m.write(codec.AppendAck(nil, codec.TypePubcomp, a.PacketID)); err != nil {
				return err
			}
			continue
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
		if p.QoS != s.flow.qos {
			return fmt.Errorf("message %d at QoS %d, want %d", n, p.QoS, s.flow.qos)
		}
		t := codec.TypePuback
		if p.QoS == 2 {
			t = codec.TypePubrec
		}
		if p.QoS == 2 && s.awaitingRel[p.PacketID] {
			s.resent++ // a re-send of what this client has: acknowledged again, not delivered
		} else {
			if p.QoS == 2 {
				s.awaitingRel[p.PacketID] = true
			}
			got(crashRecv{n: n, id: p.PacketID, dup: p.Dup, conn: s.conns})
		}
		if err := m.write(codec.AppendAck(nil, t, p.PacketID)); err != nil {
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
		return runBroker(t, bin, addr, "--http-addr", web, "--data-dir", dir, "--fsync", "always")
	}
	cmd := start()
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

// Under a light load, what the commit window wrote to the store reaches
// the OS at once with --fsync none and interval, so a process crash
// (SIGKILL) loses at most the window, not everything since pebble's log
// last filled a 32 KB block or was synced: a retained message set, with
// its window written (tinymq_store_window_written_total), survives a kill
// with none, and with interval when the interval (an hour here) has not
// come yet.
func TestPersistCrashLightLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and kills a broker binary")
	}
	bin := brokerBinary(t)
	for _, mode := range []string{"none", "interval"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			addr, httpAddr := freeAddr(t), freeAddr(t)
			start := func() *exec.Cmd {
				return runBroker(t, bin, addr, "--http-addr", httpAddr, "--data-dir", dir, "--fsync", mode, "--fsync-interval", "1h")
			}
			cmd := start()
			if err := setRetained(addr, "light/"+mode, "kept"); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for metricValue(t, httpAddr, "tinymq_store_window_written_total") < 1 {
				if time.Now().After(deadline) {
					t.Fatal("the commit window was not written within 10 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			start()
			if n, err := countRetained(addr, "light/#", 1); err != nil || n != 1 {
				t.Fatalf("--fsync %s: %d retained messages after a kill that came after their window was written (%v); want 1", mode, n, err)
			}
		})
	}
}

// runBroker starts the broker binary bin with MQTT on addr (fixed, so a
// restart keeps it), no $SYS and args, kills it when the test ends (only
// the process this test started) and waits until addr takes connections.
func runBroker(t *testing.T, bin, addr string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--mqtt-addr", addr, "--sys-interval", "0", "--log-level", "warn"}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 20*time.Second, "the broker listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cmd
}

// metricValue is the value of an unlabelled sample in the broker's
// /metrics (0 when absent or the broker does not answer).
func metricValue(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	v, _, _ := scrapeMetric(httpAddr, name)
	return v
}

// scrapeMetric reads the unlabelled sample name of the /metrics served at
// httpAddr, and whether it is there.
func scrapeMetric(httpAddr, name string) (float64, bool, error) {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil, err
		}
	}
	return 0, false, nil
}
