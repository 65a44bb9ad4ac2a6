package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// Local is what a bridge needs from the broker it runs in (an
// *engine.Broker): where its MQTT listener is, credentials its local
// connection may use, and a way to publish under $SYS/.
type Local interface {
	MQTTAddr() string
	BridgeCredentials() (username string, password []byte)
	PublishSys(topic string, payload []byte, retain bool) error
}

// Status is one bridge's state and counters (see engine.BridgeInfo).
type Status struct {
	Name, State, Remote, RemoteClientID, LocalClientID string
	Connects, MsgsOut, MsgsIn, BytesOut, BytesIn       uint64
	Dropped                                            uint64
	LastError                                          string
}

// Bridge states.
const (
	stateConnecting int32 = iota
	stateConnected
	stateBackoff
	stateStopped
)

var stateNames = [...]string{"connecting", "connected", "backoff", "stopped"}

// Manager runs the configured bridges. Each bridge has three goroutines:
// its supervisor (connect, keep-alive pings, back-off) and one reader per
// connection while connected. Writes go straight to the sockets, under a
// per-connection mutex, from the goroutine that forwards or acknowledges.
type Manager struct {
	local   Local
	log     *slog.Logger
	bridges []*Bridge
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewManager builds the bridges; Start runs them.
func NewManager(cfgs []Config, local Local, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{local: local, log: log}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for i := range cfgs {
		tc, err := tlsConfig(&cfgs[i])
		if err != nil {
			return nil, fmt.Errorf("%s: connection %s: TLS: %w", cfgs[i].Where, cfgs[i].Name, err)
		}
		b := &Bridge{cfg: cfgs[i], tls: tc, m: m, log: log.With("bridge", cfgs[i].Name)}
		for k := range b.cfg.Topics {
			t := &b.cfg.Topics[k]
			b.filters = append(b.filters, [2][]byte{[]byte(t.LocalFilter()), []byte(t.RemoteFilter())})
		}
		b.room.L = &b.mu
		b.remote.name, b.local.name = "remote", "local"
		b.remote.pubrel, b.local.pubrel = map[uint16]struct{}{}, map[uint16]struct{}{}
		b.remote.in2, b.local.in2 = map[uint16]bool{}, map[uint16]bool{}
		m.bridges = append(m.bridges, b)
	}
	return m, nil
}

// Start runs every bridge in the background. The local broker must be
// started (its MQTT listener up). Any goroutine.
func (m *Manager) Start() error {
	if m.local.MQTTAddr() == "" && len(m.bridges) > 0 {
		return errors.New("bridge: the MQTT listener is disabled; bridges need it")
	}
	for _, b := range m.bridges {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			b.run(m.ctx)
		}()
	}
	return nil
}

// Stop disconnects every bridge (DISCONNECT to both sides) and waits for
// their goroutines, or for ctx. Any goroutine.
func (m *Manager) Stop(ctx context.Context) error {
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status lists the bridges. It takes each bridge's lock briefly and does
// no I/O, so an event loop may call it. Any goroutine.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.bridges))
	for _, b := range m.bridges {
		b.mu.Lock()
		remote, lastErr := b.remoteAddr, b.lastErr
		b.mu.Unlock()
		out = append(out, Status{
			Name: b.cfg.Name, State: stateNames[b.state.Load()], Remote: remote,
			RemoteClientID: b.cfg.RemoteClientID, LocalClientID: b.cfg.LocalClientID,
			Connects: b.connects.Load(), MsgsOut: b.msgsOut.Load(), MsgsIn: b.msgsIn.Load(),
			BytesOut: b.bytesOut.Load(), BytesIn: b.bytesIn.Load(), Dropped: b.dropped.Load(),
			LastError: lastErr,
		})
	}
	return out
}

