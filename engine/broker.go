package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/topic"
)

// Broker is one TinyMQ broker: a gnet engine plus the shared state its
// event loops route through.
type Broker struct {
	gnet.BuiltinEventEngine

	opts   Options
	log    *slog.Logger
	limits topic.Limits

	subs     *topic.Tree[*session]
	retained *topic.Retained[*message]

	sharedStrategy sharedStrategy // Options.SharedStrategy (shared.go)

	sessMu    sync.Mutex
	sessions  *sessionIndex // client id -> session (online or persistent)
	sweepNext int           // next index shard for expireSessions; under sessMu
	memReturn memoryReturn  // ticker goroutine

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*loop] // copy-on-write registry of loops seen so far

	// Authentication and authorization (auth.go, authpool.go, reload.go).
	apiKey         []byte // nil: none
	allowAnonymous bool
	authn          atomic.Pointer[authnRef] // nil: no Authenticator
	authz          atomic.Pointer[authzRef] // nil: everything allowed
	authPool       *authPool                // nil when the Authenticator is inline (or none)
	authMethods    map[string]AuthMethod    // MQTT 5 enhanced authentication, by name (read-only after New)
	authCache      authCache
	fails          failTable
	reloadMu       sync.Mutex // one Reload at a time
	files          authFiles  // the file-based Authenticator and Authorizer, when configured

	sys        *router      // $SYS publisher's router (not a loop)
	orphans    orphanRouter // shared.go: hands on ended members' messages while no loop runs yet
	sysStats   counters
	counters   globalCounters
	now        atomic.Int64 // unix seconds, advanced by the ticker
	started    time.Time
	idPrefix   string
	idSeq      atomic.Uint64
	closing    atomic.Bool
	logLimiter rateLimiter
	rate       *connRate  // per-source connection-rate limit; nil when off
	ps         *persister // durable state (persist.go); nil when persistence is off

	eng      gnet.Engine
	engReady chan struct{}
	runErr   chan error
	mqttAddr string
	httpAddr string
	wsAddr   string
	mqttPort int
	httpPort int
	wsPort   int
	tb       tlsBroker              // TLS listeners, handshake pool, PROXY protocol (tls.go)
	ready    atomic.Bool            // listeners up (GET /readyz)
	date     atomic.Pointer[[]byte] // HTTP Date header value, refreshed every tick
	stopSys  chan struct{}
	sysDone  chan struct{}
	dash     dashState  // the live dashboard (dashboard.go)
	bridges  bridgeHook // bridges' credentials, status and $SYS notifications (bridgehook.go)
}

// New validates opts and builds a broker. Call Start to listen.
func New(opts Options) (*Broker, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	b := &Broker{
		opts:     o,
		log:      o.Logger,
		limits:   topic.Limits{MaxLen: o.MaxTopicLen, MaxLevels: o.MaxTopicLevels},
		subs:     topic.NewTree[*session](),
		retained: topic.NewRetained[*message](),
		sessions: newSessionIndex(),
		idPrefix: "tinymq-" + hex.EncodeToString(rnd[:]) + "-",
		engReady: make(chan struct{}),
		runErr:   make(chan error, 1),
		stopSys:  make(chan struct{}),
		sysDone:  make(chan struct{}),
	}
	if err := b.initTLS(); err != nil {
		return nil, err
	}
	b.sys = newRouter(b, nil, &b.sysStats)
	if b.sharedStrategy, err = parseSharedStrategy(o.SharedStrategy); err != nil {
		return nil, err
	}
	b.subs.SetChooser(b.chooseShared)
	b.initBridgeHook()
	b.rate = newConnRate(o)
	b.now.Store(time.Now().Unix())
	if err := b.setupAuth(); err != nil {
		return nil, err
	}
	b.setupAuthMethods()
	b.memReturn.init()
	if err := b.openStore(); err != nil { // persist.go: recovered before any listener opens
		return nil, err
	}
	return b, nil
}

