package engine

import (
	"errors"
	"time"
	"unicode/utf8"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// pendingConnect is what accepting a CONNECT needs once its credentials
// are decided: owned copies, since the verdict may come after the read
// buffer is gone.
type pendingConnect struct {
	id        string
	user      string
	hasUser   bool
	version   codec.Version
	clean     bool
	keepAlive uint16
	will      *message
	v5        *connect5 // MQTT 5 CONNECT properties; nil for 3.x
}

// onConnect handles the first packet of a connection: it checks the
// CONNECT, decides who the client is (inline, or on the authentication
// pool for a slow Authenticator) and accepts or refuses it. Runs on c's
// loop.
func (c *conn) onConnect(h codec.FixedHeader, body []byte) error {
	l := c.l
	b := l.b
	p := &l.conn
	if err := p.Decode(h, body); err != nil {
		var ce *codec.Error
		if errors.As(err, &ce) && ce.Code == codec.UnsupportedProtocolVersion && p.Version != 0 {
			// [MQTT-3.1.2-2]: unsupported level -> CONNACK 0x01, then close.
			c.refuse(codec.UnsupportedProtocolVersion)
			c.closeReason = closeUnsupportedVersion
			return errClose
		}
		return err // malformed CONNECT: close without CONNACK [MQTT-3.1.4-1]
	}
	c.version = p.Version
	if p.Bridge {
		c.ext().bridge = true // a 3.x bridge (bridgehook.go)
	}
	if ref := b.opts.ServerReference; ref != "" {
		// Redirected (Options.ServerReference): v5 clients are told
		// where to go, 3.x ones that the server is unavailable.
		rc := codec.UseAnotherServer
		if b.opts.ServerMoved {
			rc = codec.ServerMoved
		}
		c.refuse5(rc, ref)
		c.closeReason = closeRedirected
		return errClose
	}

	pc := pendingConnect{id: string(p.ClientID), version: p.Version, clean: p.CleanStart, keepAlive: p.KeepAlive}
	if p.Version == codec.V5 {
		pc.v5 = b.connect5(p)
	}
	if int(p.KeepAlive) > b.opts.MaxKeepAlive && pc.v5 == nil {
		// Above max_keepalive: a 3.x client is refused, as Mosquitto
		// does (a v5 one is told the maximum in CONNACK).
		c.refuse(codec.ClientIdentifierNotValid)
		c.closeReason = closeKeepAliveTooLong
		return errClose
	}
	if p.Version == codec.V31 && (len(pc.id) == 0 || utf8.RuneCountInString(pc.id) > maxClientIDLen31) {
		// MQTT 3.1 §3.1: the client id is 1 to 23 characters; otherwise
		// CONNACK 2 (identifier rejected). Mosquitto 2.0.11 refuses the
		// empty one and accepts longer ones (docs/validation.md).
		c.refuse(codec.ClientIdentifierNotValid)
		c.closeReason = closeClientIDTooLong
		if len(pc.id) == 0 {
			c.closeReason = closeEmptyClientID
		}
		return errClose
	}
	if pc.id == "" {
		if !p.CleanStart && pc.v5 == nil {
			c.refuse(codec.ClientIdentifierNotValid) // [MQTT-3.1.3-8]
			c.closeReason = closeEmptyClientID
			return errClose
		}
		pc.id = b.nextClientID() // [MQTT-3.1.3-6]
		if pc.v5 != nil {
			pc.v5.assigned = true // [MQTT5-3.2.2-16]: CONNACK names it
		}
	}
	if len(pc.id) > b.opts.MaxClientIDLen {
		c.refuse(codec.ClientIdentifierNotValid) // [MQTT-3.1.3-9]
		c.closeReason = closeClientIDTooLong
		return errClose
	}
	if p.WillFlag {
		if err := b.validName(p.WillTopic); err != nil || isSysTopic(p.WillTopic) {
			return errWillTopic // [MQTT-3.1.2-9]
		}
		if pc.v5 != nil {
			if !validUTF8Payload(&p.WillProps, p.WillPayload) {
				c.refuse(codec.PayloadFormatInvalid) // 5.0 §3.1.3.2.3
				c.closeReason = closeProtocolError
				return errClose
			}
			pc.will = b.will5(p)
			pc.v5.willDelay = p.WillProps.WillDelay
		} else {
			pc.will = cloneMessage(p.WillTopic, p.WillPayload, p.WillQoS, p.WillRetain)
		}
	}
	pc.user, pc.hasUser = string(p.Username), p.UsernameFlag

	// Who is it? A verified client certificate names the user outright
	// (--tls-cert-as-username, as Mosquitto's use_identity_as_username);
	// the API key is checked inline; an anonymous client needs
	// --allow-anonymous; everything else asks the Authenticator, through
	// the success cache first and the worker pool on a miss.
	if pc.v5 != nil && p.Props.Has(codec.PropAuthMethod) {
		// Enhanced authentication (AUTH exchange, auth5.go).
		return c.startAuth5(&pc, p)
	}
	rc := codec.Success
	switch cn, ok := c.certUsername(); {
	case ok:
		pc.user, pc.hasUser = cn, true
	case b.apiKeyMatches(p.PasswordFlag, p.Password) || b.bridgeKeyMatches(p.PasswordFlag, p.Password):
		c.ext().id.apiKey = true
	case !p.UsernameFlag && !p.PasswordFlag:
		if !b.allowAnonymous {
			rc = codec.NotAuthorized
		}
	default:
		ar := b.authn.Load()
		if ar == nil {
			// No authenticator: a username is taken as given, as Mosquitto
			// does without a password file, unless anonymous access is off
			// (then nobody can prove who they are).
			if !b.allowAnonymous {
				rc = codec.NotAuthorized
			}
			break
		}
		key := b.authCache.keyOf(&l.authBuf, p.Username, p.Password)
		if b.authCache.ok(key, b.now.Load()) {
			break
		}
		j := &authJob{c: c, pc: pc, key: key, cr: Credentials{
			ClientID: pc.id, Username: pc.user, HasUsername: pc.hasUser,
			Password: append([]byte(nil), p.Password...), HasPassword: p.PasswordFlag,
			Remote: c.remote(), Transport: protoNames[c.proto],
		}}
		if ar.inline {
			if rc = ar.a.Authenticate(&j.cr); rc == codec.Success {
				b.authCache.add(key)
			}
			break
		}
		if !b.authPool.submit(j) {
			l.stats.authOverload.Add(1)
			c.refuse(codec.ServerUnavailable)
			c.closeReason = closeNotAuthorized
			return errClose
		}
		c.ext().pend = j
		c.authWait = true // later packets wait in gnet's buffer for the verdict
		return nil
	}
	if rc != codec.Success {
		b.refuseLogin(c, rc, pc.id, pc.user)
		if c.authWait {
			return nil // held: refused by the loop's tick
		}
		return errClose
	}
	if !c.accept(&pc) {
		return errClose
	}
	return nil
}

// maxClientIDLen31 is MQTT 3.1's bound on the client id (characters; a
// longer id is refused whatever Options.MaxClientIDLen says).
const maxClientIDLen31 = 23

// refuseLogin answers failed credentials with CONNACK "not authorized"
// and closes the connection: at once for the first failures from an
// address, after a growing delay (held on the loop's refusal list, read
// paused) once it keeps failing. Other clients and good logins are never
// delayed. Runs on c's loop.
func (b *Broker) refuseLogin(c *conn, rc codec.ReasonCode, id, user string) {
	l := c.l
	l.stats.authFailures.Add(1)
	c.closeReason = closeNotAuthorized
	now := time.Now()
	delay := b.fails.fail(c.remote(), now.Unix(), b.opts.AuthFailDelayMax)
	if b.logLimiter.allow(b.now.Load()) {
		b.log.Warn("connection refused: authentication failed", "client", id, "user", user,
			"remote", c.remote(), "delay", delay.String())
	}
	if delay > 0 {
		l.stats.authDelayed.Add(1)
		c.authWait = true
		l.refusals = append(l.refusals, refusal{c: c, rc: rc, due: now.Add(delay).UnixMilli()})
		return
	}
	c.refuse(rc)
	if !c.authWait {
		return // onConnect returns errClose
	}
	_ = c.gc.Close()
}

// refusal is a failed login whose CONNACK is held (refuseLogin).
type refusal struct {
	c   *conn
	rc  codec.ReasonCode
	due int64 // unix milliseconds
}

// sendRefusals answers the held failed logins that are due. Runs on l
// (from its tick).
func (l *loop) sendRefusals(nowMs int64) {
	keep := l.refusals[:0]
	for _, r := range l.refusals {
		switch {
		case !r.c.open:
		case r.due <= nowMs:
			r.c.refuse(r.rc)
			_ = r.c.gc.Close()
		default:
			keep = append(keep, r)
			continue
		}
	}
	clear(l.refusals[len(keep):])
	l.refusals = keep
}

// accept finishes an accepted CONNECT: permissions, the will's ACL check,
// the session, CONNACK and what the session held. It reports false when
// the connection was refused after all (and must be closed). Runs on c's
// loop.
func (c *conn) accept(pc *pendingConnect) bool {
	l := c.l
	b := l.b
	if pc.hasUser {
		c.ext().id.user, c.x.id.hasUser = pc.user, true
	}
	var perms Permissions
	if az := b.authz.Load(); az != nil && (c.x == nil || !c.x.id.apiKey) {
		perms = az.a.For(Identity{Username: pc.user, HasUsername: pc.hasUser, ClientID: pc.id})
		c.ext().id.perms.Store(&permsRef{perms})
	}
	if pc.will != nil && perms != nil && !perms.CanWrite(pc.will.topic) {
		// Mosquitto checks the will topic against the ACL at CONNECT and
		// refuses the connection.
		l.stats.aclDenied[aclPublish].Add(1)
		c.refuse(codec.NotAuthorized)
		c.closeReason = closeNotAuthorized
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("connection refused: will topic not authorized", "client", pc.id, "user", pc.user,
				"topic", string(pc.will.topic))
		}
		return false
	}
	c.will = pc.will
	c.keepAlive = pc.keepAlive
	if pc.v5 != nil {
		c.keepAlive = b.keepAlive5(pc.keepAlive) // 5.0 Server Keep Alive
	}
	c.lastSeen = uint32(b.now.Load()) // keep-alive counts from the accepted CONNECT

	s, present := b.attach(c, pc)
	// Move c's wheel slot from the connect deadline to its keep-alive one.
	l.wheel.remove(c)
	l.wheel.add(c, c.deadline())

	s.mu.Lock()
	// CONNACK first, then the session's unacknowledged and queued messages.
	ack := codec.Connack{SessionPresent: present, ReturnCode: codec.ConnAccepted} // [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.2-3]
	if pc.v5 != nil {
		b.connackProps5(&ack.Props, pc, c)
	}
	s.buf().B = ack.AppendTo(s.buf().B, c.version)
	if present {
		s.resendLocked(b)
		s.drainLocked(b)
	}
	s.mu.Unlock()
	l.r.markDirty(s, l)
	if b.opts.Verbose {
		b.log.Info("client connected", "client", pc.id, "remote", c.remote(), "user", pc.user,
			"protocol", c.version.String(), "clean", pc.clean, "keepalive", pc.keepAlive, "session_present", present)
	}
	return true
}

