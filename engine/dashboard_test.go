package engine

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/engine/auth"
)

// The dashboard: the page and its assets, the stats stream (auth, bounds,
// the fields the page reads), the client search, the topic sampler, and
// the page itself in headless Chromium.

func TestDashboardPageAndAssets(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "s3cret" })
	base := "http://" + b.HTTPAddr()
	for _, c := range []struct{ path, ctype, has string }{
		{"/", "text/html", `src="/dashboard/app.js"`},
		{"/dashboard", "text/html", `id="client-list"`},
		{"/dashboard/", "text/html", `id="chart-msgs"`},
		{"/dashboard/app.js", "text/javascript", "/api/v1/stats/stream"},
		{"/dashboard/app.css", "text/css", "--in:"},
	} {
		// Static and public: no key needed, no figures inside.
		code, body, hdr := do(t, "GET", base+c.path, "")
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), c.ctype) || !strings.Contains(body, c.has) {
			t.Fatalf("GET %s: %d %q %.200s", c.path, code, hdr.Get("Content-Type"), body)
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("GET %s: CSP %q", c.path, csp)
		}
		if hdr.Get("Referrer-Policy") != "no-referrer" || hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: headers %v", c.path, hdr)
		}
	}
	// Nothing is loaded from elsewhere: no absolute URL in any asset.
	for _, a := range dashAssets {
		if s := string(a.body); strings.Contains(s, "http://") || strings.Contains(s, "https://") || strings.Contains(s, "//cdn") {
			t.Fatalf("an asset refers to another origin")
		}
	}
	if code, _, _ := do(t, "GET", base+"/dashboard/nope.js", ""); code != 404 {
		t.Fatalf("unknown asset: %d", code)
	}
	if code, _, hdr := do(t, "POST", base+"/dashboard", ""); code != 405 || hdr.Get("Allow") != "GET" {
		t.Fatalf("POST /dashboard: %d %v", code, hdr)
	}
}

// dashEv is one event of the stats stream.
type dashEv struct {
	event string
	data  map[string]any
	raw   string
}

// openDashStream opens GET /api/v1/stats/stream; events arrive on the
// channel. hdr are header name/value pairs.
func openDashStream(t *testing.T, url string, hdr ...string) (<-chan dashEv, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	ch := make(chan dashEv, 100)
	if resp.StatusCode != 200 {
		resp.Body.Close()
		close(ch)
		return ch, resp
	}
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev dashEv
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					ch <- ev
				}
				ev = dashEv{}
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.raw = line[6:]
				if err := json.Unmarshal([]byte(ev.raw), &ev.data); err != nil {
					ev.event = "bad json: " + ev.raw
				}
			}
		}
	}()
	return ch, resp
}

// nextDash returns the next event of kind within d.
func nextDash(t *testing.T, ch <-chan dashEv, kind string, d time.Duration) dashEv {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended waiting for %q", kind)
			}
			if strings.HasPrefix(ev.event, "bad json") {
				t.Fatal(ev.event)
			}
			if ev.event == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %q event within %v", kind, d)
		}
	}
}

