package engine

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event string
	data      struct {
		Topic     string `json:"topic"`
		Payload   string `json:"payload"`
		Encoding  string `json:"encoding"`
		QoS       int    `json:"qos"`
		Retain    bool   `json:"retain"`
		Timestamp int64  `json:"timestamp"`
		// MQTT 5 properties, present only when the message has them.
		PayloadFormat   *int        `json:"payload_format_indicator"`
		ContentType     *string     `json:"content_type"`
		ResponseTopic   *string     `json:"response_topic"`
		CorrelationData *string     `json:"correlation_data"`
		UserProperties  [][2]string `json:"user_properties"`
		MessageExpiry   *int        `json:"message_expiry_interval"`
	}
	raw     string // the data line as sent
	comment string
}

// openStream opens GET url with net/http and parses events in the
// background; events (and comment lines) arrive on the channel.
func openStream(t testing.TB, url string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	ch := make(chan sseEvent, 100)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" || ev.comment != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.raw = line[6:]
				if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
					ev.event = "bad data: " + line
				}
			}
		}
	}()
	return ch, resp
}

// nextEvent returns the next message event, skipping comments.
func nextEvent(t testing.TB, ch <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.comment != "" && ev.event == "" {
				continue
			}
			return ev
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

func TestSSEStreamFromMQTT(t *testing.T) {
	b := startHTTPBroker(t, nil)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	pub.Publish("sensor/kitchen/temp", 1, true, "21").WaitTimeout(5 * time.Second)
	waitFor(t, 5*time.Second, "retained", func() bool { return b.Snapshot().Retained == 1 })

	ch, resp := openStream(t, "http://"+b.HTTPAddr()+"/stream/sensor/%23?retained=true")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ev := nextEvent(t, ch)
	if ev.event != "message" || ev.id != "1" || ev.data.Topic != "sensor/kitchen/temp" || ev.data.Payload != "21" || !ev.data.Retain || ev.data.QoS != 1 {
		t.Fatalf("retained event: %+v", ev)
	}
	waitFor(t, 5*time.Second, "stream subscribed", func() bool { return b.Snapshot().Streams == 1 })
	pub.Publish("sensor/hall/hum", 0, false, "line1\n\"quoted\"").WaitTimeout(5 * time.Second)
	ev = nextEvent(t, ch)
	if ev.id != "2" || ev.data.Topic != "sensor/hall/hum" || ev.data.Payload != "line1\n\"quoted\"" || ev.data.Retain || ev.data.Timestamp < time.Now().Add(-time.Minute).UnixMilli() {
		t.Fatalf("live event: %+v", ev)
	}
	bin := []byte{0xff, 0x00, 0x80}
	pub.Publish("sensor/bin", 0, false, bin).WaitTimeout(5 * time.Second)
	ev = nextEvent(t, ch)
	if dec, _ := base64.StdEncoding.DecodeString(ev.data.Payload); ev.data.Encoding != "base64" || string(dec) != string(bin) {
		t.Fatalf("binary event: %+v", ev)
	}
	// Messages outside the filter do not arrive; HTTP publishes do.
	pub.Publish("other/x", 0, false, "no").WaitTimeout(5 * time.Second)
	do(t, "POST", "http://"+b.HTTPAddr()+"/publish/sensor/http", "via http")
	if ev = nextEvent(t, ch); ev.data.Topic != "sensor/http" || ev.data.Payload != "via http" {
		t.Fatalf("got %+v; want the HTTP publish", ev)
	}
	// Closing the stream removes its subscription.
	resp.Body.Close()
	waitFor(t, 5*time.Second, "stream closed", func() bool { return b.Snapshot().Streams == 0 && b.Snapshot().Subscriptions == 0 })
}

func TestSSEHeartbeat(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.SSEHeartbeat = time.Second })
	ch, _ := openStream(t, "http://"+b.HTTPAddr()+"/stream/quiet")
	deadline := time.After(6 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.comment == "heartbeat" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat comment within 6s")
		}
	}
}

// TestSSESlowReaderDoesNotGrowMemory: a stream whose reader stops is capped
// by the outbound limit; messages beyond it are dropped and counted, and
// the stuck stream is disconnected.
func TestSSESlowReaderDoesNotGrowMemory(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) {
		o.MaxOutboundBytes = 64 * 1024
		o.SlowConsumerAfter = time.Second
	})
	h := dialHTTP(t, b.HTTPAddr())
	h.send("GET /stream/flood HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	waitFor(t, 5*time.Second, "stream open", func() bool { return b.Snapshot().Streams == 1 })
	pub := dialRaw(t, b.MQTTAddr())
	pub.connect(connectPacket("flooder", "", ""))
	payload := strings.Repeat("p", 1000)
	batch := []byte{}
	for range 100 {
		batch = append(batch, publishBatch("flood", 0, len(payload), 1)...)
	}
	waitFor(t, 20*time.Second, "drops counted and the stuck stream dropped", func() bool {
		pub.write(batch)
		st := b.Snapshot()
		return st.Dropped["slow_consumer"] > 0 && st.Closed["slow_consumer"] > 0 && st.Streams == 0
	})
}
