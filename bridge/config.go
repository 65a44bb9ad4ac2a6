package bridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// Direction says which way a topic line carries messages.
type Direction uint8

// Directions of a topic line (Mosquitto's out, in and both).
const (
	Out  Direction = 1 // local -> remote
	In   Direction = 2 // remote -> local
	Both Direction = Out | In
)

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return "none"
}

// Topic is one `topic PATTERN [out|in|both] [QOS] [LOCAL_PREFIX]
// [REMOTE_PREFIX]` line. The local filter is LocalPrefix+Pattern, the
// remote one RemotePrefix+Pattern; a message crossing the bridge has the
// one prefix replaced by the other.
type Topic struct {
	Pattern      string
	Dir          Direction
	QoS          uint8
	LocalPrefix  string
	RemotePrefix string
}

// LocalFilter is the filter the bridge subscribes to on this broker (out).
func (t *Topic) LocalFilter() string { return t.LocalPrefix + t.Pattern }

// RemoteFilter is the filter the bridge subscribes to on the remote (in).
func (t *Topic) RemoteFilter() string { return t.RemotePrefix + t.Pattern }

// Config is one bridge: a `connection NAME` section and the lines after
// it. Defaults are Mosquitto 2.0's unless docs/bridge.md says otherwise.
type Config struct {
	Name  string
	Where string // file:line of the connection line

	Addresses  []string // host:port, tried in order
	RoundRobin bool     // after a failure, go on with the next address instead of starting over
	Topics     []Topic

	RemoteClientID              string // default: hostname.NAME
	RemoteUsername              string
	RemotePassword              string
	HasRemoteUser, HasRemotePwd bool
	LocalClientID               string // default: local.REMOTE_CLIENTID
	LocalUsername               string // default: the broker's own bridge credentials
	LocalPassword               string
	HasLocalUser                bool

	CleanSession      bool          // remote session (default false: the remote queues for the bridge)
	LocalCleanSession bool          // local session (default: CleanSession)
	KeepAlive         time.Duration // default 60 s
	ProtocolVersion   codec.Version // V311 (default) or V5
	TryPrivate        bool          // 3.1.1: send Mosquitto's bridge bit (default true)
	OutgoingRetain    bool          // keep the retain flag on messages sent to the remote (default true)
	MaxPacketSize     int           // largest packet accepted from the remote (0: 2 MiB + 64 KiB)

	// TLS to the remote: on when CAFile or CAPath is set.
	CAFile, CAPath     string
	CertFile, KeyFile  string
	Insecure           bool   // do not check the remote's host name (the chain is still verified)
	TLSVersion         string // minimum: tlsv1.2 (default) or tlsv1.3
	Notifications      bool   // retained "1"/"0" on NotificationTopic (default true)
	NotificationTopic  string // default $SYS/broker/connection/NAME/state
	RestartBase        time.Duration
	RestartCap         time.Duration // 0: constant RestartBase
	restartSet, hasLCS bool
}

// TLS reports whether the remote connection uses TLS.
func (c *Config) TLS() bool { return c.CAFile != "" || c.CAPath != "" }

// keys are the bridge keys the parser accepts (Mosquitto's names; a few
// of its aliases too). Any other key inside a connection section is not a
// bridge key and goes back to the caller.
var keys = map[string]bool{
	"connection": true, "address": true, "addresses": true, "round_robin": true, "topic": true,
	"remote_clientid": true, "clientid": true, "remote_username": true, "username": true,
	"remote_password": true, "password": true, "local_clientid": true, "local_username": true,
	"local_password": true, "cleansession": true, "local_cleansession": true,
	"keepalive_interval": true, "bridge_protocol_version": true, "try_private": true,
	"bridge_outgoing_retain": true, "bridge_max_packet_size": true,
	"bridge_cafile": true, "bridge_capath": true, "bridge_certfile": true, "bridge_keyfile": true,
	"bridge_insecure": true, "bridge_tls_version": true, "notifications": true,
	"notifications_local_only": true, "notification_topic": true, "restart_timeout": true,
	"start_type": true, "bridge_attempt_unsubscribe": true,
	// Mosquitto keys TinyMQ does not implement: recognised, so that the
	// error says "not supported" rather than "unknown".
	"idle_timeout": true, "threshold": true, "bridge_bind_address": true, "bridge_identity": true,
	"bridge_psk": true, "bridge_alpn": true, "bridge_ciphers": true, "bridge_require_ocsp": true,
	"bridge_tls_use_os_certs": true, "bridge_reload_type": true,
}

