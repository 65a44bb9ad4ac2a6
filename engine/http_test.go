package engine

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startHTTPBroker runs a broker with MQTT and HTTP on random loopback ports.
func startHTTPBroker(t testing.TB, edit func(*Options)) *Broker {
	t.Helper()
	b := startBroker(t, func(o *Options) {
		o.HTTPAddr = "127.0.0.1:0"
		if edit != nil {
			edit(o)
		}
	})
	// A later broker may get this port again: never reuse a kept-alive
	// connection to a stopped broker.
	t.Cleanup(httpClient.CloseIdleConnections)
	return b
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// do sends a request with net/http and returns status and body.
func do(t testing.TB, method, url, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// rawHTTP is a raw socket for byte-level HTTP cases.
type rawHTTP struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t testing.TB, addr string) *rawHTTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawHTTP{t: t, c: c, r: bufio.NewReader(c)}
}

func (h *rawHTTP) send(s string) {
	h.t.Helper()
	if _, err := h.c.Write([]byte(s)); err != nil {
		h.t.Fatalf("write: %v", err)
	}
}

// response reads one response with net/http's parser.
func (h *rawHTTP) response() (*http.Response, string) {
	h.t.Helper()
	_ = h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		h.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// closed reports whether the server closed the connection within d.
func (h *rawHTTP) closed(d time.Duration) bool {
	_ = h.c.SetReadDeadline(time.Now().Add(d))
	_, err := h.r.ReadByte()
	return err == io.EOF || (err != nil && !isTimeout(err))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestHTTPPublishReachesMQTT(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := pahoClient(t, b.MQTTAddr(), "sub", true)
	ch := pahoSubscribe(t, sub, "sensor/#", 2)
	base := "http://" + b.HTTPAddr()

	code, body, _ := do(t, "POST", base+"/publish/sensor/temp", "24.5")
	if code != 202 || body != `{"status":"accepted","topic":"sensor/temp"}` {
		t.Fatalf("publish: %d %s", code, body)
	}
	if m := next(t, ch); m.topic != "sensor/temp" || m.payload != "24.5" || m.qos != 0 || m.retain {
		t.Fatalf("got %+v", m)
	}
	// QoS from the query; percent-decoded topic with several levels.
	code, _, _ = do(t, "POST", base+"/publish/sensor/room%201/hum?qos=1", "55")
	if code != 202 {
		t.Fatalf("qos=1 publish: %d", code)
	}
	if m := next(t, ch); m.topic != "sensor/room 1/hum" || m.payload != "55" || m.qos != 1 {
		t.Fatalf("got %+v", m)
	}
	// Binary payload survives byte for byte.
	bin := string([]byte{0, 1, 2, 0xff, 0xfe})
	do(t, "POST", base+"/publish/sensor/bin?qos=2", bin)
	if m := next(t, ch); m.payload != bin || m.qos != 2 {
		t.Fatalf("binary: %+v", m)
	}
	// Retained: a later MQTT subscriber gets it with the retain flag.
	do(t, "POST", base+"/publish/sensor/kept?retain=true", "r1")
	next(t, ch)
	late := pahoClient(t, b.MQTTAddr(), "late", true)
	lch := pahoSubscribe(t, late, "sensor/kept", 0)
	if m := next(t, lch); m.payload != "r1" || !m.retain {
		t.Fatalf("retained: %+v", m)
	}
	st := b.Snapshot()
	if got := st.MessagesReceived["http"]; got[0] != 2 || got[1] != 1 || got[2] != 1 {
		t.Fatalf("http messages received by QoS = %v; want [2 1 1]", got)
	}
}

func TestHTTPErrors(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	for _, c := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"POST", "/publish/a/%2B/b", 400, "invalid topic name"},
		{"POST", "/publish/a/%23", 400, "invalid topic name"},
		{"POST", "/publish/$SYS/x", 403, "$SYS"},
		{"POST", "/publish/a?qos=3", 400, "qos"},
		{"POST", "/publish/a?retain=maybe", 400, "retain"},
		{"GET", "/publish/a", 405, "method not allowed"},
		{"GET", "/nowhere", 404, "no such endpoint"},
		{"GET", "/stream/a/%23/b", 400, "invalid filter"},
		{"GET", "/retained/none", 404, "no retained message"},
		{"DELETE", "/api/v1/clients/ghost", 404, "not connected"},
		{"GET", "/api/v1/clients?limit=0", 400, "limit"},
		{"GET", "/mqtt", 426, "WebSocket"},
	} {
		code, body, hdr := do(t, c.method, base+c.path, "x")
		if code != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("%s %s: %d %s; want %d containing %q", c.method, c.path, code, body, c.code, c.msg)
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: body %q is not a JSON error", c.method, c.path, body)
		}
		if hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: content type %q", c.method, c.path, hdr.Get("Content-Type"))
		}
	}
	// A bad escape (net/http would refuse to send it).
	h := dialHTTP(t, b.HTTPAddr())
	h.send("POST /publish/a%zz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	if resp, body := h.response(); resp.StatusCode != 400 || !strings.Contains(body, "percent-encoding") {
		t.Errorf("bad escape: %d %s", resp.StatusCode, body)
	}
	if b.Snapshot().HTTPErrors < 13 {
		t.Fatalf("http errors not counted: %d", b.Snapshot().HTTPErrors)
	}
}

