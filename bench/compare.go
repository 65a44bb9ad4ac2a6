package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Broker is a broker process the comparison starts and stops.
type Broker struct {
	Label      string
	Addr       string
	MetricsURL string // TinyMQ's /metrics, when its HTTP door is on
	// Process is /proc/PID/comm of PID() once the broker listened: the
	// process whose CPU and system calls are measured.
	Process string
	cmd     *exec.Cmd
}

// PID of the running broker.
func (b *Broker) PID() int { return b.cmd.Process.Pid }

// Stop ends the broker process, and its children when it was started in
// its own process group (StartCommand).
func (b *Broker) Stop() {
	if a := b.cmd.SysProcAttr; a != nil && a.Setpgid {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ps, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// freePorts returns n distinct free loopback ports: every listener is
// held until all n are chosen, so the kernel cannot hand out one port
// twice (a broker started on two of them would fail to bind).
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartTinyMQ runs a tinymq binary on a free loopback port, in memory
// (--persistence=false), as Mosquitto runs beside it.
func StartTinyMQ(bin string) (*Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return startAndWait("tinymq", addr, execCommand(bin, "--mqtt-addr", addr, "--http-addr=", "--sys-interval", "0s", "--persistence=false"))
}

// execCommand is a broker command whose output is dropped and whose
// errors go to ours.
func execCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	return cmd
}

// StartMosquitto runs mosquitto with a configuration equivalent to
// TinyMQ's defaults: anonymous allowed, persistence off, no connection
// limit, loopback only. The configuration lives in dir.
func StartMosquitto(bin, dir string) (*Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 1000\nlog_type error\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	return startAndWait("mosquitto", "127.0.0.1:"+strconv.Itoa(port), mosquittoCommand(bin, conf))
}

// mosquittoCommand runs mosquitto -c conf with the soft open-files limit
// raised to the hard one, as Go does for itself (and so for tinymq); exec
// keeps the PID for /proc sampling.
func mosquittoCommand(bin, conf string) *exec.Cmd {
	return execCommand("/bin/sh", "-c", `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" -c "$1"`, bin, conf)
}

// StartCommand runs another broker from a shell command line in which
// {port} stands for a free loopback port the broker must serve MQTT on and
// {dir} for a scratch directory (for a configuration file the command
// writes or copies). The command runs under /bin/sh with the soft
// open-files limit raised to the hard one, in its own process group (Stop
// kills the group). It should exec the broker itself, so that its PID is
// the broker's for /proc sampling, e.g.
//
//	nats-server -a 127.0.0.1 -p 0 --config {dir}/nats.conf
//	emqx foreground   (a script: its PID is the script's)
func StartCommand(label, command, dir string) (*Broker, error) {
	return startCommand(label, command, dir)
}

// startCommand is StartCommand with more placeholders (old, new pairs).
func startCommand(label, command, dir string, more ...string) (*Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	line := strings.NewReplacer(append([]string{"{port}", strconv.Itoa(port), "{dir}", dir}, more...)...).Replace(command)
	cmd := execCommand("/bin/sh", "-c", `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec `+line)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second // a survivor holding the output pipe must not hang Stop
	return startAndWait(label, "127.0.0.1:"+strconv.Itoa(port), cmd)
}

// ParseBrokerFlag splits a --broker (or --broker-tls) value "label=command".
func ParseBrokerFlag(v string) (label, command string, err error) {
	label, command, ok := strings.Cut(v, "=")
	label, command = strings.TrimSpace(label), strings.TrimSpace(command)
	if !ok || label == "" || command == "" {
		return "", "", fmt.Errorf("%q: want label=command (with {port} where the broker's MQTT port goes)", v)
	}
	if label == "tinymq" || label == "mosquitto" {
		return "", "", fmt.Errorf("%q: label %q is taken", v, label)
	}
	if !strings.Contains(command, "{port}") {
		return "", "", fmt.Errorf("%q: the command must contain {port}", v)
	}
	return label, command, nil
}

func startAndWait(label, addr string, cmd *exec.Cmd) (*Broker, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	b := &Broker{Label: label, Addr: addr, cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			// Whatever listens has exec'd by now, if it was going to.
			b.Process, _ = ProcComm(b.PID())
			return b, nil
		}
		if time.Now().After(deadline) {
			b.Stop()
			return nil, fmt.Errorf("%s did not listen on %s: %w", label, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CompareScenario is one row of the side-by-side table.
type CompareScenario struct {
	Name  string
	About string // one line on the shape, shown above its table
	Load  LoadConfig
}

// DeepLabel marks the deep-pipeline rows wherever they are shown.
const DeepLabel = "deep pipeline (256 in flight)"

// DefaultCompareSet is the scenario set `tinymq-bench compare` runs: the
// shapes devices produce. A device publishes one message and waits
// (esp-mqtt, PubSubClient), a gateway keeps a handful in flight, so every
// publisher here has 1, 5 or 10 messages in flight (sent, not yet
// received by every subscriber), and the fixed rates are what a fleet
// sends, not what the broker can take.
func DefaultCompareSet(d time.Duration) []CompareScenario {
	var set []CompareScenario
	for _, w := range []int{1, 5, 10} {
		set = append(set, CompareScenario{fmt.Sprintf("fanin qos0 100->1 window %d", w),
			fmt.Sprintf("100 publishers -> 1 subscriber on bench/fanin/+, QoS 0, 64 B, %d in flight per publisher", w),
			LoadConfig{Scenario: "fanin", Publishers: 100, QoS: 0, Payload: 64, Window: w, Duration: d}})
	}
	for _, w := range []int{1, 5, 10} {
		set = append(set, CompareScenario{fmt.Sprintf("fanout qos0 1->100 window %d", w),
			fmt.Sprintf("1 publisher -> 100 subscribers of bench/fanout, QoS 0, 64 B, %d in flight", w),
			LoadConfig{Scenario: "fanout", Subscribers: 100, QoS: 0, Payload: 64, Window: w, Duration: d}})
	}
	set = append(set, CompareScenario{"pairs qos1 x100 window 10",
		"100 publisher/subscriber pairs, QoS 1 both ways, 64 B, 10 in flight per publisher",
		LoadConfig{Scenario: "pairs", Publishers: 100, QoS: 1, Payload: 64, Window: 10, Duration: d}})
	for _, r := range []struct {
		rate int
		name string
	}{{1000, "1k"}, {10000, "10k"}, {50000, "50k"}} {
		set = append(set, CompareScenario{fmt.Sprintf("fanin qos0 100->1 @%s/s", r.name),
			fmt.Sprintf("100 publishers -> 1 subscriber, QoS 0, 64 B, %d msg/s in all (%d/s each), at most 10 in flight per publisher", r.rate, r.rate/100),
			LoadConfig{Scenario: "fanin", Publishers: 100, QoS: 0, Payload: 64, Rate: r.rate, Window: 10, Duration: d}})
	}
	set = append(set, CompareScenario{"fanin qos0 100->1 @10k/s spread",
		"100 publishers -> 1 subscriber, QoS 0, 64 B, 10000 msg/s in all (100/s each), at most 10 in flight per publisher, the publishers out of phase (each 1/100 of a period after the one before), as a fleet's devices publish",
		LoadConfig{Scenario: "fanin", Publishers: 100, QoS: 0, Payload: 64, Rate: 10000, Window: 10, Duration: d, Spread: true}})
	return set
}

// CompareSet is the default set, followed by the deep-pipeline rows when
// deep is set (--deep).
func CompareSet(d time.Duration, deep bool) []CompareScenario {
	set := DefaultCompareSet(d)
	if deep {
		set = append(set, DeepCompareSet(d)...)
	}
	return set
}

// DeepCompareSet is the deep-pipeline shape (--deep): every publisher
// keeps 256 messages in flight, which no device does; it measures how
// well a broker batches, and flatters one that does.
func DeepCompareSet(d time.Duration) []CompareScenario {
	return []CompareScenario{
		{"fanin qos0 100->1 " + DeepLabel, "100 publishers -> 1 subscriber, QoS 0, 64 B, " + DeepLabel,
			LoadConfig{Scenario: "fanin", Publishers: 100, QoS: 0, Payload: 64, Window: 256, Duration: d}},
		{"fanout qos0 1->100 " + DeepLabel, "1 publisher -> 100 subscribers, QoS 0, 64 B, " + DeepLabel,
			LoadConfig{Scenario: "fanout", Subscribers: 100, QoS: 0, Payload: 64, Window: 256, Duration: d}},
		{"pairs qos1 x100 " + DeepLabel, "100 pairs, QoS 1, 64 B, " + DeepLabel,
			LoadConfig{Scenario: "pairs", Publishers: 100, QoS: 1, Payload: 64, Window: 256, Duration: d}},
	}
}

// CompareRow holds one scenario's results per broker.
type CompareRow struct {
	Scenario string     // the set's name, with " v5" (" v3.1.1") when the run is not 3.1.1 alone
	About    string     // the set's description of the shape
	Load     LoadConfig // what ran (Addr and BrokerPID are the last broker's)
	// Results holds each broker's result: with several rounds
	// (CompareOptions.Rounds), the median one (compareLoad).
	Results map[string]LoadResult
	// Rounds holds each broker's result of every round, in round order.
	Rounds map[string][]LoadResult
	// Strace holds the strace pass's counts per broker
	// (CompareOptions.Strace).
	Strace map[string]StraceResult
}

// CompareOptions say what a comparison runs against each broker.
type CompareOptions struct {
	Set   []CompareScenario // load scenarios
	Conns ConnConfig        // idle-connection scenario when Conns.Conns > 0 (Addr and BrokerPID are filled in)
	Fleet FleetConfig       // fleet soak when Fleet.Devices > 0 (Addr and BrokerPID are filled in)

	// TLS is the idle-TLS-connection scenario when TLS.Conns > 0 (TLS.TLS
	// set; Addr, BrokerPID and MetricsURL are filled in), run against each
	// of TLSOrder, started by TLSStarters (StartTinyMQTLS,
	// StartMosquittoTLS, StartCommandTLS), after the other scenarios.
	TLS         ConnConfig
	TLSStarters map[string]func() (*Broker, error)
	TLSOrder    []string
	Log         io.Writer

	// Versions are the MQTT versions ("3.1.1", "5") the load set and the
	// conn scenario run at, one after the other on each broker (empty:
	// 3.1.1). The fleet and the TLS scenario run at 3.1.1. V5 applies to
	// the load set's 5.0 rows: topic aliases and user properties.
	Versions []string
	V5       V5Options
	// Rounds is how many times each load row runs against each broker
	// (at most one: once); the brokers take turns row by row (compareLoad).
	Rounds int
	// Persistent runs every load row between persistent sessions
	// (LoadConfig.Persistent).
	Persistent bool
	// Strace, when set, is the strace binary: after the load set each
	// broker runs it once more on a fresh process, each row under
	// strace -c -f -p PID (attached for that row only), to count every
	// system call it makes per delivered message. Its timings are not
	// used: strace slows the broker.
	Strace string
	// StraceDir holds strace's output files (empty: the system's
	// temporary directory).
	StraceDir string
}

// V5Options are the 5.0 features the comparison's 5.0 load rows use.
type V5Options struct {
	TopicAlias bool
	UserProps  int
}

// compareVersions is opts.Versions, or 3.1.1 alone.
func (o *CompareOptions) compareVersions() []string {
	if len(o.Versions) == 0 {
		return []string{"3.1.1"}
	}
	return o.Versions
}

// compareRows is the load set at each version, in order: the rows of the
// report. Names get the version when the run is not 3.1.1 alone.
func (o *CompareOptions) compareRows() []CompareRow {
	vs := o.compareVersions()
	var rows []CompareRow
	for _, v := range vs {
		for _, sc := range o.Set {
			cfg := sc.Load
			cfg.MQTTVersion = v
			name := sc.Name
			if len(vs) > 1 || v != "3.1.1" {
				name += " v" + v
			}
			if v == "5" {
				cfg.TopicAlias, cfg.UserProps = o.V5.TopicAlias, o.V5.UserProps
			}
			if o.Persistent {
				cfg.Persistent = true
				name += " persistent"
			}
			rows = append(rows, CompareRow{Scenario: name, About: sc.About, Load: cfg, Results: map[string]LoadResult{}, Rounds: map[string][]LoadResult{}, Strace: map[string]StraceResult{}})
		}
	}
	return rows
}

// CompareReport is a comparison's outcome.
type CompareReport struct {
	Rows     []CompareRow
	Versions []string                         // the versions Rows and Conn ran at, in order
	Rounds   int                              // how many times each load row ran per broker (CompareOptions.Rounds, at least 1)
	Conn     map[string]map[string]ConnResult // version -> broker -> idle connections
	Fleet    map[string]FleetResult
	TLS      map[string]ConnResult
	// Process is the name of the process measured per broker
	// (/proc/PID/comm of the PID its CPU and system calls were read from,
	// at most 15 bytes): "sh" or a script's name for a --broker command
	// that does not exec the broker.
	Process map[string]string
}

// Compare runs every scenario against every broker, one broker process
// at a time: a fresh one for each load row and round (compareLoad, which
// interleaves the brokers row by row), then one for the strace pass, the
// conn scenario and the fleet each.
func Compare(ctx context.Context, starters map[string]func() (*Broker, error), order []string, opts CompareOptions) (CompareReport, error) {
	rep := CompareReport{Rows: opts.compareRows(), Versions: opts.compareVersions(), Rounds: max(opts.Rounds, 1), Conn: map[string]map[string]ConnResult{},
		Fleet: map[string]FleetResult{}, TLS: map[string]ConnResult{}, Process: map[string]string{}}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	if err := compareLoad(ctx, starters, order, opts, &rep, log); err != nil {
		return rep, err
	}
	for _, name := range order {
		if len(rep.Rows) > 0 && opts.Strace != "" {
			if err := straceRows(ctx, starters[name], name, rep.Rows, opts, log); err != nil {
				return rep, err
			}
		}
		for _, v := range rep.Versions {
			if opts.Conns.Conns <= 0 {
				break
			}
			b, err := starters[name]()
			if err != nil {
				return rep, err
			}
			cfg := opts.Conns
			cfg.Addr, cfg.BrokerPID, cfg.MQTTVersion = b.Addr, b.PID(), v
			fmt.Fprintf(log, "%s: conn %d idle MQTT %s connections ...\n", name, cfg.Conns, v)
			res, err := RunConn(ctx, cfg, nil)
			b.Stop()
			if err != nil {
				return rep, fmt.Errorf("%s conn v%s: %w", name, v, err)
			}
			if rep.Conn[v] == nil {
				rep.Conn[v] = map[string]ConnResult{}
			}
			rep.Conn[v][name] = res
		}
		if opts.Fleet.Devices > 0 {
			b, err := starters[name]()
			if err != nil {
				return rep, err
			}
			cfg := opts.Fleet
			cfg.Addr, cfg.BrokerPID = b.Addr, b.PID()
			fmt.Fprintf(log, "%s: fleet %d devices for %v ...\n", name, cfg.Devices, cfg.Duration)
			res, err := RunFleet(ctx, cfg, nil)
			b.Stop()
			if err != nil {
				return rep, fmt.Errorf("%s fleet: %w", name, err)
			}
			rep.Fleet[name] = res
		}
	}
	if opts.TLS.Conns > 0 {
		for _, name := range opts.TLSOrder {
			start := opts.TLSStarters[name]
			if start == nil {
				return rep, fmt.Errorf("compare: no TLS starter for %s", name)
			}
			b, err := start()
			if err != nil {
				return rep, fmt.Errorf("%s tls: %w", name, err)
			}
			cfg := opts.TLS
			cfg.Addr, cfg.BrokerPID, cfg.MetricsURL = b.Addr, b.PID(), b.MetricsURL
			fmt.Fprintf(log, "%s: conn %d idle TLS connections ...\n", name, cfg.Conns)
			res, err := RunConn(ctx, cfg, nil)
			b.Stop()
			if err != nil {
				return rep, fmt.Errorf("%s tls: %w", name, err)
			}
			rep.TLS[name] = res
		}
	}
	return rep, nil
}

// compareLoad runs the load rows, interleaved: for each round, each row
// runs against every broker in turn, each on a fresh process, the order
// rotated from row to row and round to round. A broker's figure for a row
// is thus measured minutes, not a whole set, away from its peers', and no
// broker always goes first. Each row keeps every round's results
// (row.Rounds, in round order) and, in row.Results, the round whose
// messages per broker CPU-second is the median (the lower of the two
// middle ones for an even count). Runs on the comparison's goroutine.
func compareLoad(ctx context.Context, starters map[string]func() (*Broker, error), order []string, opts CompareOptions, rep *CompareReport, log io.Writer) error {
	rounds := max(opts.Rounds, 1)
	for r := 0; r < rounds; r++ {
		for i := range rep.Rows {
			row := &rep.Rows[i]
			for k := range order {
				name := order[(k+i+r)%len(order)]
				b, err := starters[name]()
				if err != nil {
					return err
				}
				cfg := row.Load
				cfg.Addr, cfg.BrokerPID = b.Addr, b.PID()
				if rounds > 1 {
					fmt.Fprintf(log, "round %d/%d: %s: %s ...\n", r+1, rounds, name, row.Scenario)
				} else {
					fmt.Fprintf(log, "%s: %s ...\n", name, row.Scenario)
				}
				res, err := RunLoad(ctx, cfg)
				rep.Process[name] = b.Process
				b.Stop()
				if err != nil {
					return fmt.Errorf("%s %s: %w", name, row.Scenario, err)
				}
				row.Rounds[name] = append(row.Rounds[name], res)
			}
		}
	}
	for i := range rep.Rows {
		row := &rep.Rows[i]
		for name, rs := range row.Rounds {
			row.Results[name] = medianRound(rs)
		}
	}
	return nil
}

// medianRound is the result whose messages per broker CPU-second is the
// median of rs (the lower middle one for an even count).
func medianRound(rs []LoadResult) LoadResult {
	s := slices.Clone(rs)
	slices.SortStableFunc(s, func(a, b LoadResult) int { return cmp.Compare(a.PerBrokerCPU, b.PerBrokerCPU) })
	return s[(len(s)-1)/2]
}

// straceRows runs every row once more against a fresh broker from start,
// each under its own strace -c -f -p PID, and stores the counts in
// row.Strace[name]. A row strace fails on keeps the error and the pass
// goes on. Runs on the comparison's goroutine.
func straceRows(ctx context.Context, start func() (*Broker, error), name string, rows []CompareRow, opts CompareOptions, log io.Writer) error {
	b, err := start()
	if err != nil {
		return err
	}
	defer b.Stop()
	for i := range rows {
		row := &rows[i]
		cfg := row.Load
		cfg.Addr, cfg.BrokerPID = b.Addr, 0 // no CPU or /proc/PID/io reading under strace
		fmt.Fprintf(log, "%s: %s under strace ...\n", name, row.Scenario)
		tr, err := StartStrace(opts.Strace, b.PID(), opts.StraceDir)
		if err != nil {
			row.Strace[name] = StraceResult{Err: err.Error()}
			continue
		}
		res, err := RunLoad(ctx, cfg)
		calls, total, serr := tr.Stop()
		if err != nil {
			return fmt.Errorf("%s %s under strace: %w", name, row.Scenario, err)
		}
		sr := StraceResult{Total: total, Delivered: res.Delivered}
		if serr != nil {
			sr.Err = serr.Error()
		}
		if res.Delivered > 0 {
			sr.PerMsg = float64(total) / float64(res.Delivered)
		}
		sr.Top = calls[:min(3, len(calls))]
		row.Strace[name] = sr
	}
	return nil
}

// WriteCompareTLS prints the idle-TLS-connection figures, a row per broker
// of order that has them, then the ratio of the first such broker to each
// other one. what describes the run (e.g. "TLS 1.3, X25519").
func WriteCompareTLS(w io.Writer, rep CompareReport, order []string, what string) {
	var names []string
	for _, b := range order {
		if _, ok := rep.TLS[b]; ok {
			names = append(names, b)
		}
	}
	if len(names) == 0 {
		return
	}
	heap, resumed := false, false
	for _, b := range names {
		heap = heap || rep.TLS[b].HeapAfter > 0
		resumed = resumed || rep.TLS[b].Resumed > 0
	}
	fmt.Fprintf(w, "\n| idle TLS connections (%s) | connected (failed) | broker RSS per idle TLS connection | handshakes/s | broker CPU µs per handshake |", what)
	if resumed {
		fmt.Fprint(w, " resumed handshakes |")
	}
	if heap {
		fmt.Fprint(w, " broker Go heap per connection |")
	}
	fmt.Fprint(w, "\n| --- | --- | --- | --- | --- |")
	if resumed {
		fmt.Fprint(w, " --- |")
	}
	if heap {
		fmt.Fprint(w, " --- |")
	}
	fmt.Fprintln(w)
	for _, b := range names {
		r := rep.TLS[b]
		fmt.Fprintf(w, "| %s | %d (%d) | %.0f B | %.0f | %.0f |", b, r.Connected, r.Failed, r.RSSPerConn, r.HandshakesPerSec, r.CPUusPerHandshake)
		if resumed {
			fmt.Fprintf(w, " %d |", r.Resumed)
		}
		if heap {
			if r.HeapAfter > 0 {
				fmt.Fprintf(w, " %.0f B |", r.HeapPerConn)
			} else {
				fmt.Fprint(w, " — |")
			}
		}
		fmt.Fprintln(w)
	}
	ratio := func(a, b float64) string {
		if b <= 0 || a <= 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	ref := rep.TLS[names[0]]
	for _, b := range names[1:] {
		r := rep.TLS[b]
		fmt.Fprintf(w, "| %s/%s | | %s | %s | %s |", names[0], b, ratio(ref.RSSPerConn, r.RSSPerConn),
			ratio(ref.HandshakesPerSec, r.HandshakesPerSec), ratio(ref.CPUusPerHandshake, r.CPUusPerHandshake))
		if resumed {
			fmt.Fprint(w, " |")
		}
		if heap {
			fmt.Fprint(w, " |")
		}
		fmt.Fprintln(w)
	}
}

// WriteCompareExtras prints the conn and fleet figures per broker.
func WriteCompareExtras(w io.Writer, rep CompareReport, order []string) {
	for _, v := range rep.Versions {
		conn := rep.Conn[v]
		if len(conn) == 0 {
			continue
		}
		title := "idle connections"
		if len(rep.Versions) > 1 || v != "3.1.1" {
			title += " (MQTT " + v + ")"
		}
		fmt.Fprintf(w, "\n| %s | %s |\n| --- |%s\n", title, strings.Join(order, " | "), strings.Repeat(" --- |", len(order)))
		line := func(name string, get func(ConnResult) string) {
			fmt.Fprintf(w, "| %s |", name)
			for _, b := range order {
				fmt.Fprintf(w, " %s |", get(conn[b]))
			}
			fmt.Fprintln(w)
		}
		line("connected (failed)", func(r ConnResult) string { return fmt.Sprintf("%d (%d)", r.Connected, r.Failed) })
		line("broker RSS per connection", func(r ConnResult) string { return fmt.Sprintf("%.0f B", r.RSSPerConn) })
		line("connects/s", func(r ConnResult) string { return fmt.Sprintf("%.0f", r.ConnectsPerSec) })
		line("broker CPU per 1000 connects", func(r ConnResult) string { return fmt.Sprintf("%.1f ms", r.BrokerCPUPerK) })
	}
	if len(rep.Fleet) > 0 {
		fmt.Fprintf(w, "\n| fleet | %s |\n| --- |%s\n", strings.Join(order, " | "), strings.Repeat(" --- |", len(order)))
		line := func(name string, get func(FleetResult) string) {
			fmt.Fprintf(w, "| %s |", name)
			for _, b := range order {
				fmt.Fprintf(w, " %s |", get(rep.Fleet[b]))
			}
			fmt.Fprintln(w)
		}
		line("peak connected", func(r FleetResult) string { return strconv.FormatInt(r.PeakConnected, 10) })
		line("connect failures / drops", func(r FleetResult) string { return fmt.Sprintf("%d / %d", r.Failures, r.Drops) })
		line("telemetry sent / PUBACKs / re-sends", func(r FleetResult) string {
			return fmt.Sprintf("%d / %d / %d", r.Telemetry, r.Pubacks, r.Resends)
		})
		line("telemetry to backend: delivered / lost / dup", func(r FleetResult) string {
			return fmt.Sprintf("%d / %d / %d", r.TelemetryDelivered, r.TelemetryLost, r.TelemetryDuplicates)
		})
		line("telemetry latency p50 / p99", func(r FleetResult) string {
			return fmt.Sprintf("%.0f / %.0f µs", r.TelemetryP50us, r.TelemetryP99us)
		})
		line("commands sent / received", func(r FleetResult) string { return fmt.Sprintf("%d / %d", r.CommandsSent, r.Commands) })
		line("command latency p50 / p99", func(r FleetResult) string {
			return fmt.Sprintf("%.0f / %.0f µs", r.CommandP50us, r.CommandP99us)
		})
		line("broker RSS peak", func(r FleetResult) string { return fmt.Sprintf("%.1f MiB", float64(r.BrokerRSSPeak)/(1<<20)) })
		line("broker CPU", func(r FleetResult) string { return fmt.Sprintf("%.2f s", r.BrokerCPU) })
	}
}

// writeRoundsLine prints, for a row that ran more than one round, every
// round's messages per broker CPU-second per broker and, in the ratio
// columns, the ratio within each round (its brokers ran minutes apart,
// compareLoad). Nothing for a single round.
func writeRoundsLine(w io.Writer, row CompareRow, order []string) {
	n := 0
	for _, rs := range row.Rounds {
		n = max(n, len(rs))
	}
	if n < 2 {
		return
	}
	fmt.Fprintf(w, "| %s | msgs per broker CPU-s, each round |", row.Scenario)
	for _, b := range order {
		var v []string
		for _, r := range row.Rounds[b] {
			v = append(v, fmt.Sprintf("%.0f", r.PerBrokerCPU))
		}
		fmt.Fprintf(w, " %s |", strings.Join(v, " / "))
	}
	for _, o := range order[1:] {
		a, b := row.Rounds[order[0]], row.Rounds[o]
		var v []string
		for j := range min(len(a), len(b)) {
			if b[j].PerBrokerCPU > 0 {
				v = append(v, fmt.Sprintf("%.2f", a[j].PerBrokerCPU/b[j].PerBrokerCPU))
			} else {
				v = append(v, "—")
			}
		}
		fmt.Fprintf(w, " %s |", strings.Join(v, " / "))
	}
	fmt.Fprintln(w)
}

// WriteCompareTable prints one table per row (shape): every broker side
// by side, then the ratio of the first broker to each other one. Every
// line starts with the row's name, so that a line read alone (grep) says
// what it measured.
func WriteCompareTable(w io.Writer, rows []CompareRow, order []string) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	figures := []struct {
		name string
		get  func(LoadResult) float64
		f    string
	}{
		{"delivered msgs/s", func(r LoadResult) float64 { return r.DeliveredPerS }, "%.0f"},
		{"msgs per broker CPU-s", func(r LoadResult) float64 { return r.PerBrokerCPU }, "%.0f"},
		{"broker CPU-s", func(r LoadResult) float64 { return r.BrokerCPU }, "%.2f"},
		{"latency p50 µs", func(r LoadResult) float64 { return r.P50us }, "%.0f"},
		{"latency p99 µs", func(r LoadResult) float64 { return r.P99us }, "%.0f"},
		{"latency p99.9 µs", func(r LoadResult) float64 { return r.P999us }, "%.0f"},
		{"r+w syscalls/msg", func(r LoadResult) float64 { return r.RWSyscallsPerMsg }, "%.2f"},
		{"lost / dup / reordered", nil, ""},
	}
	for k, row := range rows {
		if k > 0 {
			fmt.Fprintln(bw)
		}
		if row.About != "" {
			fmt.Fprintf(bw, "**%s**: %s\n\n", row.Scenario, row.About)
		}
		fmt.Fprintf(bw, "| scenario | figure | %s |", strings.Join(order, " | "))
		for _, o := range order[1:] {
			fmt.Fprintf(bw, " %s/%s |", order[0], o)
		}
		fmt.Fprintln(bw)
		fmt.Fprint(bw, "| --- | --- |"+strings.Repeat(" --- |", len(order)+len(order)-1))
		fmt.Fprintln(bw)
		for _, fg := range figures {
			fmt.Fprintf(bw, "| %s | %s |", row.Scenario, fg.name)
			for _, b := range order {
				r := row.Results[b]
				if fg.get == nil {
					fmt.Fprintf(bw, " %d / %d / %d |", r.Lost, r.Duplicates, r.OutOfOrder)
					continue
				}
				fmt.Fprintf(bw, " "+fg.f+" |", fg.get(r))
			}
			for _, o := range order[1:] {
				if fg.get == nil {
					fmt.Fprint(bw, " |")
				} else if d := fg.get(row.Results[o]); d > 0 {
					fmt.Fprintf(bw, " %.2f |", fg.get(row.Results[order[0]])/d)
				} else {
					fmt.Fprint(bw, " — |")
				}
			}
			fmt.Fprintln(bw)
			if fg.name == "msgs per broker CPU-s" {
				writeRoundsLine(bw, row, order)
			}
		}
		if len(row.Strace) > 0 {
			fmt.Fprintf(bw, "| %s | all syscalls/msg (strace pass) |", row.Scenario)
			for _, b := range order {
				if st, ok := row.Strace[b]; ok && st.Err == "" {
					fmt.Fprintf(bw, " %.2f |", st.PerMsg)
				} else {
					fmt.Fprint(bw, " — |")
				}
			}
			for _, o := range order[1:] {
				a, b := row.Strace[order[0]], row.Strace[o]
				if a.Err == "" && b.Err == "" && b.PerMsg > 0 {
					fmt.Fprintf(bw, " %.2f |", a.PerMsg/b.PerMsg)
				} else {
					fmt.Fprint(bw, " — |")
				}
			}
			fmt.Fprintln(bw)
			fmt.Fprintf(bw, "| %s | top 3 syscalls per msg (strace pass) |", row.Scenario)
			for _, b := range order {
				st, ok := row.Strace[b]
				if !ok || st.Err != "" || st.Delivered == 0 {
					fmt.Fprint(bw, " — |")
					continue
				}
				var top []string
				for _, c := range st.Top {
					top = append(top, fmt.Sprintf("%s %.2f", c.Name, float64(c.Calls)/float64(st.Delivered)))
				}
				fmt.Fprintf(bw, " %s |", strings.Join(top, ", "))
			}
			fmt.Fprint(bw, strings.Repeat(" |", len(order)-1))
			fmt.Fprintln(bw)
		}
		if row.Load.MQTTVersion == "5" && (row.Load.TopicAlias || row.Load.UserProps > 0) {
			fmt.Fprintf(bw, "| %s | aliased publishers / alias errors / user-property mismatches |", row.Scenario)
			for _, b := range order {
				r := row.Results[b]
				fmt.Fprintf(bw, " %d / %d / %d |", r.AliasedPublishers, r.AliasErrors, r.PropMismatches)
			}
			fmt.Fprint(bw, strings.Repeat(" |", len(order)-1))
			fmt.Fprintln(bw)
		}
	}
}

// WriteCompareHost prints where the run happened and which process was
// measured for each broker, and what the system-call figures count.
func WriteCompareHost(w io.Writer, m Machine, rep CompareReport, order []string) {
	fmt.Fprintf(w, "- host: %s, %d cores (/proc/cpuinfo), Linux %s, %s\n", m.CPU, m.Processors, m.Kernel, m.Go)
	var ps []string
	for _, b := range order {
		if p, ok := rep.Process[b]; ok {
			ps = append(ps, fmt.Sprintf("%s: `%s`", b, p))
		}
	}
	if len(ps) > 0 {
		fmt.Fprintf(w, "- measured processes (/proc/PID/comm, CPU and system calls summed over their threads): %s\n", strings.Join(ps, ", "))
	}
	if len(rep.Rows) > 0 {
		if rep.Rounds > 1 {
			fmt.Fprintf(w, "- rounds: %d; in each, every row ran against each broker in turn, a fresh process each time, the order rotated from row to row and round to round; a broker's figures are from its round with the median msgs per broker CPU-s, and the \"each round\" line gives every round with the ratios within it\n", rep.Rounds)
		} else {
			fmt.Fprintln(w, "- rounds: 1; every row ran against each broker in turn, a fresh process each time, the order rotated from row to row (--rounds 3 for medians)")
		}
	}
	fmt.Fprintln(w, "- r+w syscalls/msg: read- and write-family calls (read, readv, write, writev, pread, pwrite: syscr + syscw in /proc/PID/io) per delivered message, over the CPU window; epoll_wait, send/recv/sendmsg/recvmsg and other calls are not in /proc/PID/io, so a broker that writes with send() shows fewer than it makes (the strace pass, --syscalls strace, counts every call)")
	fmt.Fprintln(w)
}