func TestDashboardStreamEvents(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	sub := pahoClient(t, b.MQTTAddr(), "dash-sub", true)
	got := pahoSubscribe(t, sub, "hot/#", 0)
	pub := pahoClient(t, b.MQTTAddr(), "dash-pub", true)

	ch, resp := openDashStream(t, base+"/api/v1/stats/stream")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	hello := nextDash(t, ch, "hello", 5*time.Second)
	if hello.data["write"] != true || hello.data["api_key"] != false {
		t.Fatalf("hello without a key configured: %s", hello.raw)
	}
	first := nextDash(t, ch, "stats", 5*time.Second)
	// Every field the page reads is there, with its JSON type.
	for _, k := range []string{"time", "uptime_seconds", "clients", "connect_rate", "connections_max", "msgs_in",
		"msgs_out", "bytes_in", "bytes_out", "msgs_in_rate", "msgs_out_rate", "bytes_in_rate", "bytes_out_rate",
		"subscriptions", "sessions_offline", "retained", "queued", "inflight", "dropped_total", "drop_rate",
		"slow_consumers", "tls_connections", "memory_bytes"} {
		if _, ok := first.data[k].(float64); !ok {
			t.Fatalf("field %q missing or not a number: %s", k, first.raw)
		}
	}
	if _, ok := first.data["version"].(string); !ok {
		t.Fatalf("version: %s", first.raw)
	}
	for _, k := range []string{"transports", "bridges", "top_topics", "loop_busy"} {
		if _, ok := first.data[k].([]any); !ok {
			t.Fatalf("field %q missing or not an array: %s", k, first.raw)
		}
	}
	if _, ok := first.data["dropped"].(map[string]any); !ok {
		t.Fatalf("dropped: %s", first.raw)
	}
	if first.data["clients"] != 2.0 || first.data["subscriptions"] != 1.0 {
		t.Fatalf("clients/subscriptions: %s", first.raw)
	}
	if n := len(first.data["bridges"].([]any)); n != 0 {
		t.Fatalf("bridges before bridges exist: %s", first.raw)
	}
	tr := first.data["transports"].([]any)
	if len(tr) != 3 || tr[0].(map[string]any)["name"] != "mqtt" || tr[0].(map[string]any)["connections"] != 2.0 {
		t.Fatalf("transports: %s", first.raw)
	}

	// Traffic: 3000 publishes, most to one topic, within a bound.
	const n = 3000
	for i := range n {
		topic := "hot/a"
		if i%10 == 0 {
			topic = "hot/b"
		}
		pub.Publish(topic, 0, false, "x")
	}
	for range n {
		next(t, got)
	}
	// Events keep coming, once a second, with the traffic in them.
	var ev dashEv
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev = nextDash(t, ch, "stats", 5*time.Second)
		if ev.data["msgs_in"].(float64) >= first.data["msgs_in"].(float64)+n && len(ev.data["top_topics"].([]any)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event with the traffic: %s", ev.raw)
		}
	}
	if ev.data["time"].(float64) <= first.data["time"].(float64) || ev.data["msgs_out"].(float64) < n {
		t.Fatalf("later event: %s", ev.raw)
	}
	top := ev.data["top_topics"].([]any)[0].(map[string]any)
	if top["topic"] != "hot/a" || top["rate"].(float64) <= 0 {
		t.Fatalf("busiest topic: %s", ev.raw)
	}
}