func TestHTTPAPIKey(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "s3cret" })
	base := "http://" + b.HTTPAddr()
	if code, body, hdr := do(t, "POST", base+"/publish/a", "1"); code != 401 || !strings.Contains(body, "API key") || hdr.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("no key: %d %s", code, body)
	}
	if code, _, _ := do(t, "POST", base+"/publish/a", "1", "Authorization", "Bearer wrong"); code != 401 {
		t.Fatalf("wrong key: %d", code)
	}
	if code, _, _ := do(t, "POST", base+"/publish/a", "1", "Authorization", "Bearer s3cret"); code != 202 {
		t.Fatalf("bearer: %d", code)
	}
	if code, _, _ := do(t, "GET", base+"/metrics?token=s3cret", ""); code != 200 {
		t.Fatalf("?token: %d", code)
	}
	if code, _, _ := do(t, "GET", base+"/metrics", ""); code != 401 {
		t.Fatalf("/metrics without key: %d", code)
	}
	if code, _, _ := do(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatalf("/healthz must stay open: %d", code)
	}
	// A 401 keeps the connection: its response does not say "close", so a
	// keep-alive client sends its next request on the same socket.
	h := dialHTTP(t, b.HTTPAddr())
	h.send("POST /publish/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1")
	if resp, _ := h.response(); resp.StatusCode != 401 || resp.Close {
		t.Fatalf("401 on a kept-alive connection: %d close=%v", resp.StatusCode, resp.Close)
	}
	h.send("POST /publish/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 1\r\n\r\n1")
	if resp, _ := h.response(); resp.StatusCode != 202 {
		t.Fatalf("request after a 401 on the same connection: %d", resp.StatusCode)
	}
	// The same key is the MQTT password.
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(connectPacket("k", "any", "s3cret")); ack.ReturnCode != 0 {
		t.Fatalf("MQTT with the key: CONNACK %d", ack.ReturnCode)
	}
}

