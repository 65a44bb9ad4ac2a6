package engine

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// MQTT 5 properties through the HTTP door: POST /publish and
// /api/v1/publish carry them in, GET /retained and SSE carry them out.

// rawExchange sends one request (which should say Connection: close) and
// returns the status, the header lines in order and the body.
func rawExchange(t testing.TB, addr, req string) (int, []string, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, all)
	}
	head, body, ok := strings.Cut(string(all), "\r\n\r\n")
	if !ok {
		t.Fatalf("no header end in %q", all)
	}
	lines := strings.Split(head, "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 {
		t.Fatalf("status line %q", lines[0])
	}
	code, _ := strconv.Atoi(f[1])
	return code, lines[1:], body
}

// mqttHeaders keeps the MQTT-* header lines, in order.
func mqttHeaders(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "mqtt-") {
			out = append(out, l)
		}
	}
	return out
}

func userProps(u paho.UserProperties) [][2]string {
	var out [][2]string
	for _, p := range u {
		out = append(out, [2]string{p.Key, p.Value})
	}
	return out
}

func TestHTTPPublishV5PropertiesReachV5Subscriber(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := connectV5(t, b.MQTTAddr(), "v5sub", nil)
	sub.sub("req/#", 1, nil)
	corr := []byte{0, 1, 0xfe, 'c'}
	body := `{"n":1}`
	req := "POST /publish/req/1?qos=1&retain=true&expiry=60&user=q%20k:v%3A1&user=a:4 HTTP/1.1\r\n" +
		"Host: x\r\nContent-Type: application/json\r\n" +
		"MQTT-User-a: 1\r\n" +
		"MQTT-Response-Topic: resp/1\r\n" +
		"mqtt-user-b: 2\r\n" +
		"MQTT-Correlation-Data: " + base64.StdEncoding.EncodeToString(corr) + "\r\n" +
		"MQTT-User-a: 3\r\n" +
		"MQTT-Payload-Format: utf8\r\n" +
		"MQTT-User-Property: sp%20ace:line%0Abreak\r\n" +
		"Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if code, _, resp := rawExchange(t, b.HTTPAddr(), req); code != 202 {
		t.Fatalf("publish: %d %s", code, resp)
	}
	m := sub.next(5 * time.Second)
	want := [][2]string{{"a", "1"}, {"b", "2"}, {"a", "3"}, {"sp ace", "line\nbreak"}, {"q k", "v:1"}, {"a", "4"}}
	p := m.Properties
	switch {
	case m.Topic != "req/1" || string(m.Payload) != body || m.QoS != 1:
		t.Fatalf("message %s %q qos %d", m.Topic, m.Payload, m.QoS)
	case p == nil:
		t.Fatal("no properties")
	case p.ContentType != "application/json":
		t.Fatalf("content type %q", p.ContentType)
	case p.ResponseTopic != "resp/1":
		t.Fatalf("response topic %q", p.ResponseTopic)
	case string(p.CorrelationData) != string(corr):
		t.Fatalf("correlation data %x; want %x", p.CorrelationData, corr)
	case p.PayloadFormat == nil || *p.PayloadFormat != 1:
		t.Fatalf("payload format %v", p.PayloadFormat)
	case p.MessageExpiry == nil || *p.MessageExpiry > 60 || *p.MessageExpiry < 58:
		t.Fatalf("message expiry %v; want 58..60", p.MessageExpiry)
	case !reflect.DeepEqual(userProps(p.User), want):
		t.Fatalf("user properties %q; want %q", userProps(p.User), want)
	}

	// The retained copy serves them back as headers, in order; a pair
	// that cannot be a header as it is comes percent-encoded.
	code, hdr, got := rawExchange(t, b.HTTPAddr(), "GET /retained/req/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if code != 200 || got != body {
		t.Fatalf("GET retained: %d %q", code, got)
	}
	wantHdr := []string{
		"MQTT-Message-Expiry: 60", // replaced below when the clock ticked
		"MQTT-Payload-Format: utf8",
		"MQTT-Response-Topic: resp/1",
		"MQTT-Correlation-Data: " + base64.StdEncoding.EncodeToString(corr),
		"MQTT-User-a: 1", "MQTT-User-b: 2", "MQTT-User-a: 3",
		"MQTT-User-Property: sp%20ace:line%0Abreak",
		"MQTT-User-Property: q%20k:v%3A1",
		"MQTT-User-a: 4",
	}
	gotHdr := mqttHeaders(hdr)
	if len(gotHdr) > 0 && strings.HasPrefix(gotHdr[0], "MQTT-Message-Expiry: ") {
		if n, err := strconv.Atoi(gotHdr[0][len("MQTT-Message-Expiry: "):]); err == nil && n >= 57 && n <= 60 {
			wantHdr[0] = gotHdr[0]
		}
	}
	if !reflect.DeepEqual(gotHdr, wantHdr) {
		t.Fatalf("retained headers\n%q\nwant\n%q", gotHdr, wantHdr)
	}
	var ct string
	for _, l := range hdr {
		if k, v, _ := strings.Cut(l, ": "); k == "Content-Type" {
			ct = v
		}
	}
	if ct != "application/json" {
		t.Fatalf("retained content type %q", ct)
	}

	// The headers GET /retained gives are accepted by POST /publish:
	// the round trip keeps every property.
	req2 := "POST /publish/req/2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
		strings.Join(gotHdr[1:], "\r\n") + "\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if code, _, resp := rawExchange(t, b.HTTPAddr(), req2); code != 202 {
		t.Fatalf("republish: %d %s", code, resp)
	}
	m2 := sub.next(5 * time.Second)
	if m2.Properties == nil || !reflect.DeepEqual(userProps(m2.Properties.User), want) || m2.Properties.ResponseTopic != "resp/1" ||
		string(m2.Properties.CorrelationData) != string(corr) || m2.Properties.MessageExpiry != nil {
		t.Fatalf("round trip: %+v", m2.Properties)
	}

	// A publish without properties carries none, curl's default
	// Content-Type included.
	if code, _, resp := do(t, "POST", "http://"+b.HTTPAddr()+"/publish/req/plain", "x", "Content-Type", "application/x-www-form-urlencoded"); code != 202 {
		t.Fatalf("plain publish: %d %s", code, resp)
	}
	if m := sub.next(5 * time.Second); m.Properties != nil && (m.Properties.ContentType != "" || len(m.Properties.User) != 0 ||
		m.Properties.PayloadFormat != nil || m.Properties.MessageExpiry != nil || m.Properties.ResponseTopic != "") {
		t.Fatalf("plain publish got properties %+v", m.Properties)
	}
}

