package engine

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// openssl s_client completes a TLS 1.2 and a TLS 1.3 handshake and verifies
// the server certificate against the CA.
func TestInteropOpenSSLHandshake(t *testing.T) {
	openssl := requireInterop(t, "openssl")
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	for _, v := range []struct{ flag, want string }{{"-tls1_2", "TLSv1.2"}, {"-tls1_3", "TLSv1.3"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", b.TLSAddr(), v.flag,
			"-CAfile", ca.File, "-verify_return_error", "-brief")
		cmd.Stdin = strings.NewReader("") // EOF right after the handshake
		out, err := cmd.CombinedOutput()
		cancel()
		s := string(out)
		if err != nil || !strings.Contains(s, "Protocol version: "+v.want) || !strings.Contains(s, "Verification: OK") {
			t.Fatalf("openssl s_client %s: %v\n%s", v.flag, err, s)
		}
	}
	waitFor(t, 5*time.Second, "two handshakes counted", func() bool { return b.Snapshot().TLS.Handshakes >= 2 })
}

// mosquitto_sub and mosquitto_pub with --cafile exchange a message over
// TLS, and with a client certificate under --tls-require-cert.
func TestInteropMosquittoClientsTLS(t *testing.T) {
	sub := requireInterop(t, "mosquitto_sub")
	pub := requireInterop(t, "mosquitto_pub")
	ca := newTestCA(t, "test-ca")
	dev := ca.issue("sensor-7", false)
	for _, mtls := range []bool{false, true} {
		b := startTLSBroker(t, ca, func(o *Options) {
			if mtls {
				o.TLSClientCA = ca.File
				o.TLSRequireCert = true
			}
		})
		host, port := hostPort(t, b.TLSAddr())
		args := []string{"-h", host, "-p", port, "--cafile", ca.File}
		if mtls {
			args = append(args, "--cert", dev.CertFile, "--key", dev.KeyFile)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		wait := startCmd(t, ctx, sub, append(args, "-t", "tls/#", "-C", "1", "-v")...)
		waitFor(t, 5*time.Second, "mosquitto_sub subscribed over TLS", func() bool { return b.Stats().Subscriptions == 1 })
		run(t, ctx, pub, append(args, "-t", "tls/temp", "-m", "21.5", "-q", "1")...)
		got, err := wait()
		cancel()
		if err != nil || strings.TrimSpace(got) != "tls/temp 21.5" {
			t.Fatalf("mTLS=%v: mosquitto_sub: %q %v", mtls, got, err)
		}
		if mtls {
			// Without a certificate the handshake fails.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "--cafile", ca.File, "-t", "x", "-m", "y").CombinedOutput()
			cancel()
			if err == nil {
				t.Fatalf("mosquitto_pub without a certificate succeeded: %s", out)
			}
		}
	}
}

// MQTT.js (npm mqtt) over wss:// talks to a plain TCP client.
func TestInteropNodeMQTTOverWSS(t *testing.T) {
	node, modules := nodeMQTT(t)
	ca := newTestCA(t, "test-ca")
	srv := ca.issue("tinymq-server", true)
	b := startBroker(t, func(o *Options) {
		o.HTTPSAddr = "127.0.0.1:0"
		o.TLSCert, o.TLSKey = srv.CertFile, srv.KeyFile
	})
	mqttJSRoundTrip(t, node, modules, b.MQTTAddr(), "wss://"+b.HTTPSAddr()+"/mqtt", ca.File)
}