// resume handles what a connection buffered while its CONNECT (or HTTP
// request) waited for a verdict: no new read event will come for bytes
// that already arrived. Runs on c's loop.
func (c *conn) resume() {
	c.need = 0
	if c.l.b.OnTraffic(c.gc) == gnet.Close {
		_ = c.gc.Close()
	}
}

// refuse writes a CONNACK with a refusal straight to the socket (there is
// no session to buffer it in). Runs on c's loop.
func (c *conn) refuse(rc codec.ReasonCode) { c.refuse5(rc, "") }

// refuse5 is refuse with a v5 Server Reference (ignored for 3.x).
func (c *conn) refuse5(rc codec.ReasonCode, ref string) {
	ack := codec.Connack{Reason: rc, ReturnCode: codec.ConnackReturnCode(rc)}
	if ref != "" && c.version == codec.V5 {
		ack.Props.ServerReference = []byte(ref)
		ack.Props.Set(codec.PropServerReference)
	}
	c.l.outBuf = ack.AppendTo(c.l.outBuf[:0], c.version)
	c.write(c.l.outBuf)
}

// attach binds c to the session of id, creating, resuming or replacing it,
// and closes a connection that held the id before [MQTT-3.1.4-2]. It reports
// whether a previous session was resumed ("session present"). Runs on c's
// loop.
func (b *Broker) attach(c *conn, pc *pendingConnect) (*session, bool) {
	id, clean := pc.id, pc.clean
	now := b.now.Load()
	b.sessMu.Lock()
	old := b.sessions.Get(id)
	var (
		s       *session
		present bool
		kicked  *conn
		discard *session
		orphans []sharedMsg // the discarded session's shared-group messages
		ended   *sessionEnd // and those it held in the store only
	)
	if old != nil {
		old.mu.Lock()
		kicked = old.c
		old.c = nil
		if v := old.v5(); v != nil {
			v.dwill = nil // [MQTT5-3.1.3-9]: a new connection in time cancels a delayed will
		}
		expired := old.c == nil && old.since != 0 && now-int64(old.since) > int64(old.expirySecs(b))
		if clean || old.clean || expired {
			// [MQTT-3.1.2-6]: a clean connect discards the previous
			// session; so does an expired one not yet swept.
			old.dead = true
			orphans = old.takeSharedLocked()
			ended = b.persistEnd(old) // persist.go
			old.clearLocked()
			discard = old
		} else {
			s, present = old, true // [MQTT-3.2.2-2]
		}
		old.mu.Unlock()
	}
	if s == nil {
		s = &session{id: id, clean: clean}
		b.sessions.Put(s)
	}
	s.mu.Lock()
	s.c, s.version = c, c.version
	if pc.v5 != nil {
		// Fresh connection state: aliases are never carried over (5.0
		// [MQTT5-3.3.2-7]).
		s.state().v5 = pc.v5.session(b)
		s.clean = s.st.v5.expiry == 0 // the session ends with the connection
	} else {
		if s.st != nil {
			s.st.v5 = nil
		}
		s.clean = clean
	}
	// Bytes encoded for the previous connection (and released for it,
	// persist.go): its acks and packet ids mean nothing to the new one,
	// and CONNACK must come first. In-flight messages are re-sent; QoS 0
	// ones are at most once.
	s.dropOutLocked()
	s.outBuffered = 0
	s.fullSince = 0
	s.since = uint32(now)
	b.persistOnline(s) // persist.go
	s.mu.Unlock()
	c.s = s
	b.sessMu.Unlock()

	if discard != nil {
		b.dropSubscriptions(discard)
		c.l.redistribute(orphans) // to the groups' other members
		ended.left(b)             // shared.go: and what it held in the store, once read
	}
	if kicked != nil {
		if b.opts.Verbose {
			b.log.Info("session taken over", "client", id)
		}
		if kicked.l == c.l {
			kicked.closeWith(codec.SessionTakenOver, closeTakenOver) // 5.0: DISCONNECT 0x8E
		} else if kicked.closeOnLoop(codec.SessionTakenOver, closeTakenOver) != nil {
			_ = kicked.gc.Close() // shutting down: close it anyway
		}
	}
	return s, present
}