// Start binds the listeners and runs the event loops in the background. It
// returns once the broker accepts connections, or with the bind error.
// Any goroutine.
func (b *Broker) Start() error {
	type listener struct {
		name, addr string
		dst        *string
		port       *int
	}
	var ls []listener
	if b.opts.MQTTAddr != "" {
		ls = append(ls, listener{"mqtt", b.opts.MQTTAddr, &b.mqttAddr, &b.mqttPort})
	}
	if b.opts.HTTPAddr != "" {
		ls = append(ls, listener{"http", b.opts.HTTPAddr, &b.httpAddr, &b.httpPort})
	}
	if b.opts.WSAddr != "" {
		ls = append(ls, listener{"ws", b.opts.WSAddr, &b.wsAddr, &b.wsPort})
	}
	if b.opts.TLSAddr != "" {
		ls = append(ls, listener{"tls", b.opts.TLSAddr, &b.tb.tlsAddr, &b.tb.tlsPort})
	}
	if b.opts.HTTPSAddr != "" {
		ls = append(ls, listener{"https", b.opts.HTTPSAddr, &b.tb.httpsAddr, &b.tb.httpsPort})
	}
	var (
		urls         []string
		placeholders []int
	)
	release := func() {
		for _, fd := range placeholders {
			_ = syscall.Close(fd)
		}
		placeholders = nil
	}
	for _, x := range ls {
		addr, placeholder, err := resolveListenAddr(x.addr)
		if err != nil {
			release()
			_ = b.closeStore() // persist.go: New opened it
			return fmt.Errorf("engine: cannot listen on %s (%s): %w", x.addr, x.name, err)
		}
		if placeholder >= 0 {
			placeholders = append(placeholders, placeholder)
		}
		*x.dst = addr
		_, p, _ := net.SplitHostPort(addr)
		*x.port, _ = strconv.Atoi(p)
		urls = append(urls, "tcp://"+addr)
	}
	b.started = time.Now()
	b.refreshDate(b.started)
	go func() {
		b.runErr <- gnet.Rotate(b, urls,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(b.opts.Loops),
			gnet.WithReusePort(true),
			gnet.WithReuseAddr(true),
			gnet.WithTicker(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{b.log}),
		)
	}()
	select {
	case <-b.engReady:
	case err := <-b.runErr:
		release()
		_ = b.closeStore() // persist.go
		return fmt.Errorf("engine: cannot start listeners %v: %w", urls, err)
	}
	release()
	for _, x := range ls {
		b.log.Info("listening", "listener", x.name, "addr", *x.dst)
	}
	if authn, authz := b.authDescription(); authn != "" || authz != "" || !b.allowAnonymous {
		b.log.Info("access control", "authentication", authn, "acl", authz, "anonymous", b.allowAnonymous,
			"users", b.files.users())
	}
	b.ready.Store(true)
	if b.opts.SysInterval > 0 {
		go b.runSys()
	} else {
		close(b.sysDone)
	}
	return nil
}

// MQTTAddr is the MQTT listener's actual address (host:port), valid after
// Start. Any goroutine.
func (b *Broker) MQTTAddr() string { return b.mqttAddr }

// HTTPAddr is the HTTP listener's actual address, "" when disabled.
func (b *Broker) HTTPAddr() string { return b.httpAddr }

// WSAddr is the dedicated WebSocket listener's actual address, "" when
// disabled.
func (b *Broker) WSAddr() string { return b.wsAddr }

// TLSAddr is the MQTT over TLS listener's actual address, "" when
// disabled.
func (b *Broker) TLSAddr() string { return b.tb.tlsAddr }

// HTTPSAddr is the HTTPS listener's actual address, "" when disabled.
func (b *Broker) HTTPSAddr() string { return b.tb.httpsAddr }

// Stop closes every connection and the listeners and waits for the loops to
// end, or for ctx. Any goroutine.
func (b *Broker) Stop(ctx context.Context) error {
	if !b.closing.CompareAndSwap(false, true) {
		return nil
	}
	b.tellShutdown(ctx)
	close(b.stopSys)
	<-b.sysDone
	err := b.eng.Stop(ctx)
	if b.authPool != nil {
		b.authPool.stop()
	}
	select {
	case <-b.runErr:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	if serr := b.closeStore(); serr != nil && err == nil { // persist.go: after the loops
		err = serr
	}
	return err
}

// resolveListenAddr checks a listen address and turns "host:0" into a
// concrete port.
//
// gnet binds one SO_REUSEPORT listener per loop, and the kernel lets any
// other SO_REUSEPORT socket of the same user bind the same port: a second
// broker started by mistake would silently take half the new connections.
// So a fixed port is first bound by a probe socket without SO_REUSEPORT,
// which fails with EADDRINUSE while anything listens there.
//
// For ":0" each loop would pick its own port, so we reserve a free port with
// a bound (not listening) SO_REUSEPORT socket, hand gnet that port, and
// close the reservation once gnet has bound. The returned fd is -1 when no
// reservation was needed. Runs in Start, before any loop exists.
func resolveListenAddr(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", -1, err
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn < 0 || pn > 65535 {
		return "", -1, fmt.Errorf("bad port %q", port)
	}
	ip := net.IPv4zero
	if host != "" {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return "", -1, fmt.Errorf("cannot resolve %q", host)
		}
		ip = ips[0]
	}
	if pn != 0 {
		fd, _, err := bindSocket(ip, pn, false)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return "", -1, fmt.Errorf("%w: another process (another broker?) listens on %s", err, addr)
			}
			return "", -1, err
		}
		_ = syscall.Close(fd)
		return addr, -1, nil
	}
	fd, got, err := bindSocket(ip, 0, true)
	if err != nil {
		return "", -1, err
	}
	return net.JoinHostPort(host, strconv.Itoa(got)), fd, nil
}