// side is the protocol state the bridge keeps for one of its two peers.
// Guarded by Bridge.mu.
type side struct {
	name   string
	c      *conn             // nil while down
	nextID uint16            // last packet id used towards this peer
	out    map[uint16]flight // our PUBLISHes to this peer awaiting PUBACK/PUBREC, by id
	pubrel map[uint16]struct{}
	// in2 holds this peer's QoS 2 ids forwarded to the other side and not
	// yet released by PUBREL; true once PUBREC went back. A re-sent
	// PUBLISH with such an id is not forwarded again.
	in2 map[uint16]bool
	// What the peer announced in CONNACK (v5).
	maxQoS    uint8
	retainOK  bool
	maxPacket uint32
	recvMax   int // the peer's Receive Maximum: QoS 1/2 messages it takes unacknowledged (v5; 65535 otherwise)
}

// inflight is what counts against the peer's Receive Maximum: QoS 1 and 2
// messages until PUBACK or PUBCOMP. Caller holds Bridge.mu.
func (s *side) inflight() int { return len(s.out) + len(s.pubrel) }

// flight is a message forwarded to a peer at QoS > 0: the id and QoS it
// had on the other side, to acknowledge when this peer acknowledges.
type flight struct {
	from uint16
	qos  uint8
}

// Bridge is one configured bridge.
type Bridge struct {
	cfg     Config
	filters [][2][]byte // per topic line: local and remote filter
	tls     *tls.Config
	m       *Manager
	log     *slog.Logger

	state                                                 atomic.Int32
	connects, msgsOut, msgsIn, bytesOut, bytesIn, dropped atomic.Uint64

	mu         sync.Mutex // guards what follows
	room       sync.Cond  // on mu: a peer's in-flight window has room, or the pair went down
	down       bool       // the current pair is being torn down: readers stop waiting for room
	remote     side
	local      side
	remoteAddr string
	lastErr    string
	next       int // next address to try (round_robin)
	primed     bool
}

