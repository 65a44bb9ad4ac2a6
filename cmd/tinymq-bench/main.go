// Command tinymq-bench is TinyMQ's load generator. It works against any
// MQTT broker.
//
//	tinymq-bench conn --addr 127.0.0.1:1883 --conns 10000 --broker-pid $(pidof tinymq)
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tinymq/tinymq/bench"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "conn":
		err = runConn(os.Args[2:])
	case "fanin", "fanout", "pairs":
		err = runLoad(os.Args[1], os.Args[2:])
	case "http-ref":
		err = runHTTPRef(os.Args[2:])
	case "http":
		err = runHTTP(os.Args[2:])
	case "fleet":
		err = runFleet(os.Args[2:])
	case "compare":
		err = runCompare(os.Args[2:])
	case "certs":
		err = runCerts(os.Args[2:])
	case "worker":
		err = runWorker(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tinymq-bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: tinymq-bench <scenario> [flags]

scenarios:
  conn     N idle MQTT connections (--tls: over TLS); with --broker-pid, broker RSS and CPU per connection
  fanin    P publishers -> 1 subscriber on a wildcard
  fanout   1 publisher -> S subscribers
  pairs    K publisher/subscriber pairs
  http     HTTP publishes (POST /publish/{topic}) delivered to an MQTT subscriber
  http-ref a plain fasthttp.Server answering POST /publish/{topic} as TinyMQ does (the CPU reference)
  fleet    ESP32 soak test: N devices with esp-mqtt behaviour for a fixed time
  compare  start TinyMQ, Mosquitto and any --broker, run the device shapes (--deep: also 256 in flight) against each, print a table per shape with CPU and system calls per message
  certs    write a throwaway CA, server and client certificate (ECDSA P-256) for conn --tls and brokers

conn, fanin, fanout, pairs and compare take --mqtt-version 3.1.1|5 (compare: also 3.1.1,5);
fanin, fanout, pairs and compare take --topic-alias and --user-props N with 5

run "tinymq-bench <scenario> -h" for its flags`)
}

func runConn(args []string) error {
	fs := flag.NewFlagSet("conn", flag.ContinueOnError)
	var cfg bench.ConnConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:1883", "broker address")
	fs.IntVar(&cfg.Conns, "conns", 10000, "connections")
	fs.IntVar(&cfg.PerWorker, "per-worker", 15000, "connections per worker process (a process here holds at most ~19,900 sockets)")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses 127.0.0.1..127.0.0.N")
	fs.IntVar(&cfg.KeepAlive, "keepalive", 120, "keep-alive seconds in CONNECT")
	fs.BoolVar(&cfg.Subscribe, "subscribe", false, "one subscription per device (devices/{id}/cmd)")
	fs.IntVar(&cfg.Dialers, "dialers", 32, "concurrent connects per worker")
	fs.DurationVar(&cfg.Hold, "hold", 5*time.Second, "hold the connections this long before sampling the broker and closing")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "bound on the whole run")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker process id, to read its RSS and CPU from /proc")
	label := fs.String("label", "", "broker label for the report")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	version := fs.String("broker-version", "", "broker version for the report (default: read $SYS/broker/version)")
	quiet := fs.Bool("quiet", false, "no progress line")
	useTLS := fs.Bool("tls", false, "every connection completes a TLS handshake before CONNECT")
	var t bench.TLSClient
	tlsFlags(fs, &t)
	fs.StringVar(&t.CAFile, "tls-ca", filepath.Join(bench.DefaultCertDir, "ca.pem"), "CA certificate (PEM) to verify the broker with (tinymq-bench certs writes one); empty: the system's roots")
	fs.StringVar(&t.CertFile, "tls-cert", "", "client certificate (PEM) for mTLS")
	fs.StringVar(&t.KeyFile, "tls-key", "", "client key (PEM) for mTLS")
	fs.StringVar(&t.ServerName, "tls-server-name", "", "name to verify the broker's certificate against (default: the host of --addr)")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "TinyMQ's /metrics URL, to report its Go heap per connection")
	fs.StringVar(&cfg.MQTTVersion, "mqtt-version", "3.1.1", "protocol of every CONNECT: 3.1.1 or 5 (no CONNECT properties)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	v, err := bench.ParseMQTTVersion(cfg.MQTTVersion)
	if err != nil {
		return err
	}
	cfg.MQTTVersion = bench.VersionName(v)
	if *useTLS {
		cfg.TLS = &t
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var fn func(c, f int)
	if pr := progress(*quiet, 0); pr != nil {
		fn = func(c, f int) { pr.Update(int64(c), 0, int64(f)) }
		defer pr.Done()
	}
	res, err := bench.RunConn(ctx, cfg, fn)
	if err != nil {
		return err
	}
	if *asJSON {
		scenario := "conn"
		if cfg.TLS != nil {
			scenario = "conn-tls"
		}
		return record(scenario, *label, *version, cfg.Addr, cfg, res)
	}
	fmt.Printf("scenario            conn, MQTT %s\n", cfg.MQTTVersion)
	fmt.Printf("broker              %s\n", *label)
	fmt.Printf("connections         %d (failed %d) via %d workers, %d source addresses\n", res.Connected, res.Failed, res.Workers, res.Sources)
	fmt.Printf("connect time        %.2fs (%.0f/s)\n", res.ConnectSeconds, res.ConnectsPerSec)
	if res.FirstError != "" {
		fmt.Printf("first error         %s\n", res.FirstError)
	}
	if cfg.TLS != nil {
		fmt.Printf("TLS                 %s, curve %s, resumption %v, client certificate %v\n", t.Version, t.Curve, t.Resume, t.CertFile != "")
		fmt.Printf("handshakes          %d (%d resumed): %.0f/s, mean %.1f ms\n", res.Handshakes, res.Resumed, res.HandshakesPerSec, res.HandshakeMeanMs)
	}
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker RSS          %.1f MiB -> %.1f MiB\n", float64(res.BrokerRSSBefore)/(1<<20), float64(res.BrokerRSSAfter)/(1<<20))
		fmt.Printf("RSS per connection  %.0f bytes\n", res.RSSPerConn)
		fmt.Printf("broker CPU          %.2f ms per 1000 connects\n", res.BrokerCPUPerK)
		if cfg.TLS != nil {
			fmt.Printf("broker CPU          %.0f µs per handshake (%.2f s over the connect phase)\n", res.CPUusPerHandshake, res.BrokerCPUConnect)
		}
	}
	if cfg.MetricsURL != "" {
		fmt.Printf("broker Go heap      %.1f MiB -> %.1f MiB: %.0f bytes per connection\n",
			float64(res.HeapBefore)/(1<<20), float64(res.HeapAfter)/(1<<20), res.HeapPerConn)
	}
	return nil
}

// tlsFlags adds the TLS choices conn and compare share.
func tlsFlags(fs *flag.FlagSet, t *bench.TLSClient) {
	fs.StringVar(&t.Version, "tls-version", "1.3", "TLS version the client offers: 1.2 or 1.3")
	fs.StringVar(&t.Curve, "tls-curve", "x25519", "key exchange: x25519 (an ESP32's mbedTLS offers no post-quantum share) or default (Go's, X25519MLKEM768 first)")
	fs.BoolVar(&t.Resume, "tls-resume", false, "resume TLS sessions across a worker's connections")
}

// runCerts writes the benchmark CA and certificates.
func runCerts(args []string) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", bench.DefaultCertDir, "directory to write ca.pem, server.pem, server.key, client.pem, client.key into")
	hosts := fs.String("hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names of the server certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := bench.WriteCerts(*dir, strings.Split(*hosts, ",")...)
	if err != nil {
		return err
	}
	fmt.Printf("CA                  %s\nserver              %s %s\nclient              %s %s\n", f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey)
	return nil
}

// progress returns the progress printer for a run of about d, or nil.
func progress(quiet bool, d time.Duration) *bench.Progress {
	if quiet {
		return nil
	}
	return bench.NewProgress(os.Stderr, isTerminal(), d)
}

func runFleet(args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	var cfg bench.FleetConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:1883", "broker address")
	fs.IntVar(&cfg.Devices, "devices", 1000, "simulated devices")
	fs.IntVar(&cfg.PerWorker, "per-worker", 15000, "devices per worker process (a process here holds at most ~19,900 sockets)")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses 127.0.0.1..127.0.0.N")
	fs.StringVar(&cfg.Profile, "profile", "esp-mqtt", "client library to behave as: esp-mqtt or pubsubclient (keep-alive 15 s, QoS 0, 5 s back-off)")
	fs.IntVar(&cfg.KeepAlive, "keepalive", 0, "keep-alive seconds (0: the profile's, esp-mqtt 120, pubsubclient 15)")
	fs.DurationVar(&cfg.Telemetry, "telemetry", 10*time.Second, "telemetry period per device")
	fs.Float64Var(&cfg.Jitter, "jitter", 0.2, "telemetry jitter, a fraction of the period (±)")
	qos := fs.Int("qos", 0, "telemetry QoS (0 or 1)")
	fs.IntVar(&cfg.Payload, "payload", 64, "telemetry bytes")
	fs.DurationVar(&cfg.Backoff, "backoff", 0, "reconnect back-off (0: the profile's, esp-mqtt 10s, pubsubclient 5s)")
	fs.IntVar(&cfg.Consumers, "consumers", 1, "backend connections subscribed to devices/+/telemetry (latency, losses)")
	fs.Float64Var(&cfg.Commands, "commands", 10, "backend QoS 1 commands per second to random devices/{id}/cmd")
	fs.Float64Var(&cfg.Storm, "storm", 0, "fraction of the fleet whose connections drop at once at --storm-at (0: none)")
	fs.DurationVar(&cfg.StormAt, "storm-at", 0, "when the storm hits (0: half the duration)")
	fs.IntVar(&cfg.Ramp, "ramp", 0, "devices connecting per second (0: all at once)")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "whole run; devices stop by themselves")
	fs.StringVar(&cfg.Token, "token", os.Getenv("TINYMQ_API_KEY"), "MQTT password (TinyMQ API key)")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker process id, to sample its RSS and CPU every second")
	label := fs.String("label", "", "broker label for the report")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	version := fs.String("broker-version", "", "broker version for the report (default: read $SYS/broker/version)")
	quiet := fs.Bool("quiet", false, "no progress line")
	plot := fs.String("plot", "", "write an SVG of connected devices and broker RSS over time to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	if err := cfg.Normalize(); err != nil { // the profile's defaults, for the report
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var fn func(time.Duration, bench.FleetCounters)
	if pr := progress(*quiet, cfg.Duration); pr != nil {
		fn = func(_ time.Duration, c bench.FleetCounters) { pr.Update(c.Connected, c.Telemetry, c.Failures+c.Drops) }
		defer pr.Done()
	}
	res, err := bench.RunFleet(ctx, cfg, fn)
	if err != nil {
		return err
	}
	if *plot != "" {
		if err := bench.PlotFleet(*plot, []bench.FleetRun{{Label: *label, Result: res}}); err != nil {
			return err
		}
	}
	if *asJSON {
		p := cfg
		p.Token = ""
		return record("fleet", *label, *version, cfg.Addr, p, res)
	}
	fmt.Printf("scenario     fleet: %d %s devices (%d workers), telemetry every %v ±%.0f%% at QoS %d, %v\n",
		cfg.Devices, profileName(cfg.Profile), res.Workers, cfg.Telemetry, cfg.Jitter*100, cfg.QoS, cfg.Duration)
	fmt.Printf("broker       %s\n", *label)
	fmt.Printf("connected    peak %d, at end %d; connects %d, failures %d, drops %d, reconnects %d\n",
		res.PeakConnected, res.Connected, res.Connects, res.Failures, res.Drops, res.Reconnects)
	fmt.Printf("telemetry    %d sent, %d PUBACKs, %d QoS 1 re-sends, %d pings\n",
		res.Telemetry, res.Pubacks, res.Resends, res.Pings)
	if cfg.Consumers > 0 {
		fmt.Printf("backend      %d telemetry delivered (%.0f/s over %d consumers), %d lost, %d duplicates; latency p50 %.0f µs, p99 %.0f µs, max %.0f µs\n",
			res.TelemetryDelivered, res.TelemetryPerS, cfg.Consumers, res.TelemetryLost, res.TelemetryDuplicates,
			res.TelemetryP50us, res.TelemetryP99us, res.TelemetryMaxUs)
	}
	if cfg.Commands > 0 {
		fmt.Printf("commands     %d sent, %d acknowledged by the broker, %d received by devices, %d not delivered; latency p50 %.0f µs, p99 %.0f µs\n",
			res.CommandsSent, res.CommandsAcked, res.Commands, res.CommandsLost, res.CommandP50us, res.CommandP99us)
	}
	if cfg.Storm > 0 {
		fmt.Printf("storm        %d connections cut at %v, reconnected after %v\n", res.StormDrops, cfg.StormAt, cfg.Backoff)
	}
	if res.FirstError != "" {
		fmt.Printf("first error  %s\n", res.FirstError)
	}
	if cfg.BrokerPID > 0 {
		per := 0.0
		if res.PeakConnected > 0 {
			per = float64(res.BrokerRSSPeak) / float64(res.PeakConnected)
		}
		fmt.Printf("broker       RSS peak %.1f MiB (%.0f B per device incl. base), CPU %.2f s\n",
			float64(res.BrokerRSSPeak)/(1<<20), per, res.BrokerCPU)
	}
	return nil
}

// profileName is the fleet profile for the report.
func profileName(p string) string {
	if p == "" {
		return "esp-mqtt"
	}
	return p
}

func runWorker(args []string) error { return bench.WorkerMain(args, os.Stdin, os.Stdout) }

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runID identifies every JSON line of this invocation.
var runID = bench.NewRunID()

// record prints one JSON result line; an empty version is read from the
// broker's $SYS/broker/version.
func record(scenario, label, version, addr string, params, result any) error {
	if version == "" {
		version = bench.BrokerVersion(addr, 2*time.Second)
	}
	return bench.WriteRecord(os.Stdout, bench.Record{Run: runID, Scenario: scenario, Broker: label,
		BrokerVersion: version, Params: params, Result: result})
}

// gitVersion describes the working tree TinyMQ was built from.
func gitVersion() string {
	if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "unknown"
}

// mosquittoVersion is the first line of `mosquitto -h`.
func mosquittoVersion(bin string) string {
	if b, _ := exec.Command(bin, "-h").CombinedOutput(); len(b) > 0 {
		return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	return "unknown"
}

func runLoad(scenario string, args []string) error {
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	cfg := bench.LoadConfig{Scenario: scenario}
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:1883", "broker address")
	fs.IntVar(&cfg.Publishers, "publishers", 10, "publishers (fanin; pairs: the number of pairs)")
	fs.IntVar(&cfg.Subscribers, "subscribers", 10, "subscribers (fanout)")
	qos := fs.Int("qos", 0, "QoS 0, 1 or 2")
	fs.IntVar(&cfg.Payload, "payload", 64, "payload bytes (at least 24)")
	fs.IntVar(&cfg.Rate, "rate", 0, "total messages/s (0: as fast as the window allows)")
	fs.BoolVar(&cfg.Spread, "spread", false, "with --rate: publishers out of phase (publisher i of n due i/n of a period after publisher 0), as a fleet publishes; without it all are due at the same instants")
	fs.IntVar(&cfg.Window, "window", 256, "messages a publisher may have unreceived/unacknowledged")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "publishing time")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for the last deliveries")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker process id, to read its CPU time from /proc")
	label := fs.String("label", "", "broker label for the report")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	version := fs.String("broker-version", "", "broker version for the report (default: read $SYS/broker/version)")
	quiet := fs.Bool("quiet", false, "no progress line")
	fs.StringVar(&cfg.MQTTVersion, "mqtt-version", "3.1.1", "protocol of every connection: 3.1.1 or 5")
	fs.BoolVar(&cfg.Persistent, "persistent", false, "persistent sessions on both ends (3.1.1 clean session 0, 5.0 session expiry), ids unique to the run: the broker keeps every QoS > 0 message in the sessions (TinyMQ writes a QoS 1 copy to an online subscriber only if it is not acknowledged within its lazy period; QoS 2 and offline queues always)")
	fs.BoolVar(&cfg.TopicAlias, "topic-alias", false, "MQTT 5: publishers send the topic once with alias 1, then alias 1 alone (if the broker's Topic Alias Maximum allows); subscribers announce Topic Alias Maximum 16")
	fs.IntVar(&cfg.UserProps, "user-props", 0, "MQTT 5: user properties per PUBLISH (k<i> = 16 bytes), checked in order by the subscribers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	if err := cfg.Normalize(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if pr := progress(*quiet, cfg.Duration); pr != nil {
		cfg.Progress = func(conns, delivered int64) { pr.Update(conns, delivered, 0) }
		defer pr.Done()
	}
	res, err := bench.RunLoad(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		return record(scenario, *label, *version, cfg.Addr, cfg, res)
	}
	fmt.Printf("scenario     %s qos %d, MQTT %s, %d publishers, %d subscribers, %d-byte payload, rate %d/s, %v\n",
		scenario, cfg.QoS, cfg.MQTTVersion, cfg.Publishers, cfg.Subscribers, cfg.Payload, cfg.Rate, cfg.Duration)
	fmt.Printf("broker       %s\n", *label)
	fmt.Printf("delivered    %d of %d expected (%d sent): %.0f msgs/s\n", res.Delivered, res.Expected, res.Sent, res.DeliveredPerS)
	fmt.Printf("lost %d  duplicates %d  out of order %d\n", res.Lost, res.Duplicates, res.OutOfOrder)
	printV5(cfg, res)
	fmt.Printf("latency µs   p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", res.P50us, res.P90us, res.P99us, res.P999us, res.MaxUs)
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker CPU   %.2f s: %.0f msgs per CPU-second\n", res.BrokerCPU, res.PerBrokerCPU)
	}
	return nil
}

// printV5 prints what a 5.0 load run negotiated and checked.
func printV5(cfg bench.LoadConfig, res bench.LoadResult) {
	if cfg.MQTTVersion != "5" {
		if res.Disconnects > 0 {
			fmt.Printf("DISCONNECT   %d from the broker (first %s)\n", res.Disconnects, res.DisconnectReason)
		}
		return
	}
	fmt.Printf("broker CONNACK Receive Maximum %d, Topic Alias Maximum %d\n", res.BrokerReceiveMax, res.BrokerTopicAliasMax)
	if cfg.TopicAlias {
		if res.BrokerTopicAliasMax == 0 {
			fmt.Printf("topic alias  not used: the broker's Topic Alias Maximum is 0, publishers sent full topics\n")
		} else {
			fmt.Printf("topic alias  %d of %d publishers aliased; subscribers: %d deliveries by alias from the broker, %d alias errors\n",
				res.AliasedPublishers, cfg.Publishers, res.AliasedDeliveries, res.AliasErrors)
		}
	} else if res.AliasErrors > 0 {
		fmt.Printf("topic alias  %d alias errors at the subscribers (none announced)\n", res.AliasErrors)
	}
	if res.TopicMismatches > 0 {
		fmt.Printf("topics       %d deliveries on another publisher's topic\n", res.TopicMismatches)
	}
	if cfg.UserProps > 0 {
		fmt.Printf("user props   %d per PUBLISH: %d deliveries checked, %d mismatches\n", cfg.UserProps, res.PropsChecked, res.PropMismatches)
	}
	if res.AckErrors > 0 {
		fmt.Printf("acks         %d PUBACK/PUBREC with a failure code (first %s)\n", res.AckErrors, res.FirstAckReason)
	}
	if res.Disconnects > 0 {
		fmt.Printf("DISCONNECT   %d from the broker (first reason %s)\n", res.Disconnects, res.DisconnectReason)
	}
}

func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	var cfg bench.HTTPConfig
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7800", "broker HTTP address")
	fs.StringVar(&cfg.MQTTAddr, "addr", "127.0.0.1:1883", "broker MQTT address (the subscriber); empty: no subscriber, the HTTP server alone")
	fs.IntVar(&cfg.Conns, "conns", 16, "keep-alive HTTP connections, one request in flight each")
	qos := fs.Int("qos", 0, "QoS of the publishes (query qos=)")
	fs.IntVar(&cfg.Payload, "payload", 64, "body bytes (at least 24)")
	fs.IntVar(&cfg.Rate, "rate", 0, "total requests/s (0: as fast as responses come back)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "publishing time")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for the last deliveries")
	fs.StringVar(&cfg.Token, "token", os.Getenv("TINYMQ_API_KEY"), "API key (bearer token and MQTT password)")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker process id, to read its CPU time from /proc")
	label := fs.String("label", "tinymq", "broker label for the report")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	version := fs.String("broker-version", "", "broker version for the report (default: read $SYS/broker/version)")
	quiet := fs.Bool("quiet", false, "no progress line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if pr := progress(*quiet, cfg.Duration); pr != nil {
		cfg.Progress = func(conns, accepted, errs int64) { pr.Update(conns, accepted, errs) }
		defer pr.Done()
	}
	res, err := bench.RunHTTP(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		p := cfg
		p.Token = ""
		return record("http", *label, *version, cfg.MQTTAddr, p, res)
	}
	fmt.Printf("scenario     http qos %d, %d connections, %d-byte body, rate %d/s, %v\n", cfg.QoS, cfg.Conns, cfg.Payload, cfg.Rate, cfg.Duration)
	fmt.Printf("broker       %s\n", *label)
	fmt.Printf("requests     %d (%d accepted, %d errors): %.0f req/s\n", res.Requests, res.Accepted, res.Errors, res.RequestsPerS)
	fmt.Printf("response µs  p50 %.0f  p99 %.0f  p99.9 %.0f\n", res.RTTp50us, res.RTTp99us, res.RTTp999us)
	if cfg.MQTTAddr != "" {
		fmt.Printf("delivered    %d: lost %d  duplicates %d  out of order %d\n", res.Delivered, res.Lost, res.Duplicates, res.OutOfOrder)
		fmt.Printf("HTTP->MQTT µs p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", res.DelivP50us, res.DelivP99us, res.DelivP999us, res.DelivMaxUs)
	}
	if res.FirstError != "" {
		fmt.Printf("first error  %s\n", res.FirstError)
	}
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker CPU   %.2f s: %.1f µs per request\n", res.BrokerCPU, res.CPUusPerReq)
	}
	return nil
}

// runHTTPRef serves the plain fasthttp.Server reference until a signal.
func runHTTPRef(args []string) error {
	fs := flag.NewFlagSet("http-ref", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7801", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench.RunHTTPRef(ctx, *addr, func(a net.Addr) {
		fmt.Fprintf(os.Stderr, "http-ref: plain fasthttp.Server on %s, pid %d\n", a, os.Getpid())
	})
}

func runCompare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	tinymqBin := fs.String("tinymq", "bin/tinymq", "tinymq binary; empty: leave TinyMQ out")
	mosqBin := fs.String("mosquitto", "/usr/sbin/mosquitto", "mosquitto binary (Debian package mosquitto); empty: leave Mosquitto out")
	type other struct{ label, command string }
	var others []other
	fs.Func("broker", "another broker, as label=command with {port} for its MQTT port and {dir} for a scratch directory (repeatable)", func(v string) error {
		label, command, err := bench.ParseBrokerFlag(v)
		if err != nil {
			return err
		}
		for _, o := range others {
			if o.label == label {
				return fmt.Errorf("--broker label %q given twice", label)
			}
		}
		others = append(others, other{label, command})
		return nil
	})
	var tlsOthers []other
	fs.Func("broker-tls", "another broker's TLS listener, as label=command with {port} for its MQTT-over-TLS port, {cert} and {key} for the server certificate and key (PEM), {ca} for the CA (mTLS) and {dir} for a scratch directory (repeatable; used with --tls-conns)", func(v string) error {
		label, command, err := bench.ParseBrokerFlag(v)
		if err != nil {
			return err
		}
		for _, o := range tlsOthers {
			if o.label == label {
				return fmt.Errorf("--broker-tls label %q given twice", label)
			}
		}
		tlsOthers = append(tlsOthers, other{label, command})
		return nil
	})
	tlsConns := fs.Int("tls-conns", 0, "also hold this many idle TLS connections per broker and report RSS per connection, handshakes/s and CPU per handshake (0: skip)")
	var tc bench.TLSClient
	tlsFlags(fs, &tc)
	tlsClientCerts := fs.Bool("tls-client-certs", false, "with --tls-conns: brokers require client certificates (mTLS) and every connection presents one")
	load := fs.Bool("load", true, "run the load scenario set (false: only --conns, --fleet and --tls-conns)")
	d := fs.Duration("duration", 5*time.Second, "publishing time per scenario")
	conns := fs.Int("conns", 0, "also hold this many idle connections per broker and report RSS per connection (0: skip)")
	fleet := fs.Int("fleet", 0, "also run a fleet of this many devices per broker (0: skip)")
	fleetFor := fs.Duration("fleet-duration", 30*time.Second, "fleet run time")
	plots := fs.String("plots", "", "write SVG plots into this directory")
	doc := fs.String("update-doc", "", "replace the generated section of this markdown file (docs/benchmarks.md) with this run")
	asJSON := fs.Bool("json", false, "print JSON lines instead of the table")
	mqttVersions := fs.String("mqtt-version", "3.1.1", "MQTT versions the load set and --conns run at: 3.1.1, 5, or both in turn (3.1.1,5: rows per version); the fleet and --tls-conns stay at 3.1.1")
	var v5 bench.V5Options
	fs.BoolVar(&v5.TopicAlias, "topic-alias", false, "MQTT 5 rows: publishers alias their topic, subscribers announce Topic Alias Maximum 16")
	fs.IntVar(&v5.UserProps, "user-props", 0, "MQTT 5 rows: user properties per PUBLISH, checked by the subscribers")
	shapes := fs.String("shapes", "", "run only the load rows whose name matches this regular expression (e.g. '@' for the fixed rates, 'window 1$')")
	deep := fs.Bool("deep", false, "also run the deep-pipeline shape ("+bench.DeepLabel+" per publisher), which no device produces")
	sysc := fs.String("syscalls", "proc", "system calls per message: proc (read+write calls from /proc/PID/io, every row) or strace (also one separate pass per broker, each row under strace -c -f -p PID: every call, top 3)")
	rounds := fs.Int("rounds", 1, "run the load set this many times, the brokers taking turns row by row, and report each broker's median round per row with every round's figures")
	persistent := fs.Bool("persistent", false, "run the load rows between persistent sessions (clean session 0 on both ends): a durable broker stores every QoS > 0 message")
	if err := fs.Parse(args); err != nil {
		return err
	}
	versions, err := bench.ParseMQTTVersions(*mqttVersions)
	if err != nil {
		return err
	}
	if (v5.TopicAlias || v5.UserProps != 0) && !slices.Contains(versions, "5") {
		return fmt.Errorf("--topic-alias and --user-props need --mqtt-version 5 (or 3.1.1,5)")
	}
	dir, err := os.MkdirTemp("", "tinymq-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	starters := map[string]func() (*bench.Broker, error){}
	var order []string
	brokerVersions := map[string]string{}
	if *tinymqBin != "" {
		starters["tinymq"] = func() (*bench.Broker, error) { return bench.StartTinyMQ(*tinymqBin) }
		order = append(order, "tinymq")
		brokerVersions["tinymq"] = "tinymq " + gitVersion()
	}
	if *mosqBin != "" {
		starters["mosquitto"] = func() (*bench.Broker, error) { return bench.StartMosquitto(*mosqBin, dir) }
		order = append(order, "mosquitto")
		brokerVersions["mosquitto"] = mosquittoVersion(*mosqBin)
	}
	for _, o := range others {
		starters[o.label] = func() (*bench.Broker, error) { return bench.StartCommand(o.label, o.command, dir) }
		order = append(order, o.label)
		brokerVersions[o.label] = o.command
	}
	if *rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1", *rounds)
	}
	opts := bench.CompareOptions{Log: os.Stderr, Versions: versions, V5: v5, Persistent: *persistent, StraceDir: dir, Rounds: *rounds}
	if *load {
		opts.Set = bench.CompareSet(*d, *deep)
		if *shapes != "" {
			re, err := regexp.Compile(*shapes)
			if err != nil {
				return fmt.Errorf("--shapes: %w", err)
			}
			opts.Set = slices.DeleteFunc(opts.Set, func(c bench.CompareScenario) bool { return !re.MatchString(c.Name) })
			if len(opts.Set) == 0 {
				return fmt.Errorf("--shapes %q matches no row", *shapes)
			}
		}
	}
	switch *sysc {
	case "proc":
	case "strace":
		bin, err := exec.LookPath("strace")
		if err != nil {
			fmt.Fprintln(os.Stderr, "tinymq-bench: --syscalls strace: no strace (apt-get install strace); the strace pass is skipped")
		} else {
			opts.Strace = bin
		}
	default:
		return fmt.Errorf("--syscalls %q: want proc or strace", *sysc)
	}
	if *tlsConns > 0 {
		if err := tc.Normalize(); err != nil {
			return err
		}
		files, err := bench.WriteCerts(filepath.Join(dir, "tls"))
		if err != nil {
			return err
		}
		// Mosquitto drops root: it must reach the files through dir.
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		srv := bench.TLSServer{Files: files, Version: tc.Version, ClientCerts: *tlsClientCerts}
		tc.CAFile = files.CA
		if *tlsClientCerts {
			tc.CertFile, tc.KeyFile = files.ClientCert, files.ClientKey
		}
		opts.TLS = bench.ConnConfig{Conns: *tlsConns, PerWorker: 5000, Sources: 4, KeepAlive: 120, Dialers: 64, Hold: 5 * time.Second, TLS: &tc}
		opts.TLSStarters = map[string]func() (*bench.Broker, error){}
		if *tinymqBin != "" {
			opts.TLSStarters["tinymq"] = func() (*bench.Broker, error) { return bench.StartTinyMQTLS(*tinymqBin, srv) }
			opts.TLSOrder = append(opts.TLSOrder, "tinymq")
		}
		if *mosqBin != "" {
			opts.TLSStarters["mosquitto"] = func() (*bench.Broker, error) { return bench.StartMosquittoTLS(*mosqBin, dir, srv) }
			opts.TLSOrder = append(opts.TLSOrder, "mosquitto")
		}
		for _, o := range tlsOthers {
			opts.TLSStarters[o.label] = func() (*bench.Broker, error) { return bench.StartCommandTLS(o.label, o.command, dir, srv) }
			opts.TLSOrder = append(opts.TLSOrder, o.label)
			if _, ok := brokerVersions[o.label]; !ok {
				brokerVersions[o.label] = o.command
			}
		}
	}
	if *conns > 0 {
		opts.Conns = bench.ConnConfig{Conns: *conns, PerWorker: 5000, Sources: 4, KeepAlive: 120, Dialers: 32, Hold: 5 * time.Second}
	}
	if *fleet > 0 {
		opts.Fleet = bench.FleetConfig{Devices: *fleet, Telemetry: 2 * time.Second, Jitter: 0.2, QoS: 1, Ramp: max(*fleet/10, 1),
			Duration: *fleetFor, IDPrefix: "esp32", Consumers: 1, Commands: float64(max(*fleet/100, 1))}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Compare(ctx, starters, order, opts)
	if err != nil {
		return err
	}
	var images []string
	if *plots != "" && len(rep.Rows) > 0 && len(order) > 0 {
		if images, err = bench.PlotCompare(*plots, rep.Rows, order); err != nil {
			return err
		}
	}
	if *plots != "" {
		if len(rep.Fleet) > 0 {
			f := filepath.Join(*plots, "fleet.svg")
			var runs []bench.FleetRun
			for _, b := range order {
				runs = append(runs, bench.FleetRun{Label: b, Result: rep.Fleet[b]})
			}
			if err := bench.PlotFleet(f, runs); err != nil {
				return err
			}
			images = append(images, f)
		}
	}
	if *asJSON {
		for _, r := range rep.Rows {
			for _, b := range order {
				rec := bench.Record{Run: runID, Scenario: r.Scenario, Broker: b, BrokerVersion: brokerVersions[b], Process: rep.Process[b], Params: r.Load, Result: r.Results[b]}
				if err := bench.WriteRecord(os.Stdout, rec); err != nil {
					return err
				}
				if rs := r.Rounds[b]; len(rs) > 1 {
					for k, res := range rs {
						rec.Scenario, rec.Result = fmt.Sprintf("%s (round %d)", r.Scenario, k+1), res
						if err := bench.WriteRecord(os.Stdout, rec); err != nil {
							return err
						}
					}
				}
				if st, ok := r.Strace[b]; ok {
					rec.Scenario, rec.Result = r.Scenario+" (strace pass)", st
					if err := bench.WriteRecord(os.Stdout, rec); err != nil {
						return err
					}
				}
			}
		}
		for _, b := range order {
			for _, v := range rep.Versions {
				if c, ok := rep.Conn[v][b]; ok {
					p := opts.Conns
					p.MQTTVersion = v
					_ = bench.WriteRecord(os.Stdout, bench.Record{Run: runID, Scenario: "conn", Broker: b, BrokerVersion: brokerVersions[b], Params: p, Result: c})
				}
			}
			if f, ok := rep.Fleet[b]; ok {
				_ = bench.WriteRecord(os.Stdout, bench.Record{Run: runID, Scenario: "fleet", Broker: b, BrokerVersion: brokerVersions[b], Params: opts.Fleet, Result: f})
			}
		}
		for _, b := range opts.TLSOrder {
			if c, ok := rep.TLS[b]; ok {
				_ = bench.WriteRecord(os.Stdout, bench.Record{Run: runID, Scenario: "conn-tls", Broker: b, BrokerVersion: brokerVersions[b], Params: opts.TLS, Result: c})
			}
		}
		return nil
	}
	var out strings.Builder
	bench.WriteCompareHost(&out, bench.ThisMachine(), rep, order)
	if len(rep.Rows) > 0 && len(order) > 0 {
		bench.WriteCompareTable(&out, rep.Rows, order)
	}
	bench.WriteCompareExtras(&out, rep, order)
	what := "TLS " + tc.Version + ", " + map[string]string{"x25519": "X25519", "default": "Go's default key shares"}[tc.Curve]
	if tc.Resume {
		what += ", resumption"
	}
	if *tlsClientCerts {
		what += ", client certificates"
	}
	bench.WriteCompareTLS(&out, rep, opts.TLSOrder, what)
	fmt.Print(out.String())
	if *doc != "" {
		var brokers []string
		if *tinymqBin != "" {
			brokers = append(brokers, fmt.Sprintf("TinyMQ (git %s, `%s`)", strings.TrimPrefix(brokerVersions["tinymq"], "tinymq "), *tinymqBin))
		}
		if *mosqBin != "" {
			brokers = append(brokers, fmt.Sprintf("%s (`%s`, persistence off, anonymous, no connection limit)", brokerVersions["mosquitto"], *mosqBin))
		}
		for _, o := range others {
			brokers = append(brokers, fmt.Sprintf("%s (`%s`)", o.label, o.command))
		}
		for _, o := range tlsOthers {
			brokers = append(brokers, fmt.Sprintf("%s over TLS (`%s`)", o.label, o.command))
		}
		return updateDoc(*doc, out.String(), images, strings.Join(brokers, ", "), "tinymq-bench "+shellJoin(os.Args[1:]))
	}
	return nil
}

// shellJoin is args as a shell command line: an argument with anything
// but letters, digits and -_./=,:@+% in it goes in single quotes, so that
// the command in the report can be pasted as it is.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=,:@+%") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// updateDoc replaces the text between the bench-report markers of a
// markdown file with this run: machine, versions, command, tables, plots.
func updateDoc(path, tables string, images []string, brokers, command string) error {
	const begin, end = "<!-- bench-report:begin -->", "<!-- bench-report:end -->"
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section", path, begin, end)
	}
	var g strings.Builder
	fmt.Fprintf(&g, "%s\n\nGenerated on %s by the command below.\n\n", begin, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&g, "- brokers: %s\n", brokers)
	fmt.Fprintf(&g, "- command: `%s`\n", command)
	g.WriteString(tables)
	g.WriteString("\n")
	dir := filepath.Dir(path)
	for _, img := range images {
		rel, err := filepath.Rel(dir, img)
		if err != nil {
			rel = img
		}
		name := strings.TrimSuffix(filepath.Base(img), filepath.Ext(img))
		fmt.Fprintf(&g, "![%s](%s)\n\n", name, filepath.ToSlash(rel))
	}
	g.WriteString(end)
	s = s[:i] + g.String() + s[j+len(end):]
	return os.WriteFile(path, []byte(s), 0o644)
}