func TestHTTPBodyTooLargeRefusedFromHeader(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.MaxPacketSize = 1024 })
	h := dialHTTP(t, b.HTTPAddr())
	// The body is never sent: the answer must come from the header alone.
	h.send("POST /publish/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
	resp, body := h.response()
	if resp.StatusCode != 413 || !strings.Contains(body, "larger than") {
		t.Fatalf("got %d %s; want 413", resp.StatusCode, body)
	}
	if !h.closed(3 * time.Second) {
		t.Fatal("connection not closed after 413")
	}
	// Chunked bodies are cut at the limit too.
	h = dialHTTP(t, b.HTTPAddr())
	chunk := strings.Repeat("x", 2000)
	h.send(fmt.Sprintf("POST /publish/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(chunk), chunk))
	if resp, _ := h.response(); resp.StatusCode != 413 {
		t.Fatalf("chunked: %d; want 413", resp.StatusCode)
	}
}

func TestHTTPHeaderLimits(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.HTTPMaxHeaderBytes = 1024; o.HTTPMaxHeaders = 10 })
	h := dialHTTP(t, b.HTTPAddr())
	h.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2000) + "\r\n\r\n")
	if resp, _ := h.response(); resp.StatusCode != 431 {
		t.Fatalf("big header: %d; want 431", resp.StatusCode)
	}
	h = dialHTTP(t, b.HTTPAddr())
	var sb strings.Builder
	for i := range 20 {
		fmt.Fprintf(&sb, "X-H%d: v\r\n", i)
	}
	h.send("GET /healthz HTTP/1.1\r\nHost: x\r\n" + sb.String() + "\r\n")
	if resp, _ := h.response(); resp.StatusCode != 431 {
		t.Fatalf("many headers: %d; want 431", resp.StatusCode)
	}
	h = dialHTTP(t, b.HTTPAddr())
	h.send("NOT HTTP AT ALL\r\n\r\n")
	if resp, _ := h.response(); resp.StatusCode != 400 {
		t.Fatalf("garbage: %d; want 400", resp.StatusCode)
	}
}

func TestHTTPPipelinedAndTrickled(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := pahoClient(t, b.MQTTAddr(), "sub", true)
	ch := pahoSubscribe(t, sub, "p/#", 0)
	h := dialHTTP(t, b.HTTPAddr())
	// Three pipelined requests in one write: answered in order.
	h.send("POST /publish/p/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA" +
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /publish/p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nB")
	for i, want := range []string{`"topic":"p/1"`, `{"status":"ok"}`, `"topic":"p/2"`} {
		resp, body := h.response()
		if !strings.Contains(body, want) {
			t.Fatalf("response %d: %d %s; want %s", i, resp.StatusCode, body, want)
		}
	}
	if m := next(t, ch); m.topic != "p/1" || m.payload != "A" {
		t.Fatalf("got %+v", m)
	}
	if m := next(t, ch); m.topic != "p/2" {
		t.Fatalf("got %+v", m)
	}
	// One request a byte at a time.
	req := "POST /publish/p/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
	for i := range len(req) {
		h.send(req[i : i+1])
		time.Sleep(time.Millisecond) // let each byte arrive in its own read
	}
	if resp, body := h.response(); resp.StatusCode != 202 || !strings.Contains(body, "p/3") {
		t.Fatalf("trickled: %d %s", resp.StatusCode, body)
	}
	if m := next(t, ch); m.payload != "hello" {
		t.Fatalf("trickled payload %q", m.payload)
	}
}

func TestHTTPExpectContinueAndChunked(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := pahoClient(t, b.MQTTAddr(), "sub", true)
	ch := pahoSubscribe(t, sub, "c/#", 0)
	h := dialHTTP(t, b.HTTPAddr())
	h.send("POST /publish/c/1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	_ = h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := h.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	if l2, _ := h.r.ReadString('\n'); l2 != "\r\n" {
		t.Fatalf("100 Continue not followed by an empty line: %q", l2)
	}
	h.send("body")
	if resp, _ := h.response(); resp.StatusCode != 202 {
		t.Fatalf("after continue: %d", resp.StatusCode)
	}
	if m := next(t, ch); m.payload != "body" {
		t.Fatalf("payload %q", m.payload)
	}
	// Chunked body, sent in two writes.
	h.send("POST /publish/c/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
	time.Sleep(10 * time.Millisecond)
	h.send("2\r\nde\r\n0\r\n\r\n")
	if resp, _ := h.response(); resp.StatusCode != 202 {
		t.Fatalf("chunked: %d", resp.StatusCode)
	}
	if m := next(t, ch); m.payload != "abcde" {
		t.Fatalf("chunked payload %q", m.payload)
	}
}

func TestHTTPConnectionManagement(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.HTTPIdleTimeout = time.Second; o.HTTPReadTimeout = time.Second })
	// HTTP/1.0 without keep-alive: closed after the response.
	h := dialHTTP(t, b.HTTPAddr())
	h.send("GET /healthz HTTP/1.0\r\n\r\n")
	if resp, _ := h.response(); resp.StatusCode != 200 {
		t.Fatalf("1.0: %d", resp.StatusCode)
	}
	if !h.closed(3 * time.Second) {
		t.Fatal("HTTP/1.0 connection kept open")
	}
	// HTTP/1.0 with keep-alive: kept, and says so.
	h = dialHTTP(t, b.HTTPAddr())
	h.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, _ := h.response(); resp.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("1.0 keep-alive: Connection %q", resp.Header.Get("Connection"))
	}
	h.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, _ := h.response(); resp.StatusCode != 200 {
		t.Fatal("second request on a kept 1.0 connection failed")
	}
	// Connection: close on 1.1.
	h = dialHTTP(t, b.HTTPAddr())
	h.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp, _ := h.response(); !resp.Close || !h.closed(3*time.Second) {
		t.Fatal("Connection: close not honoured")
	}
	// An idle keep-alive connection is closed after the idle timeout.
	h = dialHTTP(t, b.HTTPAddr())
	h.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	h.response()
	if !h.closed(8 * time.Second) {
		t.Fatal("idle connection not closed")
	}
	// A request that never completes (slowloris) is cut at the read timeout
	// even though bytes keep coming.
	h = dialHTTP(t, b.HTTPAddr())
	h.send("POST /publish/a HTTP/1.1\r\nHost: x\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.c.Write([]byte("X-A: b\r\n")); err != nil {
			break // closed by the server
		}
		if h.closed(300 * time.Millisecond) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow request not cut off")
		}
	}
}