func TestDashboardStreamAuth(t *testing.T) {
	h, err := auth.HashPasswordPBKDF2([]byte("pw"), 101)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(pw, []byte("alice:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "s3cret"; o.PasswordFile = pw; o.AuthFailDelayMax = -1 })
	base := "http://" + b.HTTPAddr()
	url := base + "/api/v1/stats/stream"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	for _, c := range []struct {
		name string
		hdr  []string
		url  string
		code int
	}{
		{"no credentials", nil, url, 401},
		{"wrong key", []string{"Authorization", "Bearer nope"}, url, 401},
		{"a password-file user, not the key holder", []string{"Authorization", basic}, url, 403},
		{"the key", []string{"Authorization", "Bearer s3cret"}, url, 200},
		{"the key as ?token=", nil, url + "?token=s3cret", 200},
	} {
		ch, resp := openDashStream(t, c.url, c.hdr...)
		if resp.StatusCode != c.code {
			t.Fatalf("%s: %d, want %d", c.name, resp.StatusCode, c.code)
		}
		if c.code == 200 {
			if hello := nextDash(t, ch, "hello", 5*time.Second); hello.data["write"] != true || hello.data["api_key"] != true {
				t.Fatalf("%s: hello %s", c.name, hello.raw)
			}
			nextDash(t, ch, "stats", 5*time.Second)
		}
	}
	// Without an API key a password-file user is the administrator (the
	// API's rule); without either, the dashboard is open.
	b2 := startHTTPBroker(t, func(o *Options) { o.PasswordFile = pw; o.AuthFailDelayMax = -1 })
	url2 := "http://" + b2.HTTPAddr() + "/api/v1/stats/stream"
	if _, resp := openDashStream(t, url2); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("password file, no credentials: %d %v", resp.StatusCode, resp.Header)
	}
	ch2, resp := openDashStream(t, url2, "Authorization", basic)
	if resp.StatusCode != 200 {
		t.Fatalf("password file, Basic: %d", resp.StatusCode)
	}
	if hello := nextDash(t, ch2, "hello", 5*time.Second); hello.data["write"] != true || hello.data["user"] != "alice" {
		t.Fatalf("password file, Basic: hello %s", hello.raw)
	}
	// The client list and the disconnect action follow the same rule.
	for _, c := range []struct {
		method, path string
		hdr          []string
		code         int
	}{
		{"GET", "/api/v1/clients?q=x", nil, 401},
		{"GET", "/api/v1/clients?q=x", []string{"Authorization", basic}, 403},
		{"DELETE", "/api/v1/clients/x", []string{"Authorization", basic}, 403},
		{"GET", "/api/v1/clients?q=x", []string{"Authorization", "Bearer s3cret"}, 200},
		{"DELETE", "/api/v1/clients/x", []string{"Authorization", "Bearer s3cret"}, 404},
	} {
		if code, body, _ := do(t, c.method, base+c.path, "", c.hdr...); code != c.code {
			t.Fatalf("%s %s %v: %d %s, want %d", c.method, c.path, c.hdr, code, body, c.code)
		}
	}
}

func TestDashboardStreamsBounded(t *testing.T) {
	b := startHTTPBroker(t, nil)
	url := "http://" + b.HTTPAddr() + "/api/v1/stats/stream"
	var cancels []context.CancelFunc
	for i := range maxDashStreams {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i, err, resp)
		}
		t.Cleanup(func() { resp.Body.Close() })
	}
	if code, _, _ := do(t, "HEAD", url, ""); code != 405 {
		t.Fatalf("HEAD stream: %d", code)
	}
	if code, body, _ := do(t, "GET", url, ""); code != 503 || !strings.Contains(body, "too many") {
		t.Fatalf("stream over the bound: %d %s", code, body)
	}
	// Closed streams free their places (at the loops' next tick).
	for _, c := range cancels {
		c()
	}
	waitFor(t, 5*time.Second, "closed dashboards forgotten", func() bool { return b.dash.streams.Load() == 0 })
	ch, resp := openDashStream(t, url)
	if resp.StatusCode != 200 {
		t.Fatalf("stream after the others closed: %d", resp.StatusCode)
	}
	nextDash(t, ch, "stats", 5*time.Second)
}

func TestDashboardClientSearch(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	for _, id := range []string{"kitchen-1", "kitchen-2", "garage"} {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + b.MQTTAddr()).SetClientID(id).SetKeepAlive(42 * time.Second).
			SetAutoReconnect(false).SetProtocolVersion(4)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(0) })
	}
	var list struct {
		Total   int          `json:"total"`
		Clients []ClientInfo `json:"clients"`
	}
	get := func(q string) {
		t.Helper()
		code, body, _ := do(t, "GET", base+"/api/v1/clients?limit=1&q="+q, "")
		list.Clients = nil
		if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil {
			t.Fatalf("clients?q=%s: %d %v %s", q, code, err, body)
		}
	}
	get("KITCHEN")
	if list.Total != 2 || len(list.Clients) != 1 || list.Clients[0].ClientID != "kitchen-1" || list.Clients[0].KeepAlive != 42 {
		t.Fatalf("search kitchen (paged by 1): %+v", list)
	}
	get("127.0.0.1")
	if list.Total != 3 {
		t.Fatalf("search by address: %+v", list)
	}
	get("nobody")
	if list.Total != 0 || list.Clients == nil {
		t.Fatalf("search with no match: %+v", list)
	}
}

