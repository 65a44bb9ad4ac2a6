// Command tinymq runs the TinyMQ MQTT broker.
//
// Every flag can also be set with an environment variable TINYMQ_<NAME>
// (upper case, dashes as underscores) or in a --config file of
// "name = value" lines; a flag on the command line wins over the
// environment, which wins over the file. See docs/configuration.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tinymq/tinymq/bridge"
	"github.com/tinymq/tinymq/engine"
	"github.com/tinymq/tinymq/engine/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		os.Exit(passwdMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "store" {
		os.Exit(storeMain(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	if err := run(os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tinymq:", err)
		os.Exit(1)
	}
}

// config is what the command line, environment and config file produce.
type config struct {
	opts            engine.Options
	mqttDisable     bool
	logLevel        string
	logFormat       string // text or json
	checkOnly       bool   // --check-config: validate and exit
	cpuProfile      string // pprof CPU profile of the whole run, written at shutdown
	heapProfile     string // pprof heap profile, written at shutdown
	proxyProto      string // --proxy-protocol: comma-separated listener names
	writeCoalesceUs int    // --write-coalesce, microseconds
	bridges         []bridge.Config
}

// maxWriteCoalesceUs bounds --write-coalesce: a hold longer than 100 ms
// would be latency no one asks for by mistake.
const maxWriteCoalesceUs = 100_000

// parse builds the configuration from args, the environment (getenv) and
// an optional config file.
func parse(args []string, getenv func(string) string) (*config, error) {
	d := engine.DefaultOptions()
	cfg := &config{opts: d}
	o := &cfg.opts
	fs := flag.NewFlagSet("tinymq", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configFile := fs.String("config", "", "read settings from this file (name = value lines)")
	fs.StringVar(&o.MQTTAddr, "mqtt-addr", d.MQTTAddr, "MQTT listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&o.HTTPAddr, "http-addr", d.HTTPAddr, "HTTP listen address: publish, SSE, retained, /metrics, health, API and MQTT over WebSocket at /mqtt (empty: off)")
	fs.StringVar(&o.WSAddr, "ws-addr", "", "extra listener serving only MQTT over WebSocket, e.g. :1884 (empty: off)")
	fs.StringVar(&o.TLSAddr, "tls-addr", "", "MQTT over TLS listen address (default :8883 when --tls-cert is given; empty: off)")
	fs.StringVar(&o.HTTPSAddr, "https-addr", "", "HTTPS listen address: the HTTP door (API, SSE, wss:// at /mqtt) over TLS (empty: off)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "server certificate (chain) PEM file")
	fs.StringVar(&o.TLSKey, "tls-key", "", "server private key PEM file")
	fs.StringVar(&o.TLSClientCA, "tls-client-ca", "", "PEM file of CAs that client certificates must verify against (mTLS)")
	fs.BoolVar(&o.TLSRequireCert, "tls-require-cert", false, "fail the TLS handshake of clients without a valid certificate (needs --tls-client-ca)")
	fs.BoolVar(&o.TLSCertAsUsername, "tls-cert-as-username", false, "use the verified client certificate's Subject CN as the MQTT username")
	fs.IntVar(&o.TLSHandshakeWorkers, "tls-handshake-workers", 0, "most TLS handshakes running at once (0: 2 per CPU, at least 4)")
	fs.StringVar(&cfg.proxyProto, "proxy-protocol", "", "listeners expecting a PROXY protocol v2/v1 header first: comma-separated mqtt, tls, http, https, ws")
	fs.IntVar(&o.HTTPMaxHeaderBytes, "http-max-header-bytes", d.HTTPMaxHeaderBytes, "largest HTTP request line plus headers, in bytes (431 above)")
	fs.IntVar(&o.HTTPMaxHeaders, "http-max-headers", d.HTTPMaxHeaders, "most HTTP header lines per request (431 above)")
	fs.DurationVar(&o.HTTPIdleTimeout, "http-idle-timeout", d.HTTPIdleTimeout, "close idle keep-alive HTTP connections after this")
	fs.DurationVar(&o.HTTPReadTimeout, "http-read-timeout", d.HTTPReadTimeout, "a request must arrive whole within this")
	fs.DurationVar(&o.SSEHeartbeat, "sse-heartbeat", d.SSEHeartbeat, "comment line sent on idle SSE streams this often")
	fs.IntVar(&o.MaxPacketSize, "max-packet-size", d.MaxPacketSize, "largest MQTT packet accepted, in bytes, headers included")
	fs.IntVar(&o.MaxConnections, "max-connections", 0, "maximum concurrent connections (0: unlimited)")
	fs.Float64Var(&o.MaxConnRate, "max-conn-rate", 0, "new MQTT connections per second per source address (IPv6: per /64); over it CONNECT is deferred (0: off)")
	fs.IntVar(&o.MaxConnBurst, "max-conn-burst", 0, "connections a source may open at once before --max-conn-rate applies (0: one second's worth)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", d.ConnectTimeout, "close sockets that send no CONNECT within this time")
	fs.IntVar(&o.MaxClientIDLen, "max-client-id-len", d.MaxClientIDLen, "longest client identifier accepted, in bytes")
	fs.IntVar(&o.MaxTopicLen, "max-topic-len", d.MaxTopicLen, "longest topic name or filter, in bytes")
	fs.IntVar(&o.MaxTopicLevels, "max-topic-levels", d.MaxTopicLevels, "most levels in a topic name or filter")
	fs.IntVar(&o.MaxSubsPerConn, "max-subscriptions", d.MaxSubsPerConn, "subscriptions per session (0: unlimited)")
	fs.IntVar(&o.MaxInflight, "max-inflight", d.MaxInflight, "outbound QoS 1/2 messages awaiting acknowledgement per session")
	fs.IntVar(&o.MaxQueuedMsgs, "max-queued-messages", d.MaxQueuedMsgs, "messages queued per session while offline or slow")
	fs.IntVar(&o.MaxQueuedBytes, "max-queued-bytes", d.MaxQueuedBytes, "payload bytes queued per session")
	fs.BoolVar(&o.QueueQoS0, "queue-qos0", false, "also queue QoS 0 messages for offline persistent sessions")
	fs.IntVar(&o.MaxOutboundBytes, "max-outbound-bytes", d.MaxOutboundBytes, "unsent bytes per connection above which QoS 0 messages are dropped")
	fs.DurationVar(&o.SlowConsumerAfter, "slow-consumer-timeout", d.SlowConsumerAfter, "disconnect a client whose queue stays full this long")
	fs.DurationVar(&o.SessionExpiry, "session-expiry", 0, "discard persistent sessions offline this long (0: never)")
	fs.StringVar(&o.DataDir, "data-dir", "./data", "directory of the durable state (retained messages, persistent sessions, delayed wills)")
	fs.BoolVar(&o.Persistence, "persistence", true, "keep retained messages and persistent sessions in --data-dir across restarts (false: memory only)")
	fsync := fs.String("fsync", "interval", "when a write is durable: always (QoS 1/2 acknowledged once synced), interval (synced every --fsync-interval) or none (the OS decides)")
	fs.DurationVar(&o.FsyncInterval, "fsync-interval", time.Second, "how often --fsync interval syncs the write-ahead log")
	fs.StringVar(&o.CheckpointDir, "checkpoint-dir", "", "where POST /api/v1/store/checkpoint (tinymq store checkpoint) writes its copies, one subdirectory per name (default: --data-dir with -checkpoints appended)")
	fs.Var(secondsValue{&o.MaxSessionExpiry}, "max-session-expiry", "cap on the Session Expiry Interval an MQTT 5 client may ask for: a `duration` of whole seconds (0: no cap)")
	fs.Var(rangeInt{&o.MaxKeepAlive, 1, 65535}, "max-keepalive", "longest keep-alive in `seconds`, 1 to 65535 (Mosquitto's max_keepalive): MQTT 5 clients asking for more (or for none, when this is below 65535) are told this; 3.x clients asking for more are refused")
	fs.Var(rangeInt{&o.ReceiveMaximum, 1, 65535}, "receive-maximum", "`count` (1 to 65535) of QoS 1/2 PUBLISHes a client may have unacknowledged by the broker (announced to MQTT 5 clients)")
	fs.Var(rangeInt{&o.MaxTopicAlias, 0, 65535}, "max-topic-alias", "`count` (0 to 65535) of topic aliases an MQTT 5 client may set (Mosquitto's max_topic_alias; 0: none)")
	fs.Var(rangeInt{&o.MaxTopicAliasOut, 0, 65535}, "max-topic-alias-out", "`count` (0 to 65535) of topic aliases the broker assigns per MQTT 5 connection for topics it sends (0: never)")
	fs.StringVar(&o.ServerReference, "server-reference", "", "redirect every client to this server: MQTT 5 CONNECTs are refused with 0x9C (0x9D with --server-moved) naming it, 3.x with CONNACK 3")
	fs.BoolVar(&o.ServerMoved, "server-moved", false, "the --server-reference redirect is permanent (0x9D server moved, not 0x9C use another server)")
	fs.StringVar(&o.ResponseInformation, "response-information", "", "base of response topics sent to MQTT 5 clients that request response information; the client id is appended (empty: none)")
	fs.StringVar(&o.SharedStrategy, "shared-strategy", engine.SharedRoundRobin, "which member of a $share group gets a message: round_robin, random or least_loaded (members that cannot take it now are skipped)")
	fs.BoolVar(&o.ReturnIdleMemory, "return-idle-memory", d.ReturnIdleMemory, "give free heap pages back to the OS when a burst of allocation (a connect storm) is over")
	fs.DurationVar(&o.SysInterval, "sys-interval", d.SysInterval, "how often $SYS topics are published (0 or negative: never)")
	fs.StringVar(&o.PasswordFile, "password-file", "", "Mosquitto password file (mosquitto_passwd or `tinymq passwd`): users and their hashed passwords")
	fs.StringVar(&o.ACLFile, "acl-file", "", "Mosquitto ACL file: what each user may publish and receive")
	allowAnon := fs.Bool("allow-anonymous", true, "admit clients without username and password (default: true unless an API key or a password file is set)")
	fs.IntVar(&o.AuthWorkers, "auth-workers", 0, "goroutines verifying passwords off the event loops (default: 2 per CPU)")
	fs.DurationVar(&o.AuthFailDelayMax, "auth-fail-delay-max", d.AuthFailDelayMax, "longest delay before refusing an address whose logins keep failing (negative: never delay)")
	fs.IntVar(&o.Loops, "loops", d.Loops, "event loops (default: 1 on up to 2 CPUs, else one per CPU)")
	fs.BoolVar(&o.WriteEachRead, "write-each-read", false, "write a connection's output after every read that produced it, not once per event-loop wake-up (the behaviour before 2026-12; ignored with --write-coalesce)")
	fs.IntVar(&cfg.writeCoalesceUs, "write-coalesce", 0, "microseconds a connection's output may wait for more messages to leave in the same write (0: write at the end of every read batch)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log lines as text (key=value) or json (one JSON object a line)")
	fs.BoolVar(&cfg.checkOnly, "check-config", false, "validate the configuration (flags, environment, --config file with its bridge sections, password, ACL and TLS files) and exit: 0 and a summary when it is good, 1 and the file, line and reason when not")
	fs.StringVar(&cfg.cpuProfile, "cpu-profile", "", "write a pprof CPU profile of the run to this file at shutdown")
	fs.StringVar(&cfg.heapProfile, "heap-profile", "", "write a pprof heap profile to this file at shutdown")
	fs.BoolVar(&o.Verbose, "v", false, "log every connect, disconnect (with reason) and subscribe")
	fs.BoolVar(&cfg.mqttDisable, "mqtt-disable", false, "do not open the MQTT listener")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Environment, then the file, for whatever the command line left unset.
	apply := func(name, value, from string) error {
		if set[name] {
			return nil
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("%s: unknown setting %q", from, name)
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("%s: %s: %w", from, name, err)
		}
		set[name] = true
		return nil
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "TINYMQ_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && envErr == nil {
			envErr = apply(f.Name, v, env)
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	// The TinyMQ gateway's variables.
	if p := getenv("TINYMQ_MQTT_PORT"); p != "" && !set["mqtt-addr"] {
		host, _, _ := net.SplitHostPort(o.MQTTAddr)
		o.MQTTAddr = net.JoinHostPort(host, p)
		set["mqtt-addr"] = true
	}
	if *configFile != "" {
		var bp bridge.Parser
		if err := readConfig(*configFile, apply, &bp); err != nil {
			return nil, err
		}
		host, _ := os.Hostname()
		if host == "" {
			host = "tinymq"
		}
		bs, err := bp.Finish(host)
		if err != nil {
			return nil, err
		}
		cfg.bridges = bs
	}
	if o.TLSCert != "" && !set["tls-addr"] {
		o.TLSAddr = ":8883"
	}
	for _, name := range strings.Split(cfg.proxyProto, ",") {
		if name = strings.TrimSpace(name); name != "" {
			o.ProxyProtocol = append(o.ProxyProtocol, name)
		}
	}
	f, err := store.ParseFsync(*fsync)
	if err != nil {
		return nil, fmt.Errorf("--fsync: %w", err)
	}
	o.Fsync = f
	if o.FsyncInterval <= 0 {
		return nil, errors.New("--fsync-interval: must be above 0")
	}
	if cfg.writeCoalesceUs < 0 || cfg.writeCoalesceUs > maxWriteCoalesceUs {
		return nil, fmt.Errorf("--write-coalesce: %d: must be 0 to %d microseconds", cfg.writeCoalesceUs, maxWriteCoalesceUs)
	}
	o.WriteCoalesce = time.Duration(cfg.writeCoalesceUs) * time.Microsecond
	if o.ServerMoved && o.ServerReference == "" {
		return nil, errors.New("--server-moved needs --server-reference")
	}
	// On the command line 0 means none; for engine.Options 0 means the
	// default and a negative value none.
	if o.MaxTopicAlias == 0 {
		o.MaxTopicAlias = -1
	}
	if o.MaxTopicAliasOut == 0 {
		o.MaxTopicAliasOut = -1
	}
	if o.SysInterval <= 0 {
		o.SysInterval = -1 // documented: 0 or negative disables $SYS
	}
	if set["allow-anonymous"] {
		o.AllowAnonymous = allowAnon
	}
	if key := getenv("TINYMQ_API_KEY"); key != "" {
		o.APIKey = key // MQTT password and HTTP bearer token
	}
	o.Version = "tinymq " + version
	return cfg, nil
}

// readConfig applies "name = value" (or "name value") lines; # starts a
// comment. Lines whose first word is a Mosquitto bridge key ("connection
// NAME", "address", "topic", ...; bridge.IsKey) go to bp as `key value`
// lines, verbatim: there only a line that starts with # is a comment,
// since # is a topic wildcard.
func readConfig(path string, apply func(name, value, from string) error, bp *bridge.Parser) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		key := line
		if i := strings.IndexAny(line, " \t="); i >= 0 {
			key = line[:i]
		}
		if bridge.IsKey(strings.ToLower(key)) {
			value := strings.TrimSpace(line[len(key):])
			if v, ok := strings.CutPrefix(value, "="); ok {
				value = strings.TrimSpace(v)
			}
			if err := bp.Line(fmt.Sprintf("%s:%d", path, n), key, value); err != nil {
				return err
			}
			continue
		}
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			name, value, ok = strings.Cut(line, " ")
		}
		if !ok {
			return fmt.Errorf("%s:%d: want name = value", path, n)
		}
		name = strings.TrimPrefix(strings.TrimSpace(name), "--")
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if m, ok := mosquittoNames[name]; ok {
			name = m.flag
			if m.convert != nil {
				v, err := m.convert(value)
				if err != nil {
					return fmt.Errorf("%s:%d: %s: %w", path, n, name, err)
				}
				value = v
			}
		}
		if err := apply(name, value, fmt.Sprintf("%s:%d", path, n)); err != nil {
			return err
		}
	}
	return sc.Err()
}

// mosquittoNames maps the mosquitto.conf settings whose meaning TinyMQ
// shares to its flags, so that those lines of a Mosquitto configuration
// can be kept as they are; convert, when set, rewrites the value.
var mosquittoNames = map[string]struct {
	flag    string
	convert func(string) (string, error)
}{
	"max_keepalive":                {flag: "max-keepalive"},
	"max_topic_alias":              {flag: "max-topic-alias"},
	"persistent_client_expiration": {flag: "session-expiry", convert: mosquittoExpiration},
	"allow_anonymous":              {flag: "allow-anonymous"},
	"password_file":                {flag: "password-file"},
	"acl_file":                     {flag: "acl-file"},
}

// mosquittoExpiration turns Mosquitto's persistent_client_expiration value
// (a count and one of h, d, w, m, y: hours, days, weeks, 30-day months,
// 365-day years) into a Go duration.
func mosquittoExpiration(v string) (string, error) {
	units := map[byte]int64{'h': 3600, 'd': 86400, 'w': 7 * 86400, 'm': 30 * 86400, 'y': 365 * 86400}
	if len(v) < 2 || units[v[len(v)-1]] == 0 {
		return "", fmt.Errorf("%q: want a count and h, d, w, m or y (as mosquitto.conf)", v)
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 32)
	if err != nil || n <= 0 {
		return "", fmt.Errorf("%q: want a positive count before the unit", v)
	}
	return (time.Duration(n*units[v[len(v)-1]]) * time.Second).String(), nil
}

// rangeInt is an integer flag that refuses values outside [min, max].
type rangeInt struct {
	p        *int
	min, max int
}

func (r rangeInt) String() string {
	if r.p == nil {
		return "0"
	}
	return strconv.Itoa(*r.p)
}

func (r rangeInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not an integer")
	}
	if n < r.min || n > r.max {
		return fmt.Errorf("%d out of range %d to %d", n, r.min, r.max)
	}
	*r.p = n
	return nil
}

// secondsValue is a duration flag in whole seconds from 0 to 2^32-1, the
// range of an MQTT 5 Session Expiry Interval.
type secondsValue struct{ p *time.Duration }

func (s secondsValue) String() string {
	if s.p == nil {
		return "0s"
	}
	return s.p.String()
}

func (s secondsValue) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("not a duration (e.g. 90s, 24h)")
	}
	if d < 0 || d > math.MaxUint32*time.Second || d%time.Second != 0 {
		return fmt.Errorf("%v: want whole seconds from 0 to %d", d, uint32(math.MaxUint32))
	}
	*s.p = d
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q", level)
	}
	ho := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q: want text or json", format)
}

