package codec_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tinymq/tinymq/codec"
)

var sink int

var payloadSizes = []int{16, 256, 1024, 64 * 1024}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func BenchmarkPublishDecode(b *testing.B) {
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		for _, size := range payloadSizes {
			b.Run(fmt.Sprintf("version=%s/payload=%s", v, sizeName(size)), func(b *testing.B) {
				p := codec.Publish{QoS: 1, Topic: []byte("devices/esp32-0001/telemetry"), PacketID: 7, Payload: make([]byte, size)}
				if v == codec.V5 {
					p.Props = codec.Properties{Present: 1 << codec.PropMessageExpiry, MessageExpiry: 60}
				}
				raw := p.AppendTo(nil, v)
				var q codec.Publish
				b.ReportAllocs()
				b.SetBytes(int64(len(raw)))
				for i := 0; i < b.N; i++ {
					h, n, _ := codec.ReadFrame(raw, 0)
					_ = q.Decode(v, h, raw[h.HeaderLen:n])
					sink += len(q.Payload)
				}
			})
		}
	}
}

func BenchmarkPublishEncode(b *testing.B) {
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		for _, size := range payloadSizes {
			b.Run(fmt.Sprintf("version=%s/payload=%s", v, sizeName(size)), func(b *testing.B) {
				p := codec.Publish{QoS: 1, Topic: []byte("devices/esp32-0001/telemetry"), PacketID: 7, Payload: make([]byte, size)}
				dst := make([]byte, 0, p.Size(v))
				b.ReportAllocs()
				b.SetBytes(int64(p.Size(v)))
				for i := 0; i < b.N; i++ {
					dst = p.AppendTo(dst[:0], v)
					sink += len(dst)
				}
			})
		}
	}
}

// BenchmarkPublishEncodeBaseline is the naive encoder to compare with: a
// bytes.Buffer per packet.
func BenchmarkPublishEncodeBaseline(b *testing.B) {
	for _, size := range payloadSizes {
		b.Run("version=3.1.1/payload="+sizeName(size), func(b *testing.B) {
			topic, payload := []byte("devices/esp32-0001/telemetry"), make([]byte, size)
			b.ReportAllocs()
			b.SetBytes(int64(2 + 2 + len(topic) + 2 + size))
			for i := 0; i < b.N; i++ {
				var buf bytes.Buffer
				buf.WriteByte(0x32)
				rem := 2 + len(topic) + 2 + len(payload)
				for {
					c := byte(rem & 0x7f)
					rem >>= 7
					if rem > 0 {
						c |= 0x80
					}
					buf.WriteByte(c)
					if rem == 0 {
						break
					}
				}
				_ = binary.Write(&buf, binary.BigEndian, uint16(len(topic)))
				buf.Write(topic)
				_ = binary.Write(&buf, binary.BigEndian, uint16(7))
				buf.Write(payload)
				sink += buf.Len()
			}
		})
	}
}

func BenchmarkAck(b *testing.B) {
	raw := codec.AppendAck(nil, codec.TypePuback, 7)
	b.Run("op=decode/version=3.1.1", func(b *testing.B) {
		var a codec.Ack
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for i := 0; i < b.N; i++ {
			h, n, _ := codec.ReadFrame(raw, 0)
			_ = a.Decode(codec.V311, h, raw[h.HeaderLen:n])
			sink += int(a.PacketID)
		}
	})
	b.Run("op=encode/version=3.1.1", func(b *testing.B) {
		dst := make([]byte, 0, 8)
		b.ReportAllocs()
		b.SetBytes(4)
		for i := 0; i < b.N; i++ {
			dst = codec.AppendAck(dst[:0], codec.TypePuback, uint16(i))
			sink += len(dst)
		}
	})
}

func BenchmarkSubscribeDecode(b *testing.B) {
	s := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{
		{Filter: []byte("devices/esp32-0001/cmd"), QoS: 1}, {Filter: []byte("devices/+/status"), QoS: 0}}}
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		raw := s.AppendTo(nil, v)
		b.Run("version="+v.String(), func(b *testing.B) {
			var q codec.Subscribe
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				h, n, _ := codec.ReadFrame(raw, 0)
				_ = q.Decode(v, h, raw[h.HeaderLen:n])
				sink += len(q.Subs)
			}
		})
	}
}

func BenchmarkConnectDecode(b *testing.B) {
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		c := codec.Connect{Version: v, CleanStart: true, KeepAlive: 120, ClientID: []byte("esp32-a4cf12f00001"),
			WillFlag: true, WillRetain: true, WillTopic: []byte("devices/esp32-a4cf12f00001/status"), WillPayload: []byte("offline"),
			Username: []byte("device"), Password: []byte("secret")}
		raw := c.AppendTo(nil)
		b.Run("version="+v.String(), func(b *testing.B) {
			var q codec.Connect
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				h, n, _ := codec.ReadFrame(raw, 0)
				_ = q.Decode(h, raw[h.HeaderLen:n])
				sink += len(q.ClientID)
			}
		})
	}
}

// BenchmarkCheckUTF8Topic: the check every PUBLISH's topic name goes
// through, on a typical device topic.
func BenchmarkCheckUTF8Topic(b *testing.B) {
	t := []byte("site-17/building-3/floor-2/esp32-00c0ffee/telemetry")
	b.ReportAllocs()
	b.SetBytes(int64(len(t)))
	for b.Loop() {
		if codec.CheckUTF8(t) != nil {
			b.Fatal("invalid")
		}
	}
}
