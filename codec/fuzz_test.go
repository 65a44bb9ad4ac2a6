package codec_test

import (
	"errors"
	"testing"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

func seeds(f *testing.F) {
	for _, v := range codectest.Vectors {
		f.Add(v.Raw, uint8(v.Version))
	}
	for _, v := range codectest.BadVectors {
		f.Add(v.Raw, uint8(v.Version))
	}
}

// FuzzReadFrame: never panics, never reports more than it was given, and
// gives the same answer whether the bytes arrive whole or in two parts.
func FuzzReadFrame(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte, _ uint8) {
		h, n, err := codec.ReadFrame(data, 1<<16)
		if n > len(data) {
			t.Fatalf("n=%d > len=%d", n, len(data))
		}
		if n > 0 && n != h.Size() {
			t.Fatalf("n=%d but header says %d", n, h.Size())
		}
		for k := 0; k <= len(data); k++ {
			hk, nk, errk := codec.ReadFrame(data[:k], 1<<16)
			switch {
			case err == nil && n > 0 && k < n:
				if nk != 0 || errk != nil {
					t.Fatalf("prefix %d of a %d-byte frame: n=%d err=%v; want need more", k, n, nk, errk)
				}
			case err == nil && n > 0:
				if nk != n || errk != nil || hk != h {
					t.Fatalf("prefix %d: n=%d err=%v; want %d", k, nk, errk, n)
				}
			case err == nil: // need more for the whole input
				if nk != 0 || errk != nil {
					t.Fatalf("prefix %d: n=%d err=%v; whole input needs more", k, nk, errk)
				}
			default: // malformed: a prefix is either need-more or the same error
				if nk != 0 || (errk != nil && !errors.Is(errk, err)) {
					t.Fatalf("prefix %d: n=%d err=%v; whole: %v", k, nk, errk, err)
				}
			}
		}
	})
}

// FuzzDecode: decoding never panics; whatever decodes re-encodes to bytes
// that decode to the same packet (decode(encode(decode(x))) == decode(x)).
func FuzzDecode(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte, lv uint8) {
		v := codec.Version(3 + lv%3)
		h, n, err := codec.ReadFrame(data, 0)
		if err != nil || n == 0 {
			return
		}
		p, err := decode(v, h, data[h.HeaderLen:n])
		if err != nil {
			var ce *codec.Error
			if !errors.As(err, &ce) {
				t.Fatalf("decode error %v is not a *codec.Error", err)
			}
			return
		}
		if c, ok := p.(*codec.Connect); ok {
			v = c.Version
		}
		raw := encode(v, h.Type, p)
		h2, n2, err := codec.ReadFrame(raw, 0)
		if err != nil || n2 != len(raw) {
			t.Fatalf("re-encoded frame: n=%d err=%v raw=% x", n2, err, raw)
		}
		p2, err := decode(v, h2, raw[h2.HeaderLen:])
		if err != nil {
			t.Fatalf("re-decode: %v\nfrom % x\nre-encoded % x", err, data[:n], raw)
		}
		if !same(p, p2) {
			t.Fatalf("round trip changed the packet\nfirst  %+v\nsecond %+v", p, p2)
		}
	})
}