// checkConfig validates what parse produced the way a start would, without
// listening or touching the data directory: engine.New checks the options
// and reads the password, ACL and TLS files. It writes a summary to w.
func checkConfig(cfg *config, w io.Writer) error {
	o := cfg.opts
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	disableStore(&o)
	if _, err := engine.New(o); err != nil { // never started: nothing to stop
		return fmt.Errorf("configuration invalid: %w", err)
	}
	fmt.Fprintf(w, "configuration OK: mqtt %q, http %q, tls %q, %d bridge(s)\n",
		o.MQTTAddr, o.HTTPAddr, o.TLSAddr, len(cfg.bridges))
	return nil
}

// writeHeapProfile writes the live heap (after a GC). It runs when the
// shutdown signal arrives, before the broker lets go of its state.
func writeHeapProfile(path string, log *slog.Logger) {
	f, err := os.Create(path)
	if err != nil {
		log.Error("heap profile", "err", err)
		return
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		log.Error("heap profile", "err", err)
		return
	}
	log.Info("heap profile written", "file", path)
}

// run starts the broker and serves until a signal (or stop) arrives. A
// second signal exits at once.
func run(args []string, logw io.Writer, stop <-chan struct{}) error {
	cfg, err := parse(args, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(logw, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	if cfg.checkOnly {
		return checkConfig(cfg, logw)
	}
	cfg.opts.Logger = log
	if cfg.mqttDisable || strings.EqualFold(os.Getenv("TINYMQ_MQTT_DISABLE"), "true") {
		cfg.opts.MQTTAddr = ""
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			log.Info("CPU profile written", "file", cfg.cpuProfile)
		}()
	}

	if cfg.opts.MQTTAddr == "" {
		log.Info("MQTT listener disabled")
	}
	var b *engine.Broker
	if cfg.opts.MQTTAddr != "" || cfg.opts.HTTPAddr != "" || cfg.opts.WSAddr != "" || cfg.opts.TLSAddr != "" || cfg.opts.HTTPSAddr != "" {
		b, err = engine.New(cfg.opts)
		if err != nil {
			return err
		}
		if err := b.Start(); err != nil {
			return err
		}
	}
	var bridges *bridge.Manager
	if len(cfg.bridges) > 0 {
		if b == nil || b.MQTTAddr() == "" {
			return errors.New("bridges need the MQTT listener (--mqtt-addr)")
		}
		if bridges, err = bridge.NewManager(cfg.bridges, b, log); err != nil {
			return err
		}
		if err := bridges.Start(); err != nil {
			return err
		}
		b.SetBridgeInfo(func() []engine.BridgeInfo { return bridgeInfo(bridges.Status()) })
		log.Info("bridges started", "count", len(cfg.bridges))
	}
	log.Info("tinymq started", "version", version, "pid", os.Getpid())
wait:
	for {
		select {
		case s := <-sigs:
			log.Info("shutting down", "signal", s.String())
			break wait
		case <-hup:
			// Password file, ACL file and TLS certificates; a broken file
			// keeps the old one in force (Reload logs which and why).
			if b != nil {
				if err := b.Reload(); err == nil {
					log.Info("reloaded", "signal", "SIGHUP")
				}
			}
		case <-stop:
			break wait
		}
	}
	go func() {
		<-sigs
		log.Warn("second signal: exiting now")
		os.Exit(1)
	}()
	if cfg.heapProfile != "" {
		writeHeapProfile(cfg.heapProfile, log)
	}
	if bridges != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := bridges.Stop(ctx); err != nil {
			log.Warn("bridges did not stop in time", "err", err)
		}
		cancel()
	}
	if b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	log.Info("stopped")
	return nil
}

// bridgeInfo converts the bridges' status for the broker's HTTP door.
func bridgeInfo(st []bridge.Status) []engine.BridgeInfo {
	out := make([]engine.BridgeInfo, len(st))
	for i, s := range st {
		out[i] = engine.BridgeInfo{Name: s.Name, State: s.State, Remote: s.Remote,
			RemoteClientID: s.RemoteClientID, LocalClientID: s.LocalClientID, Connects: s.Connects,
			MsgsOut: s.MsgsOut, MsgsIn: s.MsgsIn, BytesOut: s.BytesOut, BytesIn: s.BytesIn,
			Dropped: s.Dropped, LastError: s.LastError}
	}
	return out
}

// disableStore keeps a configuration check off the data directory (a
// running broker holds its lock): the check's broker runs in memory.
func disableStore(o *engine.Options) { o.Persistence = false }