// run is the supervisor: connect both sides, serve until either fails,
// back off, again; until ctx ends. Its own goroutine.
func (b *Bridge) run(ctx context.Context) {
	defer b.state.Store(stateStopped)
	delay := b.cfg.RestartBase
	b.notify("0") // not connected yet: the state topic exists from the start
	for {
		b.state.Store(stateConnecting)
		start := time.Now()
		err := b.session(ctx)
		if ctx.Err() != nil {
			return
		}
		b.mu.Lock()
		b.lastErr = err.Error()
		b.mu.Unlock()
		b.log.Warn("bridge down", "err", err)
		if time.Since(start) > 2*b.cfg.RestartCap+2*b.cfg.RestartBase {
			delay = b.cfg.RestartBase // it was up a good while: start the back-off over
		}
		wait := b.backoff(&delay)
		b.state.Store(stateBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff returns the next wait: constant RestartBase without a cap;
// otherwise decorrelated jitter (a random wait between the base and three
// times the previous one, capped), Mosquitto's scheme. Supervisor only.
func (b *Bridge) backoff(prev *time.Duration) time.Duration {
	base, cp := b.cfg.RestartBase, b.cfg.RestartCap
	if cp <= 0 {
		return base
	}
	hi := min(cp, 3*(*prev))
	d := base
	if hi > base {
		d = base + rand.N(hi-base)
	}
	*prev = d
	return d
}

var errStopping = errors.New("bridge stopping")

// session runs one connection pair: the remote first (trying each
// address), then the local broker, subscriptions on both, then the readers
// until either side fails; then both are closed. Supervisor goroutine.
func (b *Bridge) session(ctx context.Context) error {
	if !b.primed && !b.cfg.LocalCleanSession {
		// Make the local persistent session exist before the remote is
		// ever reachable, so that the broker queues from the start.
		if err := b.prime(ctx); err != nil {
			return fmt.Errorf("local broker: %w", err)
		}
		b.primed = true
	}
	rc, ack, err := b.connectRemote(ctx)
	if err != nil {
		return err
	}
	lc, lack, err := b.connectLocal(ctx, &ack)
	if err != nil {
		rc.close()
		return fmt.Errorf("local broker: %w", err)
	}
	b.mu.Lock()
	b.down = false
	b.attachSide(&b.remote, rc, &ack)
	b.attachSide(&b.local, lc, &lack)
	b.mu.Unlock()
	b.connects.Add(1)
	b.state.Store(stateConnected)
	b.log.Info("bridge connected", "remote", b.remoteAddrNow(), "protocol", rc.v.String(),
		"remote_session_present", ack.SessionPresent, "local_session_present", lack.SessionPresent)
	b.notify("1")

	fail := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); fail <- b.reader(&b.remote, &b.local, rc, lc) }()
	go func() { defer wg.Done(); fail <- b.reader(&b.local, &b.remote, lc, rc) }()

	err = b.subscribe(rc, lc, ack.SessionPresent, lack.SessionPresent)
	if err == nil {
		err = b.keepAlive(ctx, rc, lc, fail)
	}
	if errors.Is(err, errStopping) {
		disc := func(c *conn) {
			_ = c.send(func(dst []byte) []byte { return (&codec.Disconnect{}).AppendTo(dst, c.v) })
		}
		disc(rc)
		disc(lc)
	}
	rc.close()
	lc.close()
	b.mu.Lock()
	b.down = true
	b.room.Broadcast() // a reader waiting for room gives up
	b.mu.Unlock()
	wg.Wait()
	b.mu.Lock()
	b.detachSide(&b.remote)
	b.detachSide(&b.local)
	b.mu.Unlock()
	b.notify("0")
	return err
}

// keepAlive pings both sides when nothing was written for half the
// keep-alive, and fails a side that sent nothing for 1.5 keep-alives.
// Connected to a secondary address (round_robin false), it probes the
// primary with a TCP connect every max(restart_timeout base, 1 s), as
// Mosquitto does, and ends the pair when it answers: the reconnect starts
// from the primary. Supervisor goroutine.
func (b *Bridge) keepAlive(ctx context.Context, rc, lc *conn, fail <-chan error) error {
	ka := b.cfg.KeepAlive
	t := time.NewTicker(min(ka/4, time.Second))
	defer t.Stop()
	var probe <-chan time.Time
	if !b.cfg.RoundRobin && b.next != 0 {
		pt := time.NewTicker(max(b.cfg.RestartBase, time.Second))
		defer pt.Stop()
		probe = pt.C
	}
	for {
		select {
		case <-ctx.Done():
			return errStopping
		case err := <-fail:
			return err
		case <-probe:
			var d net.Dialer
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := d.DialContext(pctx, "tcp", b.cfg.Addresses[0])
			cancel()
			if err == nil {
				c.Close()
				return fmt.Errorf("primary address %s is back", b.cfg.Addresses[0])
			}
		case now := <-t.C:
			for _, c := range []*conn{rc, lc} {
				if now.UnixNano()-c.lastRead.Load() > int64(ka+ka/2) {
					if c == rc {
						return errors.New("remote keep-alive timeout")
					}
					return errors.New("local keep-alive timeout")
				}
				if now.UnixNano()-c.lastWrite.Load() >= int64(ka/2) {
					if err := c.send(codec.AppendPingreq); err != nil {
						return err
					}
				}
			}
		}
	}
}

func (b *Bridge) remoteAddrNow() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.remoteAddr
}

// notify publishes the retained connection state on this broker.
func (b *Bridge) notify(state string) {
	if !b.cfg.Notifications {
		return
	}
	if err := b.m.local.PublishSys(b.cfg.NotificationTopic, []byte(state), true); err != nil {
		b.log.Debug("bridge notification", "err", err)
	}
}

