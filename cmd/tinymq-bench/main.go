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
  conn   N idle MQTT connections; with --broker-pid, broker RSS and CPU per connection

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