var unsupported = map[string]string{
	"idle_timeout":            "lazy and once start types are not supported",
	"threshold":               "lazy and once start types are not supported",
	"bridge_bind_address":     "binding the bridge to a local address is not supported",
	"bridge_identity":         "TLS-PSK is not supported (crypto/tls has no PSK)",
	"bridge_psk":              "TLS-PSK is not supported (crypto/tls has no PSK)",
	"bridge_alpn":             "ALPN is not supported",
	"bridge_ciphers":          "cipher lists are not supported (Go's defaults are used)",
	"bridge_require_ocsp":     "OCSP is not supported",
	"bridge_tls_use_os_certs": "use bridge_cafile or bridge_capath",
	"bridge_reload_type":      "bridges are not reloaded",
}

// IsKey reports whether key is a bridge configuration key.
func IsKey(key string) bool { return keys[key] }

// Parser collects bridge sections line by line, as cmd/tinymq reads its
// config file.
type Parser struct {
	cfgs []Config
	cur  *Config
}

// Line applies one `key value` line; from is "file:line" for errors. A
// key outside any connection section is an error. Not safe for
// concurrent use.
func (p *Parser) Line(from, key, value string) error {
	key = strings.ToLower(key)
	if !keys[key] {
		return fmt.Errorf("%s: unknown bridge setting %q", from, key)
	}
	if why, ok := unsupported[key]; ok {
		return fmt.Errorf("%s: %s: %s", from, key, why)
	}
	if key == "connection" {
		name := strings.TrimSpace(value)
		if name == "" || strings.ContainsAny(name, " \t/+#") {
			return fmt.Errorf("%s: connection: want a name without spaces, '/', '+' or '#', got %q", from, value)
		}
		for _, c := range p.cfgs {
			if c.Name == name {
				return fmt.Errorf("%s: connection %q: already defined at %s", from, name, c.Where)
			}
		}
		p.cfgs = append(p.cfgs, Config{Name: name, Where: from, KeepAlive: 60 * time.Second,
			ProtocolVersion: codec.V311, TryPrivate: true, OutgoingRetain: true, Notifications: true,
			RestartBase: 5 * time.Second, RestartCap: 30 * time.Second})
		p.cur = &p.cfgs[len(p.cfgs)-1]
		return nil
	}
	c := p.cur
	if c == nil {
		return fmt.Errorf("%s: %s: bridge setting before any \"connection NAME\" line", from, key)
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s: %s", from, key, fmt.Sprintf(format, a...))
	}
	value = strings.TrimSpace(value)
	one := func() (string, error) {
		if value == "" || len(strings.Fields(value)) != 1 {
			return "", fail("want one value, got %q", value)
		}
		return unquote(value), nil
	}
	boolean := func(dst *bool) error {
		v, err := one()
		if err != nil {
			return err
		}
		switch strings.ToLower(v) {
		case "true", "1", "on", "yes":
			*dst = true
		case "false", "0", "off", "no":
			*dst = false
		default:
			return fail("want true or false, got %q", v)
		}
		return nil
	}
	str := func(dst *string, flag *bool) error {
		v, err := one()
		if err != nil {
			return err
		}
		*dst = v
		if flag != nil {
			*flag = true
		}
		return nil
	}
	file := func(dst *string) error {
		v, err := one()
		if err != nil {
			return err
		}
		if _, err := os.Stat(v); err != nil {
			return fail("%v", err)
		}
		*dst = v
		return nil
	}
	switch key {
	case "address", "addresses":
		for _, a := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			addr, err := normAddr(a)
			if err != nil {
				return fail("%v", err)
			}
			c.Addresses = append(c.Addresses, addr)
		}
		if len(c.Addresses) == 0 {
			return fail("want host:port[,host:port...]")
		}
	case "round_robin":
		return boolean(&c.RoundRobin)
	case "topic":
		t, err := parseTopic(value)
		if err != nil {
			return fail("%v", err)
		}
		c.Topics = append(c.Topics, t)
	case "remote_clientid", "clientid":
		return str(&c.RemoteClientID, nil)
	case "remote_username", "username":
		return str(&c.RemoteUsername, &c.HasRemoteUser)
	case "remote_password", "password":
		return str(&c.RemotePassword, &c.HasRemotePwd)
	case "local_clientid":
		return str(&c.LocalClientID, nil)
	case "local_username":
		return str(&c.LocalUsername, &c.HasLocalUser)
	case "local_password":
		return str(&c.LocalPassword, nil)
	case "cleansession":
		return boolean(&c.CleanSession)
	case "local_cleansession":
		c.hasLCS = true
		return boolean(&c.LocalCleanSession)
	case "keepalive_interval":
		d, err := seconds(value)
		if err != nil || d < time.Second || d > 65535*time.Second {
			return fail("want seconds from 1 to 65535, got %q", value)
		}
		c.KeepAlive = d
	case "bridge_protocol_version":
		v, err := one()
		if err != nil {
			return err
		}
		switch strings.ToLower(v) {
		case "mqttv311":
			c.ProtocolVersion = codec.V311
		case "mqttv50":
			c.ProtocolVersion = codec.V5
		case "mqttv31":
			return fail("mqttv31 is not supported: use mqttv311 or mqttv50")
		default:
			return fail("want mqttv311 or mqttv50, got %q", v)
		}
	case "try_private":
		return boolean(&c.TryPrivate)
	case "bridge_outgoing_retain":
		return boolean(&c.OutgoingRetain)
	case "bridge_max_packet_size":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > codec.MaxRemaining {
			return fail("want bytes, got %q", v)
		}
		c.MaxPacketSize = n
	case "bridge_cafile":
		return file(&c.CAFile)
	case "bridge_capath":
		return file(&c.CAPath)
	case "bridge_certfile":
		return file(&c.CertFile)
	case "bridge_keyfile":
		return file(&c.KeyFile)
	case "bridge_insecure":
		return boolean(&c.Insecure)
	case "bridge_tls_version":
		v, err := one()
		if err != nil {
			return err
		}
		switch strings.ToLower(v) {
		case "tlsv1.2", "tlsv1.3":
			c.TLSVersion = strings.ToLower(v)
		default:
			return fail("want tlsv1.2 or tlsv1.3, got %q", v)
		}
	case "notifications":
		return boolean(&c.Notifications)
	case "notifications_local_only":
		var b bool
		return boolean(&b) // notifications are always local only (docs/bridge.md)
	case "notification_topic":
		v, err := one()
		if err != nil {
			return err
		}
		if err := topic.ValidateName([]byte(v), topic.Limits{}); err != nil {
			return fail("%v", err)
		}
		c.NotificationTopic = v
	case "restart_timeout":
		f := strings.Fields(value)
		if len(f) < 1 || len(f) > 2 {
			return fail("want BASE [CAP] seconds, got %q", value)
		}
		base, err := seconds(f[0])
		if err != nil || base <= 0 {
			return fail("want BASE [CAP] seconds, got %q", value)
		}
		c.RestartBase, c.RestartCap, c.restartSet = base, 0, true
		if len(f) == 2 {
			cp, err := seconds(f[1])
			if err != nil || cp < base {
				return fail("CAP must be seconds not below BASE, got %q", value)
			}
			c.RestartCap = cp
		}
	case "start_type":
		v, err := one()
		if err != nil {
			return err
		}
		if v != "automatic" {
			return fail("only automatic is supported, got %q", v)
		}
	case "bridge_attempt_unsubscribe":
		var b bool
		return boolean(&b) // nothing to unsubscribe: topics change only at a restart
	}
	return nil
}