// attachSide starts a side's connection: in-flight messages towards it
// are forgotten (their senders re-send them), PUBRELs are kept for a
// resumed session and re-sent by resume. Caller holds b.mu.
func (b *Bridge) attachSide(s *side, c *conn, ack *codec.Connack) {
	s.c = c
	s.out = map[uint16]flight{}
	if !ack.SessionPresent {
		clear(s.pubrel)
		clear(s.in2)
	}
	for id, recd := range s.in2 {
		if !recd {
			delete(s.in2, id) // never acknowledged: the peer re-sends it
		}
	}
	s.maxQoS, s.retainOK, s.maxPacket, s.recvMax = 2, true, 0, 65535
	if c.v == codec.V5 {
		if ack.Props.Has(codec.PropMaximumQoS) {
			s.maxQoS = ack.Props.MaximumQoS
		}
		if ack.Props.Has(codec.PropRetainAvailable) {
			s.retainOK = ack.Props.RetainAvailable != 0
		}
		if ack.Props.Has(codec.PropReceiveMaximum) && ack.Props.ReceiveMaximum > 0 {
			s.recvMax = int(ack.Props.ReceiveMaximum)
		}
		if ack.Props.Has(codec.PropMaximumPacketSize) {
			s.maxPacket = ack.Props.MaximumPacketSize
		}
	}
}

func (b *Bridge) detachSide(s *side) {
	s.c = nil
	s.out = nil
}

// connectRemote dials the addresses in order (from the next one with
// round_robin) and completes CONNECT. Supervisor goroutine.
func (b *Bridge) connectRemote(ctx context.Context) (*conn, codec.Connack, error) {
	n := len(b.cfg.Addresses)
	start := 0
	if b.cfg.RoundRobin {
		start = b.next
	}
	var errs []string
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		addr := b.cfg.Addresses[idx]
		b.mu.Lock()
		b.remoteAddr = addr
		b.mu.Unlock()
		c, ack, err := b.connectRemoteAddr(ctx, addr)
		if err == nil {
			b.next = idx
			return c, ack, nil
		}
		if ctx.Err() != nil {
			return nil, ack, errStopping
		}
		b.log.Debug("bridge connect failed", "remote", addr, "err", err)
		errs = append(errs, addr+": "+err.Error())
		b.next = (idx + 1) % n
	}
	return nil, codec.Connack{}, errors.New(strings.Join(errs, "; "))
}

func (b *Bridge) connectRemoteAddr(ctx context.Context, addr string) (*conn, codec.Connack, error) {
	nc, err := dial(ctx, addr, b.tls, 10*time.Second)
	if err != nil {
		return nil, codec.Connack{}, err
	}
	c := newConn(nc, b.cfg.ProtocolVersion, b.cfg.MaxPacketSize)
	p := codec.Connect{Version: c.v, CleanStart: b.cfg.CleanSession,
		KeepAlive: uint16(b.cfg.KeepAlive / time.Second), ClientID: []byte(b.cfg.RemoteClientID)}
	if c.v == codec.V5 {
		if !b.cfg.CleanSession {
			p.Props.SessionExpiry = 0xFFFFFFFF // the session never expires, as a 3.1.1 persistent one
			p.Props.Set(codec.PropSessionExpiry)
		}
		p.Props.MaximumPacketSize = uint32(b.cfg.MaxPacketSize)
		p.Props.Set(codec.PropMaximumPacketSize)
	} else if b.cfg.TryPrivate {
		p.Bridge = true // Mosquitto's bridge bit: do not send us our own messages
	}
	if b.cfg.HasRemoteUser {
		p.Username, p.UsernameFlag = []byte(b.cfg.RemoteUsername), true
	}
	if b.cfg.HasRemotePwd {
		p.Password, p.PasswordFlag = []byte(b.cfg.RemotePassword), true
	}
	ack, err := c.handshake(&p, 10*time.Second)
	if err != nil {
		c.close()
		return nil, ack, err
	}
	if c.v == codec.V5 && ack.Props.Has(codec.PropServerKeepAlive) && ack.Props.ServerKeepAlive > 0 {
		b.cfg.KeepAlive = time.Duration(ack.Props.ServerKeepAlive) * time.Second // the server's Server Keep Alive wins (5.0 §3.2.2.3.14)
	}
	return c, ack, nil
}