func TestHTTPPublishV5PropertyErrors(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.MaxPacketSize = 4096 })
	sub := connectV5(t, b.MQTTAddr(), "v5sub", nil)
	sub.sub("e/#", 0, nil)
	base := "http://" + b.HTTPAddr()
	many := func(n int) string {
		var q []string
		for i := range n {
			q = append(q, fmt.Sprintf("user=k%d:v", i))
		}
		return strings.Join(q, "&")
	}
	for _, tc := range []struct {
		name, query, body string
		hdr               []string
		want              string
	}{
		{"bad base64", "", "x", []string{"MQTT-Correlation-Data", "not*base64"}, "not valid base64"},
		{"wildcard response topic", "", "x", []string{"MQTT-Response-Topic", "resp/+"}, "invalid response topic"},
		{"wildcard response topic in query", "response_topic=resp/%23", "x", nil, "invalid response topic"},
		{"not UTF-8 with format 1", "", "\xff\xfe", []string{"MQTT-Payload-Format", "1"}, "not valid UTF-8"},
		{"bad payload format", "", "x", []string{"MQTT-Payload-Format", "2"}, "payload format"},
		{"bad expiry", "expiry=soon", "x", nil, "message expiry"},
		{"expiry out of range", "", "x", []string{"MQTT-Message-Expiry", "4294967296"}, "message expiry"},
		{"user without colon", "user=novalue", "x", nil, "name:value"},
		{"user bad escape", "user=a:%zz", "x", nil, "percent-encoding"},
		{"user with NUL", "user=a:%00", "x", nil, "UTF-8 without U+0000"},
		{"too many user properties", many(65), "x", nil, "more than 64 user properties"},
		{"properties past the packet size", "", strings.Repeat("p", 3000), []string{"MQTT-User-big", strings.Repeat("v", 1200)}, "larger than 4096"},
		{"content type too long", "", "x", []string{"Content-Type", strings.Repeat("t", 256)}, "content type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := do(t, "POST", base+"/publish/e/1?"+tc.query, tc.body, tc.hdr...)
			if code != 400 || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s; want 400 with %q", code, body, tc.want)
			}
		})
	}
	sub.none(200 * time.Millisecond) // nothing refused was routed
	// At the bound: 64 user properties are accepted, in order.
	if code, body, _ := do(t, "POST", base+"/publish/e/64?"+many(64), "x"); code != 202 {
		t.Fatalf("64 user properties: %d %s", code, body)
	}
	m := sub.next(5 * time.Second)
	if m.Properties == nil || len(m.Properties.User) != 64 || m.Properties.User[63].Key != "k63" || m.Properties.User[0].Key != "k0" {
		t.Fatalf("64 user properties arrived as %+v", m.Properties)
	}
	// The batch refuses bad properties too, whole.
	for _, tc := range []struct{ body, want string }{
		{`[{"topic":"e/b","payload":"x","properties":{"correlation_data":"***"}}]`, "not valid base64"},
		{`[{"topic":"e/b","payload":"x","properties":{"response_topic":"a/#"}}]`, "invalid response topic"},
		{`[{"topic":"e/b","payload":"/w==","encoding":"base64","properties":{"payload_format_indicator":1}}]`, "not valid UTF-8"},
		{`[{"topic":"e/b","payload":"x","properties":{"user_properties":{"a":1}}}]`, "user_properties"},
		{`[{"topic":"e/b","payload":"x"},{"topic":"e/b","payload":"x","properties":{"payload_format_indicator":7}}]`, "message 1: payload_format_indicator"},
	} {
		if code, body, _ := do(t, "POST", base+"/api/v1/publish", tc.body); code != 400 || !strings.Contains(body, tc.want) {
			t.Fatalf("batch %s: %d %s; want 400 with %q", tc.body, code, body, tc.want)
		}
	}
	sub.none(200 * time.Millisecond)
}