func TestRetainedEndpoints(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	for _, tp := range []string{"home/a/t", "home/b/t", "home/c/t", "office/t"} {
		if tok := pub.Publish(tp, 1, true, "v-"+tp); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	pub.Publish("home/json", 1, true, `{"t":1}`).WaitTimeout(5 * time.Second)
	waitFor(t, 5*time.Second, "retained stored", func() bool { return b.Snapshot().Retained == 5 })
	code, body, hdr := do(t, "GET", base+"/retained/home/b/t", "")
	if code != 200 || body != "v-home/b/t" || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET retained: %d %q %q", code, body, hdr.Get("Content-Type"))
	}
	if _, _, hdr := do(t, "GET", base+"/retained/home/json", ""); hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON payload content type %q", hdr.Get("Content-Type"))
	}
	var page struct {
		Total int
		Items []struct{ Topic string }
	}
	code, body, _ = do(t, "GET", base+"/api/v1/retained?filter=home/%2B/t&offset=1&limit=1", "")
	if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
		t.Fatalf("list: %d %s %v", code, body, err)
	}
	if page.Total != 3 || len(page.Items) != 1 || page.Items[0].Topic != "home/b/t" {
		t.Fatalf("page: %+v", page)
	}
	// An empty retained publish deletes it.
	pub.Publish("home/b/t", 1, true, "").WaitTimeout(5 * time.Second)
	waitFor(t, 5*time.Second, "retained deleted", func() bool {
		code, _, _ := do(t, "GET", base+"/retained/home/b/t", "")
		return code == 404
	})
}