func TestTopicSampler(t *testing.T) {
	var s topicSampler
	hits := 0
	const n = 64 * 2000
	for i := range n {
		name := []byte("a")
		if i%4 == 0 {
			name = []byte("b")
		}
		if s.skip--; s.skip <= 0 {
			s.sample(name)
			hits++
		}
	}
	if hits < n/64*8/10 || hits > n/64*12/10 {
		t.Fatalf("%d samples of %d publishes; want about 1 in %d", hits, n, topSampleEvery)
	}
	m := map[string]uint32{}
	s.drainInto(m)
	if a, bb := m["a"], m["b"]; a+bb != uint32(hits) || a < 2*bb || bb == 0 {
		t.Fatalf("counts %v of %d samples", m, hits)
	}
	// Bounded: past topSampleSlots topics, new ones are not counted;
	// $SYS and over-long names never are.
	for i := range 2 * topSampleSlots {
		s.sample([]byte("t/" + strconv.Itoa(i)))
	}
	s.sample([]byte("$SYS/broker/uptime"))
	s.sample([]byte(strings.Repeat("x", topSampleMaxLen+1)))
	clear(m)
	s.drainInto(m)
	if len(m) != topSampleSlots || m["t/0"] != 1 || m["t/"+strconv.Itoa(topSampleSlots)] != 0 {
		t.Fatalf("%d topics after %d distinct", len(m), 2*topSampleSlots)
	}
	clear(m)
	s.drainInto(m)
	if len(m) != 0 {
		t.Fatalf("drained twice: %v", m)
	}
}

// BenchmarkTopicSampler is what the sampler adds to each routed PUBLISH:
// the countdown, and on one publish in 64 a locked map increment.
func BenchmarkTopicSampler(b *testing.B) {
	var s topicSampler
	names := [][]byte{[]byte("sensor/1/temp"), []byte("sensor/2/temp"), []byte("sensor/3/temp")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if s.skip--; s.skip <= 0 {
			s.sample(names[i%3])
		}
	}
}

// --- headless Chromium ---