func TestHTTPPublishBatchV5Properties(t *testing.T) {
	b := startHTTPBroker(t, nil)
	sub := connectV5(t, b.MQTTAddr(), "v5sub", nil)
	sub.sub("b/#", 1, nil)
	body := `[{"topic":"b/1","payload":"hi","qos":1,"properties":{"payload_format_indicator":1,"message_expiry_interval":30,
	  "content_type":"text/plain","response_topic":"b/reply","correlation_data":"AAE=",
	  "user_properties":{"z":"1","a":"2","z":"3"}}},
	 {"topic":"b/2","payload":"plain"}]`
	if code, resp, _ := do(t, "POST", "http://"+b.HTTPAddr()+"/api/v1/publish", body); code != 202 {
		t.Fatalf("batch: %d %s", code, resp)
	}
	m := sub.next(5 * time.Second)
	p := m.Properties
	if m.Topic != "b/1" || p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "b/reply" ||
		string(p.CorrelationData) != "\x00\x01" || p.PayloadFormat == nil || *p.PayloadFormat != 1 ||
		p.MessageExpiry == nil || *p.MessageExpiry > 30 || *p.MessageExpiry < 28 ||
		!reflect.DeepEqual(userProps(p.User), [][2]string{{"z", "1"}, {"a", "2"}, {"z", "3"}}) {
		t.Fatalf("batch message %s with %+v", m.Topic, p)
	}
	if m := sub.next(5 * time.Second); m.Topic != "b/2" || (m.Properties != nil && (len(m.Properties.User) != 0 || m.Properties.ContentType != "")) {
		t.Fatalf("second batch message %s with %+v", m.Topic, m.Properties)
	}
}