// TestRetainedContentType: an HTTP publish's Content-Type is kept with the
// retained message and served back by GET /retained (and listed); curl's
// default for -d says nothing about the payload and is not kept; MQTT
// subscribers get the payload unchanged.
func TestRetainedContentType(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	sub := pahoClient(t, b.MQTTAddr(), "sub", true)
	ch := pahoSubscribe(t, sub, "img/#", 1)
	png := "\x89PNG\r\n\x1a\n\x00\x00"
	if code, body, _ := do(t, "POST", base+"/publish/img/cam1?retain=true&qos=1", png, "Content-Type", "image/png"); code != 202 {
		t.Fatalf("publish: %d %s", code, body)
	}
	if m := next(t, ch); m.payload != png {
		t.Fatalf("MQTT subscriber got %q", m.payload)
	}
	code, body, hdr := do(t, "GET", base+"/retained/img/cam1", "")
	if code != 200 || body != png || hdr.Get("Content-Type") != "image/png" {
		t.Fatalf("GET retained: %d %q content type %q; want the PNG bytes as image/png", code, body, hdr.Get("Content-Type"))
	}
	// curl -d sends application/x-www-form-urlencoded: the payload is sniffed.
	do(t, "POST", base+"/publish/img/temp?retain=true", "warm", "Content-Type", "application/x-www-form-urlencoded")
	next(t, ch)
	if _, _, hdr := do(t, "GET", base+"/retained/img/temp", ""); !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("form-encoded publish served as %q; want text/plain", hdr.Get("Content-Type"))
	}
	// The batch endpoint takes content_type per message.
	if code, body, _ := do(t, "POST", base+"/api/v1/publish", `[{"topic":"img/cfg","payload":"a: 1","retain":true,"content_type":"application/yaml"}]`); code != 202 {
		t.Fatalf("batch: %d %s", code, body)
	}
	next(t, ch)
	if _, _, hdr := do(t, "GET", base+"/retained/img/cfg", ""); hdr.Get("Content-Type") != "application/yaml" {
		t.Fatalf("batch content type served as %q", hdr.Get("Content-Type"))
	}
	var page struct {
		Items []struct {
			Topic       string `json:"topic"`
			ContentType string `json:"content_type"`
		}
	}
	_, body, _ = do(t, "GET", base+"/api/v1/retained?filter=img/%23", "")
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Items) != 3 || page.Items[0].ContentType != "image/png" || page.Items[2].ContentType != "" {
		t.Fatalf("list: %s", body)
	}
	// A newer retained message without a content type replaces the old one
	// whole.
	if tok := sub.Publish("img/cam1", 1, true, "text now"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	next(t, ch)
	waitFor(t, 5*time.Second, "retained replaced", func() bool {
		_, body, hdr := do(t, "GET", base+"/retained/img/cam1", "")
		return body == "text now" && strings.HasPrefix(hdr.Get("Content-Type"), "text/plain")
	})
}

func TestMetricsParseAsPrometheusText(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	sub := pahoClient(t, b.MQTTAddr(), "sub", false)
	ch := pahoSubscribe(t, sub, "m/#", 1)
	do(t, "POST", base+"/publish/m/x?qos=1", "1")
	next(t, ch)
	code, body, hdr := do(t, "GET", base+"/metrics", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %q", code, hdr.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("Prometheus parser: %v\n%s", err, body)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no family %s", name)
		}
		for _, m := range f.Metric {
			ok := true
			for _, lp := range m.Label {
				if v, want := lp.GetValue(), labels[lp.GetName()]; want != "" && v != want {
					ok = false
				}
			}
			if !ok {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
		t.Fatalf("no sample %s%v", name, labels)
		return 0
	}
	for name := range fams {
		if !model.LegacyValidation.IsValidMetricName(name) || !strings.HasPrefix(name, "tinymq_") {
			t.Errorf("bad metric name %q", name)
		}
		if fams[name].GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s lacks _total", name)
		}
	}
	if v := value("tinymq_messages_received_total", map[string]string{"transport": "http", "qos": "1"}); v != 1 {
		t.Errorf("http qos1 received = %v; want 1", v)
	}
	if v := value("tinymq_messages_sent_total", map[string]string{"transport": "mqtt", "qos": "1"}); v != 1 {
		t.Errorf("mqtt qos1 sent = %v; want 1", v)
	}
	if v := value("tinymq_connections", map[string]string{"transport": "mqtt"}); v != 1 {
		t.Errorf("mqtt connections = %v; want 1", v)
	}
	if v := value("tinymq_sessions", map[string]string{"state": "online"}); v != 1 {
		t.Errorf("online sessions = %v; want 1", v)
	}
	if v := value("tinymq_sessions_expired_total", nil); v != 0 {
		t.Errorf("expired sessions = %v; want 0", v)
	}
	if v := value("tinymq_memory_returns_total", nil); v < 0 {
		t.Errorf("memory returns = %v", v)
	}
	if v := value("tinymq_subscriptions", nil); v != 1 {
		t.Errorf("subscriptions = %v; want 1", v)
	}
	if v := value("tinymq_go_memory_bytes", nil); v <= 0 {
		t.Errorf("go memory = %v", v)
	}
	if v := value("tinymq_event_loop_busy_seconds_total", nil); v <= 0 {
		t.Errorf("loop busy = %v", v)
	}
	// The JSON snapshot holds the same figures.
	_, js, _ := do(t, "GET", base+"/api/v1/stats", "")
	var sn Snapshot
	if err := json.Unmarshal([]byte(js), &sn); err != nil || sn.MessagesReceived["http"][1] != 1 || sn.SessionsOnline != 1 {
		t.Fatalf("stats: %v %s", err, js)
	}
	if code, body, _ := do(t, "GET", base+"/readyz", ""); code != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("readyz: %d %s", code, body)
	}
}