// detach ends c's hold on its session: a clean session is discarded, a
// persistent one goes offline and starts queueing [MQTT-3.1.2-4]
// [MQTT-3.1.2-5]. It reports whether the session lives on with another
// connection that resumed it (a takeover with clean session 0 on both
// sides): then c's will is not published, as Mosquitto 2.0 does
// [MQTT-3.1.4-2]. Runs on c's loop.
func (b *Broker) detach(c *conn) (resumed bool) {
	s := c.s
	b.sessMu.Lock()
	s.mu.Lock()
	if s.c != c { // taken over: the session belongs to the new connection
		resumed = !s.dead // a clean takeover discarded it (dead), a resume kept it
		s.mu.Unlock()
		b.sessMu.Unlock()
		return resumed
	}
	s.c = nil
	s.dropOutLocked() // unsent bytes; in-flight messages are resent on return
	s.outBuffered = 0
	drop := s.clean
	var orphans []sharedMsg
	if drop {
		s.dead = true
		orphans = s.takeSharedLocked()
		b.persistDiscard(s) // persist.go (a clean session has nothing in the store)
		s.clearLocked()
		b.sessions.Remove(s)
	} else {
		s.since = uint32(b.now.Load())
		b.persistOffline(s) // persist.go
	}
	s.mu.Unlock()
	b.sessMu.Unlock()
	if drop {
		b.dropSubscriptions(s)
		c.l.redistribute(orphans) // shared-group messages go to another member (shared.go)
	}
	return false
}