// localConnect is the local connection's CONNECT: MQTT 5, a persistent
// session unless local_cleansession, the broker's bridge credentials, and
// the remote's Receive Maximum and Maximum Packet Size, so that the
// broker never has more in flight to the bridge than the remote accepts.
func (b *Bridge) localConnect(remote *codec.Connack) codec.Connect {
	p := codec.Connect{Version: codec.V5, CleanStart: b.cfg.LocalCleanSession,
		KeepAlive: uint16(b.cfg.KeepAlive / time.Second), ClientID: []byte(b.cfg.LocalClientID)}
	if !b.cfg.LocalCleanSession {
		p.Props.SessionExpiry = 0xFFFFFFFF
		p.Props.Set(codec.PropSessionExpiry)
	}
	if remote != nil && remote.Props.Has(codec.PropReceiveMaximum) {
		p.Props.ReceiveMaximum = remote.Props.ReceiveMaximum
		p.Props.Set(codec.PropReceiveMaximum)
	}
	if remote != nil && remote.Props.Has(codec.PropMaximumPacketSize) {
		p.Props.MaximumPacketSize = remote.Props.MaximumPacketSize
		p.Props.Set(codec.PropMaximumPacketSize)
	}
	if b.cfg.HasLocalUser {
		p.Username, p.UsernameFlag = []byte(b.cfg.LocalUsername), true
		if b.cfg.LocalPassword != "" {
			p.Password, p.PasswordFlag = []byte(b.cfg.LocalPassword), true
		}
	} else {
		u, pw := b.m.local.BridgeCredentials()
		p.Username, p.UsernameFlag, p.Password, p.PasswordFlag = []byte(u), true, pw, true
	}
	return p
}