func TestClientsAPIAndKick(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	watcher := pahoClient(t, b.MQTTAddr(), "watcher", true)
	wills := pahoSubscribe(t, watcher, "wills/#", 1)
	rc := dialRaw(t, b.MQTTAddr())
	p := connectPacket("dev/1", "", "")
	p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS = true, []byte("wills/dev1"), []byte("gone"), 1
	if ack := rc.connect(p); ack.ReturnCode != 0 {
		t.Fatalf("connect: %d", ack.ReturnCode)
	}
	var list struct {
		Total   int
		Clients []ClientInfo
	}
	_, body, _ := do(t, "GET", base+"/api/v1/clients?limit=10", "")
	if err := json.Unmarshal([]byte(body), &list); err != nil || list.Total != 2 {
		t.Fatalf("clients: %v %s", err, body)
	}
	c := list.Clients[0]
	if c.ClientID != "dev/1" || !c.Connected || c.Transport != "mqtt" || c.Protocol != "3.1.1" || !strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") || c.ConnectedSince == 0 {
		t.Fatalf("client info: %+v", c)
	}
	if code, body, _ := do(t, "DELETE", base+"/api/v1/clients/dev%2F1", ""); code != 200 || !strings.Contains(body, "disconnected") {
		t.Fatalf("kick: %d %s", code, body)
	}
	rc.expectClosed(5 * time.Second)
	// Disconnected as on a network drop: the will is published.
	if m := next(t, wills); m.topic != "wills/dev1" || m.payload != "gone" {
		t.Fatalf("will: %+v", m)
	}
}

func TestHTTPPublishBatch(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := pahoClient(t, b.MQTTAddr(), "sub", true)
	ch := pahoSubscribe(t, sub, "batch/#", 2)
	url := "http://" + b.HTTPAddr() + "/api/v1/publish"
	code, body, _ := do(t, "POST", url, `[{"topic":"batch/a","payload":"one"},
		{"topic":"batch/b","payload":"AP8=","encoding":"base64","qos":1},
		{"topic":"batch/c","payload":"three","qos":2,"retain":true}]`)
	if code != 202 || body != `{"status":"accepted","count":3}` {
		t.Fatalf("batch: %d %s", code, body)
	}
	want := []received{{"batch/a", "one", 0, false}, {"batch/b", "\x00\xff", 1, false}, {"batch/c", "three", 2, false}}
	for _, w := range want {
		if m := next(t, ch); m != w {
			t.Fatalf("got %+v; want %+v", m, w)
		}
	}
	// All or nothing: one bad message refuses the whole batch.
	code, body, _ = do(t, "POST", url, `[{"topic":"batch/ok","payload":"x"},{"topic":"batch/+","payload":"y"}]`)
	if code != 400 || !strings.Contains(body, "message 1") {
		t.Fatalf("bad batch: %d %s", code, body)
	}
	for _, bad := range []string{`{}`, `[]`, `[{"topic":"a","qos":5}]`, `[{"topic":"a","payload":"!","encoding":"base64"}]`} {
		if code, _, _ := do(t, "POST", url, bad); code != 400 {
			t.Errorf("%s: %d; want 400", bad, code)
		}
	}
	select {
	case m := <-ch:
		t.Fatalf("refused batch delivered %+v", m)
	case <-time.After(200 * time.Millisecond):
	}
}