// bindSocket binds a TCP socket (not listening) to ip:port with
// SO_REUSEADDR, and SO_REUSEPORT when reusePort is set. It returns the fd
// and the bound port. Runs in Start.
func bindSocket(ip net.IP, port int, reusePort bool) (int, int, error) {
	var (
		fd  int
		err error
		sa  syscall.Sockaddr
	)
	if ip4 := ip.To4(); ip4 != nil {
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		a := syscall.SockaddrInet4{Port: port}
		copy(a.Addr[:], ip4)
		sa = &a
	} else {
		fd, err = syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		a := syscall.SockaddrInet6{Port: port}
		copy(a.Addr[:], ip.To16())
		sa = &a
	}
	if err != nil {
		return -1, 0, err
	}
	const soReusePort = 0xf // SO_REUSEPORT on Linux
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if reusePort {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soReusePort, 1); err != nil {
			_ = syscall.Close(fd)
			return -1, 0, err
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		_ = syscall.Close(fd)
		return -1, 0, err
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return -1, 0, err
	}
	switch a := got.(type) {
	case *syscall.SockaddrInet4:
		return fd, a.Port, nil
	case *syscall.SockaddrInet6:
		return fd, a.Port, nil
	}
	_ = syscall.Close(fd)
	return -1, 0, fmt.Errorf("unexpected socket address %T", got)
}

// OnBoot implements gnet.EventHandler. Runs once on gnet's starting goroutine.
func (b *Broker) OnBoot(eng gnet.Engine) gnet.Action {
	b.eng = eng
	close(b.engReady)
	return gnet.None
}

// loopFor returns our state for a gnet event loop, creating it on first
// sight. Runs on that loop (from OnOpen).
func (b *Broker) loopFor(el gnet.EventLoop) *loop {
	if ls := b.loops.Load(); ls != nil {
		for _, l := range *ls {
			if l.el == el {
				return l
			}
		}
	}
	b.loopsMu.Lock()
	defer b.loopsMu.Unlock()
	var cur []*loop
	if ls := b.loops.Load(); ls != nil {
		cur = *ls
		for _, l := range cur {
			if l.el == el {
				return l
			}
		}
	}
	l := newLoop(b, el)
	next := append(append([]*loop(nil), cur...), l)
	b.loops.Store(&next)
	return l
}

func (b *Broker) allLoops() []*loop {
	if ls := b.loops.Load(); ls != nil {
		return *ls
	}
	return nil
}

// OnTick implements gnet.EventHandler. It runs on gnet's ticker goroutine,
// not on a loop: it advances the coarse clock and asks each loop to scan its
// keep-alive wheel and its blocked connections.
func (b *Broker) OnTick() (time.Duration, gnet.Action) {
	now := time.Now()
	b.now.Store(now.Unix())
	b.refreshDate(now)
	if b.closing.Load() {
		return time.Second, gnet.None
	}
	b.expireSessions(now.Unix())
	if b.ps != nil && len(b.allLoops()) == 0 {
		// No loop submits records before the first connection (a
		// restart): the sweep's deletions go now, and the messages the
		// store reads for them come back (shared.go).
		b.ps.flush()
	}
	b.dashBuild(now)
	if b.opts.ReturnIdleMemory {
		b.memReturn.tick(now)
	}
	for _, l := range b.allLoops() {
		if l.tickPending.CompareAndSwap(false, true) {
			if err := l.el.Execute(context.Background(), l.tickRun); err != nil {
				l.tickPending.Store(false)
			}
		}
	}
	return tickInterval, gnet.None
}

// refreshDate updates the cached HTTP Date header value. Ticker goroutine
// (or Start).
func (b *Broker) refreshDate(now time.Time) {
	d := now.UTC().AppendFormat(make([]byte, 0, 32), "Mon, 02 Jan 2006 15:04:05 GMT")
	b.date.Store(&d)
}

// tickInterval is the keep-alive resolution and the slow-consumer recheck
// period.
const tickInterval = 500 * time.Millisecond

// sessionByID is the session of client id, nil when there is none. Any
// goroutine (it takes sessMu, which the caller must not hold).
func (b *Broker) sessionByID(id string) *session {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	return b.sessions.Get(id)
}

// nextClientID makes a server-assigned client identifier [MQTT-3.1.3-6].
func (b *Broker) nextClientID() string {
	return b.idPrefix + strconv.FormatUint(b.idSeq.Add(1), 36)
}

// rateLimiter lets through at most 20 events a second (for peer-caused log
// lines). Any goroutine.
type rateLimiter struct {
	sec atomic.Int64
	n   atomic.Int32
}

func (r *rateLimiter) allow(now int64) bool {
	if r.sec.Load() != now {
		r.sec.Store(now)
		r.n.Store(0)
	}
	return r.n.Add(1) <= 20
}

// gnetLogger forwards gnet's warnings and errors to slog and drops its
// chatter.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(string, ...any) {}
func (g gnetLogger) Infof(string, ...any)  {}
func (g gnetLogger) Warnf(f string, a ...any) {
	g.l.Warn("gnet: " + fmt.Sprintf(f, a...))
}
func (g gnetLogger) Errorf(f string, a ...any) {
	g.l.Error("gnet: " + fmt.Sprintf(f, a...))
}
func (g gnetLogger) Fatalf(f string, a ...any) {
	g.l.Error("gnet: " + fmt.Sprintf(f, a...))
}

var errStopped = errors.New("engine: broker stopped")
