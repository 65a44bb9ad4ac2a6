package engine

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestListenAddressInUse: gnet's listeners use SO_REUSEPORT, which would let
// a second broker share a port with the first and take half its clients.
// Start must refuse a port that a broker, or any other server, listens on.
func TestListenAddressInUse(t *testing.T) {
	first := startBroker(t, nil)
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, c := range []struct {
		name string
		edit func(*Options)
	}{
		{"mqtt port of a running broker", func(o *Options) { o.MQTTAddr = first.MQTTAddr() }},
		{"http port held by another server", func(o *Options) { o.HTTPAddr = other.Addr().String() }},
	} {
		o := DefaultOptions()
		o.MQTTAddr, o.HTTPAddr, o.Loops, o.SysInterval = "127.0.0.1:0", "", 2, -1
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		c.edit(&o)
		b, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Start()
		if err == nil {
			b.Stop(t.Context())
			t.Fatalf("%s: Start succeeded; want address in use", c.name)
		}
		if !strings.Contains(err.Error(), "another process") {
			t.Fatalf("%s: %v; want an address-in-use error", c.name, err)
		}
	}
	// The first broker still serves.
	rc := dialRaw(t, first.MQTTAddr())
	if ack := rc.connect(connectPacket("still", "", "")); ack.ReturnCode != 0 {
		t.Fatalf("first broker after the refused start: CONNACK %d", ack.ReturnCode)
	}
}