// Finish checks every section and fills the defaults that depend on
// other keys. hostname names the default remote client id (hostname.NAME).
func (p *Parser) Finish(hostname string) ([]Config, error) {
	var errs []error
	for i := range p.cfgs {
		c := &p.cfgs[i]
		where := c.Where + ": connection " + c.Name
		if len(c.Addresses) == 0 {
			errs = append(errs, fmt.Errorf("%s: no address", where))
		}
		if len(c.Topics) == 0 {
			errs = append(errs, fmt.Errorf("%s: no topic", where))
		}
		if c.HasRemotePwd && !c.HasRemoteUser && c.ProtocolVersion != codec.V5 {
			errs = append(errs, fmt.Errorf("%s: remote_password without remote_username (MQTT 3.1.1 forbids it)", where))
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			errs = append(errs, fmt.Errorf("%s: bridge_certfile and bridge_keyfile go together", where))
		}
		if (c.CertFile != "" || c.Insecure || c.TLSVersion != "") && !c.TLS() {
			errs = append(errs, fmt.Errorf("%s: TLS settings without bridge_cafile or bridge_capath", where))
		}
		if c.RemoteClientID == "" {
			c.RemoteClientID = hostname + "." + c.Name
		}
		if c.LocalClientID == "" {
			c.LocalClientID = "local." + c.RemoteClientID
		}
		if !c.hasLCS {
			c.LocalCleanSession = c.CleanSession
		}
		if c.NotificationTopic == "" {
			c.NotificationTopic = "$SYS/broker/connection/" + c.Name + "/state"
		}
		if !strings.HasPrefix(c.NotificationTopic, "$SYS/") && c.Notifications {
			errs = append(errs, fmt.Errorf("%s: notification_topic must be under $SYS/ (it is published by the broker)", where))
		}
		if c.MaxPacketSize == 0 {
			c.MaxPacketSize = 2*1024*1024 + 64*1024
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p.cfgs, nil
}

// parseTopic reads `PATTERN [out|in|both] [QOS] [LOCAL_PREFIX]
// [REMOTE_PREFIX]`; "" is an empty word, as in Mosquitto (a pattern of ""
// bridges exactly the prefixes' topic).
func parseTopic(value string) (Topic, error) {
	f := strings.Fields(value)
	t := Topic{Dir: Out}
	if len(f) == 0 || len(f) > 5 {
		return t, errors.New("want PATTERN [out|in|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]")
	}
	t.Pattern = unquote(f[0])
	if len(f) > 1 {
		switch strings.ToLower(f[1]) {
		case "out":
			t.Dir = Out
		case "in":
			t.Dir = In
		case "both":
			t.Dir = Both
		default:
			return t, fmt.Errorf("direction %q: want out, in or both", f[1])
		}
	}
	if len(f) > 2 {
		q, err := strconv.Atoi(f[2])
		if err != nil || q < 0 || q > 2 {
			return t, fmt.Errorf("QoS %q: want 0, 1 or 2", f[2])
		}
		t.QoS = uint8(q)
	}
	if len(f) == 4 {
		return t, errors.New("a local prefix needs a remote prefix too (\"\" for none)")
	}
	if len(f) == 5 {
		t.LocalPrefix, t.RemotePrefix = unquote(f[3]), unquote(f[4])
	}
	if t.Pattern == "" && (t.LocalPrefix == "" || t.RemotePrefix == "") {
		return t, errors.New("an empty pattern needs both prefixes")
	}
	for _, flt := range []string{t.LocalFilter(), t.RemoteFilter()} {
		if err := topic.ValidateFilter([]byte(flt), topic.Limits{}); err != nil {
			return t, fmt.Errorf("filter %q: %v", flt, err)
		}
	}
	for _, pre := range []string{t.LocalPrefix, t.RemotePrefix} {
		if strings.ContainsAny(pre, "+#") {
			return t, fmt.Errorf("prefix %q has a wildcard", pre)
		}
	}
	return t, nil
}

// unquote turns `""` into "" and strips one pair of surrounding quotes.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// normAddr checks host[:port], defaulting the port to 1883 as Mosquitto
// does.
func normAddr(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			host, port = strings.Trim(a, "[]"), "1883"
		} else {
			return "", fmt.Errorf("address %q: %v", a, err)
		}
	}
	if host == "" {
		return "", fmt.Errorf("address %q: no host", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: bad port", a)
	}
	return net.JoinHostPort(host, port), nil
}

// seconds reads a Mosquitto count of seconds; a Go duration ("250ms") or
// a fraction ("0.5") is accepted too.
func seconds(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > 1e6 {
			return 0, errors.New("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}