func TestRetainedAndSSEShowV5Properties(t *testing.T) {
	b := startHTTPBroker(t, nil)
	pub := connectV5(t, b.MQTTAddr(), "v5pub", nil)
	pf := byte(1)
	props := &paho.PublishProperties{
		ContentType: "application/cbor", ResponseTopic: "dev/1/reply", CorrelationData: []byte{9, 8, 7},
		PayloadFormat: &pf, MessageExpiry: u32(100),
		User: paho.UserProperties{{Key: "unit", Value: "C"}, {Key: "site", Value: "north"}, {Key: "unit", Value: "K"}},
	}
	if r := pub.pub(&paho.Publish{Topic: "dev/1/t", QoS: 1, Retain: true, Payload: []byte("21"), Properties: props}); r.ReasonCode >= 0x80 {
		t.Fatalf("publish: reason %#x", r.ReasonCode)
	}
	waitFor(t, 5*time.Second, "retained", func() bool { return b.Snapshot().Retained == 1 })

	code, hdr, got := rawExchange(t, b.HTTPAddr(), "GET /retained/dev/1/t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	gotHdr := mqttHeaders(hdr)
	if code != 200 || got != "21" || len(gotHdr) != 7 || !strings.HasPrefix(gotHdr[0], "MQTT-Message-Expiry: ") {
		t.Fatalf("GET retained: %d %q %q", code, got, gotHdr)
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(gotHdr[0], "MQTT-Message-Expiry: ")); n < 97 || n > 100 {
		t.Fatalf("expiry left %q; want 97..100", gotHdr[0])
	}
	wantHdr := []string{"MQTT-Payload-Format: utf8", "MQTT-Response-Topic: dev/1/reply", "MQTT-Correlation-Data: CQgH",
		"MQTT-User-unit: C", "MQTT-User-site: north", "MQTT-User-unit: K"}
	if !reflect.DeepEqual(gotHdr[1:], wantHdr) {
		t.Fatalf("retained headers %q; want %q", gotHdr[1:], wantHdr)
	}
	if !strings.Contains(strings.Join(hdr, "\n"), "Content-Type: application/cbor") {
		t.Fatalf("content type not served: %q", hdr)
	}

	// SSE: the retained message at subscribe, then a live one, each with
	// its properties; a message without properties has none of the fields.
	ch, resp := openStream(t, "http://"+b.HTTPAddr()+"/stream/dev/%23?retained=true")
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	check := func(ev sseEvent, topic string) {
		t.Helper()
		d := ev.data
		wantUser := [][2]string{{"unit", "C"}, {"site", "north"}, {"unit", "K"}}
		if d.Topic != topic || d.ContentType == nil || *d.ContentType != "application/cbor" ||
			d.ResponseTopic == nil || *d.ResponseTopic != "dev/1/reply" ||
			d.CorrelationData == nil || *d.CorrelationData != "CQgH" ||
			d.PayloadFormat == nil || *d.PayloadFormat != 1 ||
			d.MessageExpiry == nil || *d.MessageExpiry < 97 || *d.MessageExpiry > 100 ||
			!reflect.DeepEqual(d.UserProperties, wantUser) {
			t.Fatalf("event %s", ev.raw)
		}
	}
	check(nextEvent(t, ch), "dev/1/t")
	waitFor(t, 5*time.Second, "stream subscribed", func() bool { return b.Snapshot().Streams == 1 })
	pub.pub(&paho.Publish{Topic: "dev/2/t", QoS: 0, Payload: []byte("22"), Properties: props})
	check(nextEvent(t, ch), "dev/2/t")
	pub.pub(&paho.Publish{Topic: "dev/3/t", QoS: 0, Payload: []byte("23")})
	ev := nextEvent(t, ch)
	if ev.data.Topic != "dev/3/t" || strings.Contains(ev.raw, "content_type") || strings.Contains(ev.raw, "user_properties") ||
		strings.Contains(ev.raw, "expiry") || strings.Contains(ev.raw, "response_topic") {
		t.Fatalf("plain event %s", ev.raw)
	}
}

func TestRetainedExpiredIs404(t *testing.T) {
	b := startHTTPBroker(t, nil)
	base := "http://" + b.HTTPAddr()
	if code, body, _ := do(t, "POST", base+"/publish/exp/1?retain=true", "soon gone", "MQTT-Message-Expiry", "1"); code != 202 {
		t.Fatalf("publish: %d %s", code, body)
	}
	code, body, hdr := do(t, "GET", base+"/retained/exp/1", "")
	if code != 200 || body != "soon gone" || (hdr.Get("MQTT-Message-Expiry") != "1" && hdr.Get("MQTT-Message-Expiry") != "0") {
		t.Fatalf("before expiry: %d %q expiry %q", code, body, hdr.Get("MQTT-Message-Expiry"))
	}
	// A message without expiry stays.
	do(t, "POST", base+"/publish/exp/2?retain=true", "stays")
	waitFor(t, 5*time.Second, "retained message expired", func() bool {
		code, _, _ := do(t, "GET", base+"/retained/exp/1", "")
		return code == 404
	})
	if code, body, hdr := do(t, "GET", base+"/retained/exp/2", ""); code != 200 || body != "stays" || hdr.Get("MQTT-Message-Expiry") != "" {
		t.Fatalf("message without expiry: %d %q expiry %q", code, body, hdr.Get("MQTT-Message-Expiry"))
	}
}