// expireSessions discards persistent sessions that have been offline for
// SessionExpiry or longer: queue, in-flight state and subscriptions, as a
// clean connect would. Each call visits a few index shards, enough that the
// whole index is swept within min(SessionExpiry/2, 32 s), so sessMu is held
// for a 1/64 share of the sessions at a time, not all of them. Ticker
// goroutine (OnTick).
func (b *Broker) expireSessions(now int64) {
	// Shards per tick so that a sweep of all of them takes at most
	// min(exp/2, 32 s): 64 shards at 0.5 s a tick take 32 s at one a tick.
	// v5 sessions carry their own expiry; a client that returns before
	// the sweep finds an expired session gone all the same (attach).
	exp := b.opts.SessionExpiry
	if exp <= 0 {
		exp = indexShards * tickInterval * 2
	}
	sweep := max(min(exp/2, indexShards*tickInterval), tickInterval)
	per := int((indexShards*tickInterval + sweep - 1) / sweep)
	var (
		dead    []*session
		orphans []sharedMsg
		ended   []*sessionEnd // shared.go: the members' messages in the store only
	)
	b.sessMu.Lock()
	for range per {
		sh := &b.sessions.shards[b.sweepNext]
		b.sweepNext = (b.sweepNext + 1) % indexShards
		for _, s := range sh.slots {
			if s == nil {
				continue
			}
			s.mu.Lock()
			if s.c == nil && !s.clean && s.since != 0 && now-int64(s.since) > int64(s.expirySecs(b)) {
				s.dead = true // routers holding it skip it from now on
				orphans = append(orphans, s.takeSharedLocked()...)
				if e := b.persistEnd(s); e != nil { // persist.go
					ended = append(ended, e)
				}
				s.clearLocked()
				dead = append(dead, s)
			}
			s.mu.Unlock()
		}
	}
	for _, s := range dead {
		b.sessions.Remove(s) // after the scan: removal shifts slots
	}
	b.sessMu.Unlock()
	for _, s := range dead {
		b.dropSubscriptions(s)
		b.counters.expired.Add(1)
		if b.opts.Verbose {
			b.log.Info("session expired", "client", s.id)
		}
	}
	b.redistributeAnywhere(orphans) // after dropSubscriptions: not to the expired members
	for _, e := range ended {
		e.left(b) // shared.go: what they held in the store goes on once read
	}
}

// dropSubscriptions removes every subscription of a discarded session from
// the trie. Any goroutine.
func (b *Broker) dropSubscriptions(s *session) {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for _, e := range subs {
		b.subs.Unsubscribe([]byte(e.filter), s)
	}
}

// validName checks a PUBLISH or will topic name against the spec and the
// configured limits. Any goroutine.
func (b *Broker) validName(name []byte) error {
	return topic.ValidateName(name, b.limits)
}

// publishOwned routes an owned message (a will or a $SYS value). Runs on
// r's loop or the $SYS goroutine.
func (r *router) publishOwned(m *message) {
	r.publish(m.topic, m.payload, m.qos, m.retain, m)
}