// cdp is a minimal Chrome DevTools Protocol client over
// --remote-debugging-pipe (fd 3: commands in, fd 4: replies out, each
// message ending in a NUL byte).
type cdp struct {
	t       *testing.T
	in      io.WriteCloser
	mu      sync.Mutex
	id      int
	waiting map[int]chan cdpReply
	session string
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func (c *cdp) read(out io.Reader) {
	r := bufio.NewReader(out)
	for {
		msg, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue // an event
		}
		c.mu.Lock()
		ch := c.waiting[m.ID]
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends a command (to the attached page once there is one) and
// decodes its result into res.
func (c *cdp) call(method string, params, res any) error {
	c.mu.Lock()
	c.id++
	id := c.id
	ch := make(chan cdpReply, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if c.session != "" {
		msg["sessionId"] = c.session
	}
	b, _ := json.Marshal(msg)
	if _, err := c.in.Write(append(b, 0)); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if res != nil {
			return json.Unmarshal(r.Result, res)
		}
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s: no reply within 20s", method)
	}
}

// startChromium runs headless Chromium with a DevTools pipe and attaches
// to its page. It skips the test when Chromium is missing (unless
// TINYMQ_REQUIRE_INTEROP=1).
func startChromium(t *testing.T) *cdp {
	t.Helper()
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
			t.Fatal("chromium not found and TINYMQ_REQUIRE_INTEROP=1")
		}
		t.Skip("chromium not installed (apt-get install chromium); skipping the browser test")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
		"--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
		"--remote-debugging-pipe", "--window-size=1280,900", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "about:blank")
	cmd.ExtraFiles = []*os.File{inR, outW} // fd 3, fd 4
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	inR.Close()
	outW.Close()
	c := &cdp{t: t, in: inW, waiting: map[int]chan cdpReply{}}
	go c.read(outR)
	t.Cleanup(func() {
		_ = c.call("Browser.close", map[string]any{}, nil)
		inW.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		outR.Close()
	})
	var targets struct {
		TargetInfos []struct {
			TargetID string `json:"targetId"`
			Type     string `json:"type"`
		} `json:"targetInfos"`
	}
	var page string
	deadline := time.Now().Add(15 * time.Second)
	for page == "" {
		if err := c.call("Target.getTargets", map[string]any{}, &targets); err != nil {
			t.Fatalf("chromium: %v (stderr: %.2000s)", err, stderr.String())
		}
		for _, ti := range targets.TargetInfos {
			if ti.Type == "page" {
				page = ti.TargetID
			}
		}
		if page == "" {
			if time.Now().After(deadline) {
				t.Fatal("chromium opened no page")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call("Target.attachToTarget", map[string]any{"targetId": page, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	c.session = att.SessionID
	if err := c.call("Page.enable", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// eval evaluates a JavaScript expression in the page and decodes its
// (JSON-serialisable) value into res.
func (c *cdp) eval(expr string, res any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := c.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return errors.New("page: " + r.ExceptionDetails.Text)
	}
	return json.Unmarshal(r.Result.Value, res)
}

// pageFigures are the figures the browser test reads from the DOM.
type pageFigures struct {
	State    string `json:"state"`
	Updates  int    `json:"updates"`
	MsgsIn   string `json:"msgsIn"`
	Clients  string `json:"clients"`
	Retained string `json:"retained"`
	Topic    string `json:"topic"`
	Bridges  bool   `json:"noBridges"`
	Rows     int    `json:"rows"`
	Kick     int    `json:"kick"`
	Listener string `json:"listener"`
}

const pageFiguresJS = `(() => {
  const q = (s) => document.querySelector(s);
  return {
    state: document.body.dataset.state,
    updates: +document.body.dataset.updates,
    msgsIn: q("#msgs-in").textContent,
    clients: q("#clients").textContent,
    retained: q("#retained").textContent,
    topic: q("#topics tbody tr td") ? q("#topics tbody tr td").textContent : "",
    noBridges: !q("#no-bridges").hidden,
    rows: document.querySelectorAll("#client-list tbody tr").length,
    kick: document.querySelectorAll("#client-list button.kick").length,
    listener: q("#transports tbody tr td") ? q("#transports tbody tr td").textContent : "",
  };
})()`

// TestDashboardInChromium loads the page in headless Chromium against a
// broker with traffic and checks that the DOM shows live figures that
// change, on one load and between two loads; it saves a screenshot under
// TINYMQ_ARTIFACTS (or the test's temporary directory).
func TestDashboardInChromium(t *testing.T) {
	c := startChromium(t)
	// For the documentation's screenshot: let the charts fill first
	// (TINYMQ_DASHBOARD_SETTLE=60s; at most two minutes).
	settle, _ := time.ParseDuration(os.Getenv("TINYMQ_DASHBOARD_SETTLE"))
	settle = min(max(settle, 0), 2*time.Minute)
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "s3cret" })
	sub := pahoClientWith(t, b.MQTTAddr(), "sensor-hub", "any", "s3cret")
	pahoSubscribeFunc(t, sub, "sensors/#", 0, func([]byte) {})
	pub := pahoClientWith(t, b.MQTTAddr(), "sensor-17", "any", "s3cret")
	for _, room := range []string{"kitchen", "garage", "attic"} {
		pub.Publish("sensors/"+room+"/status", 1, true, "online").WaitTimeout(5 * time.Second)
	}
	for i := range 4 {
		pahoClientWith(t, b.MQTTAddr(), "thermostat-"+strconv.Itoa(i+1), "any", "s3cret")
	}
	// Bounded traffic for the length of the test (at most three minutes):
	// 200 to 600 publishes a second, in steps of ten seconds.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		topics := []string{"sensors/kitchen/temp", "sensors/kitchen/temp", "sensors/garage/door", "sensors/attic/humidity"}
		for i := 0; i < 3*60*200; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			for j := range 1 + i/2000%3 {
				pub.Publish(topics[(i+j)%len(topics)], 0, false, strconv.Itoa(i))
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	url := "http://" + b.HTTPAddr() + "/?token=s3cret"
	load := func() {
		t.Helper()
		if err := c.call("Page.navigate", map[string]any{"url": url}, nil); err != nil {
			t.Fatal(err)
		}
	}
	figures := func(cond func(f pageFigures) bool, what string) pageFigures {
		t.Helper()
		var f pageFigures
		deadline := time.Now().Add(15*time.Second + settle)
		for {
			err := c.eval(pageFiguresJS, &f)
			if err == nil && cond(f) {
				return f
			}
			if time.Now().After(deadline) {
				t.Fatalf("page: %s: %+v %v", what, f, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	count := func(s string) int {
		n, _ := strconv.Atoi(s)
		return n
	}
	load()
	f1 := figures(func(f pageFigures) bool { return f.State == "live" && f.Updates >= 1 && count(f.MsgsIn) > 0 }, "first live figures")
	f2 := figures(func(f pageFigures) bool { return f.Updates >= f1.Updates+2 && count(f.MsgsIn) > count(f1.MsgsIn) }, "figures that change")
	if f2.Clients != "6" || f2.Retained != "3" || !f2.Bridges || f2.Listener != "mqtt" {
		t.Fatalf("page figures: %+v", f2)
	}
	f2 = figures(func(f pageFigures) bool { return f.Topic == "sensors/kitchen/temp" && f.Rows == 6 && f.Kick == 6 },
		"busiest topic and the client list with disconnect buttons")

	if settle > 0 {
		f2 = figures(func(f pageFigures) bool { return f.Updates >= f2.Updates+int(settle/time.Second) }, "settled charts")
	}
	// The token went from the address bar to sessionStorage.
	var href string
	if err := c.eval("location.href", &href); err != nil || strings.Contains(href, "token") {
		t.Fatalf("address after load: %q %v", href, err)
	}

	// A screenshot of the live page: a test artifact, never committed.
	var shot struct {
		Data string `json:"data"`
	}
	var height float64
	if err := c.eval("document.documentElement.scrollHeight", &height); err != nil || height < 100 {
		t.Fatalf("page height %v: %v", height, err)
	}
	clip := map[string]any{"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}
	if err := c.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true, "clip": clip}, &shot); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 1000 {
		t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
	dir := os.Getenv("TINYMQ_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))

	// A second load (with the token from sessionStorage now) shows more.
	url = "http://" + b.HTTPAddr() + "/dashboard"
	load()
	figures(func(f pageFigures) bool {
		return f.State == "live" && f.Updates >= 1 && count(f.MsgsIn) > count(f2.MsgsIn)
	},
		"a second load with larger figures")

	// Search, then disconnect one client with its button.
	var ok bool
	if err := c.eval(`(() => { const s = document.getElementById("search"); s.value = "THERMO";
		s.dispatchEvent(new Event("input")); return true; })()`, &ok); err != nil {
		t.Fatal(err)
	}
	figures(func(f pageFigures) bool { return f.Rows == 4 && f.Kick == 4 }, "search for thermostats")
	if err := c.eval(`(() => { window.confirm = () => true;
		for (const tr of document.querySelectorAll("#client-list tbody tr"))
			if (tr.cells[0].textContent === "thermostat-4") { tr.querySelector("button.kick").click(); return true; }
		return false; })()`, &ok); err != nil || !ok {
		t.Fatalf("click disconnect: %v %v", ok, err)
	}
	waitFor(t, 10*time.Second, "thermostat-4 disconnected by the button", func() bool {
		for _, ci := range b.Clients() {
			if ci.ClientID == "thermostat-4" {
				return false
			}
		}
		return true
	})
	figures(func(f pageFigures) bool { return f.Rows == 3 }, "the list without thermostat-4")
}

// pahoClientWith connects a 3.1.1 paho client with credentials.
func pahoClientWith(t *testing.T, addr, id, user, pass string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}