func (b *Bridge) localAddr() string {
	addr := b.m.local.MQTTAddr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (b *Bridge) connectLocal(ctx context.Context, remote *codec.Connack) (*conn, codec.Connack, error) {
	nc, err := dial(ctx, b.localAddr(), nil, 10*time.Second)
	if err != nil {
		return nil, codec.Connack{}, err
	}
	c := newConn(nc, codec.V5, 0)
	p := b.localConnect(remote)
	ack, err := c.handshake(&p, 10*time.Second)
	if err != nil {
		c.close()
		return nil, ack, err
	}
	return c, ack, nil
}

// prime creates the local persistent session and its subscriptions, then
// disconnects, so that the broker queues for the remote while it has never
// been reached. Supervisor goroutine.
func (b *Bridge) prime(ctx context.Context) error {
	c, _, err := b.connectLocal(ctx, nil)
	if err != nil {
		return err
	}
	defer c.close()
	sub := b.localSubscribe()
	if sub == nil {
		return nil
	}
	if err := c.send(func(dst []byte) []byte { return sub.AppendTo(dst, codec.V5) }); err != nil {
		return err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, _, err := c.read()
		if err != nil {
			return err
		}
		if h.Type == codec.TypeSuback {
			break // anything sent before it (retained messages) stays with the session
		}
	}
	return c.send(func(dst []byte) []byte { return (&codec.Disconnect{}).AppendTo(dst, codec.V5) })
}

// localSubscribe is the SUBSCRIBE for the out topics (nil when none): No
// Local, so that what the bridge publishes here does not come back to it,
// and Retain As Published, so that retained messages cross retained.
func (b *Bridge) localSubscribe() *codec.Subscribe {
	var s codec.Subscribe
	for i := range b.cfg.Topics {
		t := &b.cfg.Topics[i]
		if t.Dir&Out != 0 {
			s.Subs = append(s.Subs, codec.Subscription{Filter: []byte(t.LocalFilter()), QoS: t.QoS,
				NoLocal: true, RetainAsPublished: true})
		}
	}
	if len(s.Subs) == 0 {
		return nil
	}
	s.PacketID = 1
	return &s
}

// subscribe sends both SUBSCRIBEs and re-sends the PUBRELs of resumed
// sessions. The SUBACKs are read (and refusals logged) by the readers.
// Supervisor goroutine.
func (b *Bridge) subscribe(rc, lc *conn, remotePresent, localPresent bool) error {
	var rs codec.Subscribe
	for i := range b.cfg.Topics {
		t := &b.cfg.Topics[i]
		if t.Dir&In != 0 {
			rs.Subs = append(rs.Subs, codec.Subscription{Filter: []byte(t.RemoteFilter()), QoS: t.QoS,
				NoLocal: rc.v == codec.V5, RetainAsPublished: rc.v == codec.V5})
		}
	}
	b.mu.Lock()
	rs.PacketID = b.allocID(&b.remote)
	ls := b.localSubscribe()
	if ls != nil {
		ls.PacketID = b.allocID(&b.local)
	}
	var rrel, lrel []uint16
	if remotePresent {
		for id := range b.remote.pubrel {
			rrel = append(rrel, id)
		}
	}
	if localPresent {
		for id := range b.local.pubrel {
			lrel = append(lrel, id)
		}
	}
	b.mu.Unlock()
	for _, id := range rrel {
		if err := rc.ack(codec.TypePubrel, id); err != nil {
			return err
		}
	}
	for _, id := range lrel {
		if err := lc.ack(codec.TypePubrel, id); err != nil {
			return err
		}
	}
	if len(rs.Subs) > 0 {
		if err := rc.send(func(dst []byte) []byte { return rs.AppendTo(dst, rc.v) }); err != nil {
			return err
		}
	}
	if ls != nil {
		if err := lc.send(func(dst []byte) []byte { return ls.AppendTo(dst, codec.V5) }); err != nil {
			return err
		}
	}
	return nil
}

// allocID returns a packet id free towards s. Caller holds b.mu.
func (b *Bridge) allocID(s *side) uint16 {
	for range 65536 {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		_, used := s.out[s.nextID]
		_, rel := s.pubrel[s.nextID]
		if !used && !rel {
			return s.nextID
		}
	}
	return 0
}

var errNoIDs = errors.New("no free packet identifier")

// reader reads from side from (connection fc) and forwards or
// acknowledges towards side to (connection tc) until an error. Its own
// goroutine.
func (b *Bridge) reader(from, to *side, fc, tc *conn) error {
	var (
		pub  codec.Publish
		ack  codec.Ack
		sack codec.Suback
	)
	for {
		h, body, err := fc.read()
		if err != nil {
			return fmt.Errorf("%s: %w", from.name, err)
		}
		switch h.Type {
		case codec.TypePublish:
			if err := pub.Decode(fc.v, h, body); err != nil {
				return fmt.Errorf("%s: PUBLISH: %w", from.name, err)
			}
			if err := b.forward(from, to, fc, tc, &pub); err != nil {
				return err
			}
		case codec.TypePuback, codec.TypePubrec, codec.TypePubrel, codec.TypePubcomp:
			if err := ack.Decode(fc.v, h, body); err != nil {
				return fmt.Errorf("%s: %s: %w", from.name, h.Type, err)
			}
			if err := b.onAck(from, to, fc, tc, &ack); err != nil {
				return err
			}
		case codec.TypeSuback:
			if err := sack.Decode(fc.v, h, body); err != nil {
				return fmt.Errorf("%s: SUBACK: %w", from.name, err)
			}
			for i, rc := range sack.Reasons {
				if rc >= 0x80 {
					b.log.Warn("bridge subscription refused", "side", from.name, "index", i, "code", fmt.Sprintf("0x%02x", byte(rc)))
				}
			}
		case codec.TypePingresp, codec.TypeUnsuback:
		case codec.TypePingreq:
			if err := fc.send(codec.AppendPingresp); err != nil {
				return err
			}
		case codec.TypeDisconnect:
			var d codec.Disconnect
			_ = d.Decode(fc.v, h, body)
			return fmt.Errorf("%s: DISCONNECT reason 0x%02x", from.name, byte(d.Reason))
		default:
			return fmt.Errorf("%s: unexpected %s", from.name, h.Type)
		}
	}
}

// mapTopic finds the first topic line carrying name from side from and
// returns the name on the other side: the prefix of this side replaced by
// the other's. Reader goroutines.
func (b *Bridge) mapTopic(fromLocal bool, name []byte) (string, *Topic, bool) {
	for i := range b.cfg.Topics {
		t := &b.cfg.Topics[i]
		dir, filter, pre, other := In, b.filters[i][1], t.RemotePrefix, t.LocalPrefix
		if fromLocal {
			dir, filter, pre, other = Out, b.filters[i][0], t.LocalPrefix, t.RemotePrefix
		}
		if t.Dir&dir == 0 || !topic.MatchFilter(filter, name) {
			continue
		}
		if out, ok := swapPrefix(name, pre, other); ok {
			return out, t, true
		}
	}
	return "", nil, false
}

// swapPrefix replaces prefix pre of name by other. "pre/#" also matches
// the topic "pre" itself: then "pre" maps to other without its trailing
// '/' when both prefixes end in one.
func swapPrefix(name []byte, pre, other string) (string, bool) {
	if len(name) >= len(pre) && string(name[:len(pre)]) == pre {
		return other + string(name[len(pre):]), true
	}
	if len(pre) > 0 && pre[len(pre)-1] == '/' && string(name) == pre[:len(pre)-1] &&
		len(other) > 0 && other[len(other)-1] == '/' {
		return other[:len(other)-1], true
	}
	return "", false
}

// forward carries one PUBLISH from side from to side to. A QoS 1/2
// message is acknowledged to its sender only when the other side has
// acknowledged it (onAck). Reader goroutine of from.
func (b *Bridge) forward(from, to *side, fc, tc *conn, p *codec.Publish) error {
	fromLocal := from == &b.local
	name, _, ok := b.mapTopic(fromLocal, p.Topic)
	if !ok {
		// Not ours (a subscription left from an older configuration):
		// acknowledge and drop.
		b.dropped.Add(1)
		return b.ackSender(fc, p)
	}
	q := p.QoS
	out := codec.Publish{QoS: q, Retain: p.Retain, Topic: []byte(name), Payload: p.Payload}
	if tc.v == codec.V5 && fc.v == codec.V5 {
		out.Props = p.Props
		out.Props.Present &^= 1<<codec.PropTopicAlias | 1<<codec.PropSubscriptionID
		out.Props.SubscriptionIDs = nil
	}
	b.mu.Lock()
	if q > to.maxQoS {
		out.QoS = to.maxQoS
	}
	if !to.retainOK || (fromLocal && !b.cfg.OutgoingRetain) {
		out.Retain = false
	}
	if q == 2 {
		if recd, dup := from.in2[p.PacketID]; dup {
			// Re-sent before its release: already forwarded.
			b.mu.Unlock()
			if recd {
				return fc.ack(codec.TypePubrec, p.PacketID)
			}
			return nil
		}
	}
	if to.maxPacket > 0 && uint32(out.Size(tc.v)) > to.maxPacket {
		b.mu.Unlock()
		b.dropped.Add(1)
		return b.ackSender(fc, p)
	}
	if out.QoS > 0 {
		// Flow control: no more in flight than the peer's Receive
		// Maximum (exceeding it is a protocol error, 0x93). This reader
		// waits for the peer's acknowledgements, read by the other reader.
		for to.inflight() >= to.recvMax && !b.down {
			b.room.Wait()
		}
		if b.down {
			b.mu.Unlock()
			return errStopping
		}
		out.PacketID = b.allocID(to)
		if out.PacketID == 0 {
			b.mu.Unlock()
			return errNoIDs
		}
		to.out[out.PacketID] = flight{from: p.PacketID, qos: q}
		if q == 2 {
			from.in2[p.PacketID] = false
		}
	}
	b.mu.Unlock()
	if err := tc.send(func(dst []byte) []byte { return out.AppendTo(dst, tc.v) }); err != nil {
		return fmt.Errorf("%s: %w", to.name, err)
	}
	b.count(fromLocal, len(p.Payload))
	if q > 0 && out.QoS == 0 {
		return b.ackSender(fc, p) // downgraded by the peer's Maximum QoS
	}
	return nil
}

func (b *Bridge) count(fromLocal bool, n int) {
	if fromLocal {
		b.msgsOut.Add(1)
		b.bytesOut.Add(uint64(n))
	} else {
		b.msgsIn.Add(1)
		b.bytesIn.Add(uint64(n))
	}
}

// ackSender acknowledges a PUBLISH that is not forwarded. QoS 2 gets
// PUBREC; the sender's PUBREL is answered as any other.
func (b *Bridge) ackSender(fc *conn, p *codec.Publish) error {
	switch p.QoS {
	case 1:
		return fc.ack(codec.TypePuback, p.PacketID)
	case 2:
		return fc.ack(codec.TypePubrec, p.PacketID)
	}
	return nil
}

// onAck handles PUBACK, PUBREC, PUBREL and PUBCOMP from side from: an
// acknowledgement of a forwarded message is passed on to the side it came
// from (to). Reader goroutine of from.
func (b *Bridge) onAck(from, to *side, fc, tc *conn, a *codec.Ack) error {
	switch a.Type {
	case codec.TypePubrel:
		// The sender releases a QoS 2 message we acknowledged with PUBREC.
		b.mu.Lock()
		delete(from.in2, a.PacketID)
		b.mu.Unlock()
		return fc.ack(codec.TypePubcomp, a.PacketID)
	case codec.TypePubcomp:
		b.mu.Lock()
		delete(from.pubrel, a.PacketID)
		b.room.Broadcast()
		b.mu.Unlock()
		return nil
	}
	b.mu.Lock()
	f, ok := from.out[a.PacketID]
	if !ok {
		b.mu.Unlock()
		if a.Type == codec.TypePubrec {
			return fc.ack(codec.TypePubrel, a.PacketID) // a resumed session's: release it
		}
		return nil
	}
	delete(from.out, a.PacketID)
	failed := a.Reason >= 0x80
	if a.Type == codec.TypePubrec && !failed {
		from.pubrel[a.PacketID] = struct{}{}
	} else {
		b.room.Broadcast()
	}
	if f.qos == 2 {
		to.in2[f.from] = true
	}
	b.mu.Unlock()
	if failed {
		b.dropped.Add(1)
		if b.m.log.Enabled(context.Background(), slog.LevelDebug) {
			b.log.Debug("bridged message refused", "side", from.name, "code", fmt.Sprintf("0x%02x", byte(a.Reason)))
		}
	}
	if a.Type == codec.TypePubrec && !failed {
		if err := fc.ack(codec.TypePubrel, a.PacketID); err != nil {
			return err
		}
	}
	// Pass the acknowledgement back: PUBACK for a QoS 1 original, PUBREC
	// for a QoS 2 one (its sender then releases it with PUBREL).
	t := codec.TypePuback
	if f.qos == 2 {
		t = codec.TypePubrec
	}
	if err := tc.ack(t, f.from); err != nil {
		return fmt.Errorf("%s: %w", to.name, err)
	}
	return nil
}
