package engine

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tinymq/tinymq/codec"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// httpLoad sends b.N publish requests over conns keep-alive connections,
// pipelining depth requests per write, and reports req/s and process CPU
// µs per request (client and server are both in this process, so the CPU
// figure is comparable between servers, not absolute).
func httpLoad(b *testing.B, addr string, conns, depth int) {
	httpLoadReq(b, addr, conns, depth, "POST /publish/bench/http HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n0123456789abcdef")
}

// httpPropsReq is a publish with MQTT 5 properties: expiry, response
// topic, correlation data, payload format and two user properties.
const httpPropsReq = "POST /publish/bench/http?expiry=60 HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n" +
	"MQTT-Response-Topic: bench/reply\r\nMQTT-Correlation-Data: AAECAw==\r\nMQTT-Payload-Format: utf8\r\n" +
	"MQTT-User-unit: C\r\nMQTT-User-site: north\r\nContent-Length: 16\r\n\r\n0123456789abcdef"

// httpLoadReq is httpLoad with a given request.
func httpLoadReq(b *testing.B, addr string, conns, depth int, request string) {
	req := []byte(request)
	// Learn the response length from one probe request.
	probe, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := probe.Write(req); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(probe)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 202 {
		b.Fatalf("probe: %v %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	var raw []byte
	respLen := 0
	{
		// Re-send and read the exact bytes to learn the wire length.
		if _, err := probe.Write(req); err != nil {
			b.Fatal(err)
		}
		_ = probe.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		for {
			n, err := br.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			raw = append(raw, buf[:n]...)
			if i := indexOf(raw, "\r\n\r\n"); i >= 0 && len(raw) >= i+4+len(body) {
				respLen = i + 4 + len(body)
				break
			}
		}
	}
	probe.Close()
	batch := make([]byte, 0, depth*len(req))
	for range depth {
		batch = append(batch, req...)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(16)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			in := make([]byte, depth*respLen)
			for {
				first := next.Add(int64(depth)) - int64(depth)
				k := int(min(int64(depth), int64(b.N)-first))
				if k <= 0 {
					return
				}
				if _, err := c.Write(batch[:k*len(req)]); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, in[:k*respLen]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// BenchmarkHTTPPublish compares TinyMQ's HTTP publish (parsed by fasthttp on
// the gnet loops, routed into the topic tree) with a plain fasthttp.Server
// answering the same request the same way, both over loopback with the
// same client: 16 keep-alive connections, 1 or 8 pipelined requests per
// write.
func BenchmarkHTTPPublish(b *testing.B) {
	for _, depth := range []int{1, 8} {
		b.Run(fmt.Sprintf("server=tinymq/pipeline=%d", depth), func(b *testing.B) {
			br := startHTTPBroker(b, nil)
			httpLoad(b, br.HTTPAddr(), 16, depth)
		})
		b.Run(fmt.Sprintf("server=tinymq/subs=1/pipeline=%d", depth), func(b *testing.B) {
			br := startHTTPBroker(b, func(o *Options) { o.MaxOutboundBytes = 64 << 20 })
			newBenchSubscriber(b, br.MQTTAddr(), "sub", "bench/http", 0, false)
			httpLoad(b, br.HTTPAddr(), 16, depth)
		})
		b.Run(fmt.Sprintf("server=tinymq/props=v5/subs=1/pipeline=%d", depth), func(b *testing.B) {
			br := startHTTPBroker(b, func(o *Options) { o.MaxOutboundBytes = 64 << 20 })
			newBenchSubscriber(b, br.MQTTAddr(), "sub", "bench/http", 0, false)
			httpLoadReq(b, br.HTTPAddr(), 16, depth, httpPropsReq)
		})
		b.Run(fmt.Sprintf("server=fasthttp/pipeline=%d", depth), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			body := []byte(`{"status":"accepted","topic":"bench/http"}`)
			s := &fasthttp.Server{
				Handler: func(ctx *fasthttp.RequestCtx) {
					if !ctx.IsPost() {
						ctx.SetStatusCode(405)
						return
					}
					ctx.SetStatusCode(202)
					ctx.SetContentType("application/json")
					ctx.SetBody(body)
				},
				Name: "fasthttp",
			}
			go func() { _ = s.Serve(ln) }()
			b.Cleanup(func() { _ = s.Shutdown() })
			httpLoad(b, ln.Addr().String(), 16, depth)
		})
	}
}

// wsFrameReader returns the payload bytes of a server's WebSocket frames.
type wsFrameReader struct {
	r    *bufio.Reader
	left int
}

func (w *wsFrameReader) Read(p []byte) (int, error) {
	for w.left == 0 {
		var h [2]byte
		if _, err := io.ReadFull(w.r, h[:]); err != nil {
			return 0, err
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(w.r, e[:]); err != nil {
				return 0, err
			}
			n = int(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(w.r, e[:]); err != nil {
				return 0, err
			}
			n = int(binary.BigEndian.Uint64(e[:]))
		}
		w.left = n
	}
	n, err := w.r.Read(p[:min(len(p), w.left)])
	w.left -= n
	return n, err
}

// maskedFrame wraps payload in one masked binary frame (fixed key).
func maskedFrame(payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := appendWSHeader(nil, wsOpBinary, len(payload))
	f[1] |= 0x80
	f = append(f, key[:]...)
	start := len(f)
	f = append(f, payload...)
	wsUnmask(f[start:], key, 0)
	return f
}

// BenchmarkFanInQoS0 compares QoS 0 fan-in over TCP and over WebSocket: 8
// publishers, one subscriber on a wildcard, 64-byte payloads, publishers
// kept within a bounded window of the subscriber.
func BenchmarkFanInQoS0(b *testing.B) {
	for _, transport := range []string{"tcp", "websocket"} {
		b.Run("transport="+transport, func(b *testing.B) {
			br := startHTTPBroker(b, func(o *Options) { o.MaxOutboundBytes = 64 << 20 })
			const pubs, batch = 8, 64
			dial := func(id string) (net.Conn, io.Reader, func([]byte) []byte) {
				if transport == "tcp" {
					rc := dialRaw(b, br.MQTTAddr())
					rc.connect(codec.Connect{ClientID: []byte(id), CleanStart: true})
					_ = rc.c.SetReadDeadline(time.Time{})
					return rc.c, rc.r, func(p []byte) []byte { return p }
				}
				w, resp := dialWS(b, br.HTTPAddr(), "/mqtt", "mqtt")
				if resp.StatusCode != 101 {
					b.Fatalf("upgrade: %d", resp.StatusCode)
				}
				_ = w.c.SetReadDeadline(time.Time{})
				w.frame(true, wsOpBinary, (&codec.Connect{Version: codec.V311, ProtocolName: []byte("MQTT"), ClientID: []byte(id), CleanStart: true}).AppendTo(nil))
				fr := &wsFrameReader{r: w.r}
				var ack [4]byte
				_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(fr, ack[:]); err != nil || ack[0] != 0x20 {
					b.Fatalf("CONNACK over websocket: %v %x", err, ack)
				}
				_ = w.c.SetReadDeadline(time.Time{})
				return w.c, fr, maskedFrame
			}
			sc, sr, wrap := dial("sub")
			subPkt := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("fan/+")}}}
			if _, err := sc.Write(wrap(subPkt.AppendTo(nil, codec.V311))); err != nil {
				b.Fatal(err)
			}
			var suback [5]byte
			if _, err := io.ReadFull(sr, suback[:]); err != nil || suback[0] != 0x90 {
				b.Fatalf("SUBACK: %v %x", err, suback)
			}
			sub := &benchSubscriber{c: sc, done: make(chan struct{})}
			go sub.read(sr, false)
			type pub struct {
				c   net.Conn
				raw []byte
			}
			ps := make([]pub, pubs)
			for i := range ps {
				c, r, wrap := dial(fmt.Sprintf("pub-%d", i))
				go func() { _, _ = io.Copy(io.Discard, r) }()
				ps[i] = pub{c, wrap(publishBatch(fmt.Sprintf("fan/%d", i), 0, 64, batch))}
			}
			var sent atomic.Int64
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i := range ps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := sent.Add(batch)
						if n > int64(b.N)+batch-1 {
							return
						}
						for n-int64(16*pubs*batch) > sub.msgs.Load() {
							time.Sleep(20 * time.Microsecond)
						}
						if _, err := ps[i].c.Write(ps[i].raw); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			total := (int64(b.N) + batch - 1) / batch * batch
			deadline := time.Now().Add(time.Minute)
			for sub.msgs.Load() < total {
				if time.Now().After(deadline) {
					b.Fatalf("delivered %d of %d (dropped %d)", sub.msgs.Load(), total, br.Stats().Dropped)
				}
				time.Sleep(50 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(total)/el.Seconds(), "msgs/s")
		})
	}
}
