// Command tinymq-bench is TinyMQ's load generator. It works against any
// MQTT broker.
//
//	tinymq-bench conn --addr 127.0.0.1:1883 --conns 10000 --broker-pid $(pidof tinymq)
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
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
	case "http":
		err = runHTTP(os.Args[2:])
	case "compare":
		err = runCompare(os.Args[2:])
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
  conn     N idle MQTT connections; with --broker-pid, broker RSS and CPU per connection
  fanin    P publishers -> 1 subscriber on a wildcard
  fanout   1 publisher -> S subscribers
  pairs    K publisher/subscriber pairs
  http     HTTP publishes (POST /publish/{topic}) delivered to an MQTT subscriber
  compare  start TinyMQ and Mosquitto, run the scenario set against each, print ratios

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
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tty := isTerminal()
	res, err := bench.RunConn(ctx, cfg, func(c, f int) {
		if tty {
			fmt.Fprintf(os.Stderr, "\rconnected %d/%d failed %d   ", c, cfg.Conns, f)
		}
	})
	if tty {
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		out := map[string]any{"scenario": "conn", "broker": *label, "cores": runtime.NumCPU(),
			"conns": cfg.Conns, "keepalive": cfg.KeepAlive, "subscribe": cfg.Subscribe, "result": res}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	fmt.Printf("scenario            conn\n")
	fmt.Printf("broker              %s\n", *label)
	fmt.Printf("connections         %d (failed %d) via %d workers, %d source addresses\n", res.Connected, res.Failed, res.Workers, res.Sources)
	fmt.Printf("connect time        %.2fs (%.0f/s)\n", res.ConnectSeconds, res.ConnectsPerSec)
	if res.FirstError != "" {
		fmt.Printf("first error         %s\n", res.FirstError)
	}
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker RSS          %.1f MiB -> %.1f MiB\n", float64(res.BrokerRSSBefore)/(1<<20), float64(res.BrokerRSSAfter)/(1<<20))
		fmt.Printf("RSS per connection  %.0f bytes\n", res.RSSPerConn)
		fmt.Printf("broker CPU          %.2f ms per 1000 connects\n", res.BrokerCPUPerK)
	}
	return nil
}

func runWorker(args []string) error { return bench.WorkerMain(args, os.Stdin, os.Stdout) }

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// machine describes where a run happened, for reports.
func machine() map[string]any {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return map[string]any{"cores": runtime.NumCPU(), "kernel": strings.TrimSpace(string(kernel)), "go": runtime.Version()}
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
	fs.IntVar(&cfg.Window, "window", 256, "messages a publisher may have unreceived/unacknowledged")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "publishing time")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for the last deliveries")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker process id, to read its CPU time from /proc")
	label := fs.String("label", "", "broker label for the report")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	if err := cfg.Normalize(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunLoad(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"run": time.Now().UTC().Format(time.RFC3339Nano),
			"scenario": scenario, "broker": *label, "machine": machine(), "params": cfg, "result": res})
	}
	fmt.Printf("scenario     %s qos %d, %d publishers, %d subscribers, %d-byte payload, rate %d/s, %v\n",
		scenario, cfg.QoS, cfg.Publishers, cfg.Subscribers, cfg.Payload, cfg.Rate, cfg.Duration)
	fmt.Printf("broker       %s\n", *label)
	fmt.Printf("delivered    %d of %d expected (%d sent): %.0f msgs/s\n", res.Delivered, res.Expected, res.Sent, res.DeliveredPerS)
	fmt.Printf("lost %d  duplicates %d  out of order %d\n", res.Lost, res.Duplicates, res.OutOfOrder)
	fmt.Printf("latency µs   p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", res.P50us, res.P90us, res.P99us, res.P999us, res.MaxUs)
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker CPU   %.2f s: %.0f msgs per CPU-second\n", res.BrokerCPU, res.PerBrokerCPU)
	}
	return nil
}

func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	var cfg bench.HTTPConfig
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7800", "broker HTTP address")
	fs.StringVar(&cfg.MQTTAddr, "addr", "127.0.0.1:1883", "broker MQTT address (the subscriber)")
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.QoS = uint8(*qos)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunHTTP(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		p := cfg
		p.Token = ""
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"run": time.Now().UTC().Format(time.RFC3339Nano),
			"scenario": "http", "broker": *label, "machine": machine(), "params": p, "result": res})
	}
	fmt.Printf("scenario     http qos %d, %d connections, %d-byte body, rate %d/s, %v\n", cfg.QoS, cfg.Conns, cfg.Payload, cfg.Rate, cfg.Duration)
	fmt.Printf("broker       %s\n", *label)
	fmt.Printf("requests     %d (%d accepted, %d errors): %.0f req/s\n", res.Requests, res.Accepted, res.Errors, res.RequestsPerS)
	fmt.Printf("response µs  p50 %.0f  p99 %.0f  p99.9 %.0f\n", res.RTTp50us, res.RTTp99us, res.RTTp999us)
	fmt.Printf("delivered    %d: lost %d  duplicates %d  out of order %d\n", res.Delivered, res.Lost, res.Duplicates, res.OutOfOrder)
	fmt.Printf("HTTP->MQTT µs p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", res.DelivP50us, res.DelivP99us, res.DelivP999us, res.DelivMaxUs)
	if res.FirstError != "" {
		fmt.Printf("first error  %s\n", res.FirstError)
	}
	if cfg.BrokerPID > 0 {
		fmt.Printf("broker CPU   %.2f s: %.1f µs per request\n", res.BrokerCPU, res.CPUusPerReq)
	}
	return nil
}

func runCompare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	tinymqBin := fs.String("tinymq", "bin/tinymq", "tinymq binary")
	mosqBin := fs.String("mosquitto", "/usr/sbin/mosquitto", "mosquitto binary (Debian package mosquitto)")
	d := fs.Duration("duration", 5*time.Second, "publishing time per scenario")
	asJSON := fs.Bool("json", false, "print JSON lines instead of the table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tinymq-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	starters := map[string]func() (*bench.Broker, error){
		"tinymq":    func() (*bench.Broker, error) { return bench.StartTinyMQ(*tinymqBin) },
		"mosquitto": func() (*bench.Broker, error) { return bench.StartMosquitto(*mosqBin, dir) },
	}
	order := []string{"tinymq", "mosquitto"}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rows, err := bench.Compare(ctx, starters, order, bench.DefaultCompareSet(*d), os.Stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range rows {
			for _, b := range order {
				if err := enc.Encode(map[string]any{"scenario": r.Scenario, "broker": b, "machine": machine(), "result": r.Results[b]}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	bench.WriteCompareTable(os.Stdout, rows, order)
	return nil
}
