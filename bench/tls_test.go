package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"
)

// interopBin finds an external program (also in /usr/sbin, where Debian
// puts mosquitto). It skips the test when the program is missing, unless
// TINYMQ_REQUIRE_INTEROP=1, where it fails instead.
func interopBin(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
		t.Fatalf("%s not found and TINYMQ_REQUIRE_INTEROP=1", name)
	}
	t.Skipf("%s not installed (apt-get install mosquitto openssl); skipping", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// certDir writes the benchmark certificates into a directory the user
// Mosquitto drops root to can reach.
func certDir(t *testing.T) (string, CertFiles) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's parent is 0700 too
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := WriteCerts(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, f
}

// TestWriteCertsOpenSSLVerifies: openssl accepts the server certificate
// for TLS servers and the client certificate for TLS clients, both
// against ca.pem; the server certificate names 127.0.0.1 and localhost;
// every file is readable by other users.
func TestWriteCertsOpenSSLVerifies(t *testing.T) {
	openssl := interopBin(t, "openssl")
	_, f := certDir(t)
	for _, c := range []struct{ purpose, cert string }{{"sslserver", f.ServerCert}, {"sslclient", f.ClientCert}} {
		out, err := exec.Command(openssl, "verify", "-CAfile", f.CA, "-purpose", c.purpose, c.cert).CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.cert+": OK") {
			t.Fatalf("openssl verify -purpose %s %s: %v\n%s", c.purpose, c.cert, err, out)
		}
	}
	// A certificate from another CA must not verify: the check above can fail.
	_, other := certDir(t)
	if out, err := exec.Command(openssl, "verify", "-CAfile", f.CA, other.ServerCert).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a certificate of another CA:\n%s", out)
	}
	b, err := os.ReadFile(f.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("server.pem: no PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v %v; want mode 0644", p, st.Mode(), err)
		}
	}
	if _, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey); err != nil {
		t.Fatal(err)
	}
}

func TestTLSClientConfig(t *testing.T) {
	_, f := certDir(t)
	c, err := TLSClient{CAFile: f.CA}.Config("127.0.0.1:8883")
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 || !slices.Equal(c.CurvePreferences, []tls.CurveID{tls.X25519}) ||
		c.ServerName != "127.0.0.1" || c.RootCAs == nil || !c.SessionTicketsDisabled || c.ClientSessionCache != nil || len(c.Certificates) != 0 {
		t.Fatalf("default client config: %+v", c)
	}
	c, err = TLSClient{Version: "1.2", Curve: "default", Resume: true, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey,
		ServerName: "localhost"}.Config("127.0.0.1:8883")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxVersion != tls.VersionTLS12 || c.CurvePreferences != nil || c.ServerName != "localhost" || c.SessionTicketsDisabled ||
		c.ClientSessionCache == nil || len(c.Certificates) != 1 {
		t.Fatalf("1.2 client config: %+v", c)
	}
	for _, bad := range []TLSClient{{Version: "1.1"}, {Curve: "p256"}, {CertFile: f.ClientCert}, {CAFile: f.ServerKey}} {
		if _, err := bad.Config("127.0.0.1:8883"); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestTinyMQTLSCommandLine pins the flags the comparison gives tinymq
// for TLS (they are the broker's contract).
func TestTinyMQTLSCommandLine(t *testing.T) {
	f := CertFilesIn("/c")
	got := strings.Join(tinyMQTLSArgs("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", TLSServer{Files: f}), " ")
	want := "--mqtt-addr 127.0.0.1:1 --http-addr=127.0.0.1:3 --sys-interval 0s --persistence=false --tls-addr 127.0.0.1:2 --tls-cert /c/server.pem --tls-key /c/server.key"
	if got != want {
		t.Fatalf("tinymq TLS args\n got %s\nwant %s", got, want)
	}
	got = strings.Join(tinyMQTLSArgs("127.0.0.1:1", "127.0.0.1:2", "", TLSServer{Files: f, ClientCerts: true}), " ")
	want = "--mqtt-addr 127.0.0.1:1 --http-addr= --sys-interval 0s --persistence=false --tls-addr 127.0.0.1:2 --tls-cert /c/server.pem --tls-key /c/server.key --tls-client-ca /c/ca.pem --tls-require-cert"
	if got != want {
		t.Fatalf("tinymq mTLS args\n got %s\nwant %s", got, want)
	}
}

// startMosquittoTLS starts a real Mosquitto with a TLS listener, stopped
// at the end of the test.
func startMosquittoTLS(t *testing.T, s TLSServer, dir string) *Broker {
	t.Helper()
	bin := interopBin(t, "mosquitto")
	b, err := StartMosquittoTLS(bin, dir, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestConnTLSMosquitto runs conn --tls against Mosquitto's TLS listener:
// 50 connections over 2 workers and 2 source addresses, every one through
// a TLS 1.3 handshake and CONNACK; the broker's RSS grows and the
// handshake rate is measured.
func TestConnTLSMosquitto(t *testing.T) {
	dir, f := certDir(t)
	b := startMosquittoTLS(t, TLSServer{Files: f, Version: "1.3"}, dir)
	cfg := ConnConfig{Addr: b.Addr, Conns: 50, PerWorker: 25, Sources: 2, KeepAlive: 60, Dialers: 8,
		Hold: 500 * time.Millisecond, Timeout: time.Minute, BrokerPID: b.PID(), Executable: testExe(t),
		TLS: &TLSClient{CAFile: f.CA}}
	res, err := RunConn(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 50 || res.Failed != 0 || res.Handshakes != 50 || res.Workers != 2 {
		t.Fatalf("result %+v; want 50 connected through 50 handshakes by 2 workers", res)
	}
	if res.RSSPerConn <= 0 || res.HandshakesPerSec <= 0 || res.HandshakeMeanMs <= 0 || res.CPUusPerHandshake < 0 {
		t.Fatalf("figures %+v; want RSS per connection and handshake rate > 0", res)
	}
	if c := children(t); len(c) != 1 { // the broker
		t.Fatalf("child processes %v; want only the broker", c)
	}

	// A client that trusts another CA gets no connection: the handshake
	// really verifies.
	_, other := certDir(t)
	cfg.TLS, cfg.Conns, cfg.BrokerPID = &TLSClient{CAFile: other.CA}, 4, 0
	res, err = RunConn(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.Failed != 4 || !strings.Contains(res.FirstError, "certificate") {
		t.Fatalf("with another CA: %+v; want every handshake to fail on the certificate", res)
	}
}

// TestConnTLSMosquittoClientCerts: against Mosquitto with
// require_certificate true, connections presenting the client certificate
// get in and connections without one do not.
func TestConnTLSMosquittoClientCerts(t *testing.T) {
	dir, f := certDir(t)
	b := startMosquittoTLS(t, TLSServer{Files: f, Version: "1.3", ClientCerts: true}, dir)
	cfg := ConnConfig{Addr: b.Addr, Conns: 20, PerWorker: 20, Sources: 1, KeepAlive: 60, Dialers: 4,
		Timeout: time.Minute, BrokerPID: b.PID(), Hold: 100 * time.Millisecond, Executable: testExe(t),
		TLS: &TLSClient{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}}
	res, err := RunConn(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 20 || res.Failed != 0 || res.Handshakes != 20 {
		t.Fatalf("with a client certificate: %+v; want 20 connected", res)
	}
	cfg.TLS = &TLSClient{CAFile: f.CA}
	res, err = RunConn(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.Failed != 20 {
		t.Fatalf("without a client certificate: %+v; want every connection refused", res)
	}
}

// TestCompareTLS runs the idle-TLS scenario of the comparison against a
// stand-in tinymq (started with exactly the TLS flags of the contract,
// with and without client certificates) and a --broker-tls peer given as
// a command line with {port}, {cert}, {key} and {ca}. Both are measured,
// the table has the ratio row and TinyMQ's heap, and no broker is left.
func TestCompareTLS(t *testing.T) {
	exe := testExe(t)
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("client-certs=%v", mtls), func(t *testing.T) {
			dir, f := certDir(t)
			wrapper := filepath.Join(dir, "tinymq")
			if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+exe+" fake-tinymq \"$@\"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			srv := TLSServer{Files: f, Version: "1.3", ClientCerts: mtls}
			peer := exe + " fake-tinymq --tls-addr 127.0.0.1:{port} --tls-cert {cert} --tls-key {key}"
			if mtls {
				peer += " --tls-client-ca {ca} --tls-require-cert"
			}
			var addrs []string
			track := func(b *Broker, err error) (*Broker, error) {
				if err == nil {
					addrs = append(addrs, b.Addr)
				}
				return b, err
			}
			tc := &TLSClient{CAFile: f.CA}
			if mtls {
				tc.CertFile, tc.KeyFile = f.ClientCert, f.ClientKey
			}
			opts := CompareOptions{
				TLS: ConnConfig{Conns: 12, PerWorker: 6, Sources: 2, KeepAlive: 60, Dialers: 4, Hold: 200 * time.Millisecond,
					Timeout: time.Minute, Executable: exe, TLS: tc},
				TLSStarters: map[string]func() (*Broker, error){
					"tinymq": func() (*Broker, error) { return track(StartTinyMQTLS(wrapper, srv)) },
					"peer":   func() (*Broker, error) { return track(StartCommandTLS("peer", peer, dir, srv)) },
				},
				TLSOrder: []string{"tinymq", "peer"},
			}
			rep, err := Compare(context.Background(), nil, nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range opts.TLSOrder {
				r := rep.TLS[name]
				if r.Connected != 12 || r.Handshakes != 12 || r.HandshakesPerSec <= 0 || r.BrokerRSSAfter <= 0 {
					t.Fatalf("%s: %+v", name, r)
				}
			}
			if rep.TLS["tinymq"].HeapAfter <= 0 || rep.TLS["peer"].HeapAfter != 0 {
				t.Fatalf("heap from /metrics: tinymq %d, peer %d; want only tinymq's", rep.TLS["tinymq"].HeapAfter, rep.TLS["peer"].HeapAfter)
			}
			var out strings.Builder
			WriteCompareTLS(&out, rep, opts.TLSOrder, "TLS 1.3, X25519")
			for _, want := range []string{"| idle TLS connections (TLS 1.3, X25519) |", "| tinymq | 12 (0) |", "| peer | 12 (0) |", "| tinymq/peer |", "broker Go heap per connection"} {
				if !strings.Contains(out.String(), want) {
					t.Fatalf("table has no %q:\n%s", want, out.String())
				}
			}
			if len(addrs) != 2 {
				t.Fatalf("started %d brokers; want 2", len(addrs))
			}
			for _, a := range addrs {
				if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
					c.Close()
					t.Fatalf("a broker still listens on %s", a)
				}
			}
			if c := children(t); len(c) != 0 {
				t.Fatalf("child processes left: %v", c)
			}
		})
	}
}

// TestMosquittoTLSConf: the keys of Mosquitto 2.0's TLS listener.
func TestMosquittoTLSConf(t *testing.T) {
	f := CertFilesIn("/c")
	conf := mosquittoTLSConf(8883, TLSServer{Files: f, Version: "1.3", ClientCerts: true})
	for _, want := range []string{"listener 8883 127.0.0.1\n", "certfile /c/server.pem\n", "keyfile /c/server.key\n", "cafile /c/ca.pem\n",
		"tls_version tlsv1.3\n", "require_certificate true\n", "allow_anonymous true\n"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("no %q in\n%s", want, conf)
		}
	}
	conf = mosquittoTLSConf(8883, TLSServer{Files: f, Version: "1.2"})
	if !strings.Contains(conf, "tls_version tlsv1.2\n") || strings.Contains(conf, "require_certificate") {
		t.Fatalf("TLS 1.2 without client certificates:\n%s", conf)
	}
}

// fakeTinyMQ serves what a TinyMQ with TLS serves for the comparison:
// plain MQTT, MQTT over TLS and /metrics with the Go heap, with TinyMQ's
// flags. Unknown flags fail, as they would fail the real binary.
func fakeTinyMQ(args []string) error {
	fs := flag.NewFlagSet("tinymq", flag.ContinueOnError)
	mqttAddr := fs.String("mqtt-addr", "", "")
	httpAddr := fs.String("http-addr", "", "")
	fs.Duration("sys-interval", 0, "")
	fs.Bool("persistence", true, "")
	tlsAddr := fs.String("tls-addr", "", "")
	cert := fs.String("tls-cert", "", "")
	key := fs.String("tls-key", "", "")
	clientCA := fs.String("tls-client-ca", "", "")
	requireCert := fs.Bool("tls-require-cert", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tlsAddr == "" || *cert == "" || *key == "" {
		return errors.New("want --tls-addr, --tls-cert and --tls-key")
	}
	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}}
	if *clientCA != "" {
		b, err := os.ReadFile(*clientCA)
		if err != nil {
			return err
		}
		cfg.ClientCAs = x509.NewCertPool()
		cfg.ClientCAs.AppendCertsFromPEM(b)
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if *requireCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	f := &fakeBroker{srcCh: make(chan string)}
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}
	ln, err := tls.Listen("tcp", *tlsAddr, cfg)
	if err != nil {
		return err
	}
	if *mqttAddr != "" {
		pl, err := net.Listen("tcp", *mqttAddr)
		if err != nil {
			return err
		}
		go serve(pl)
	}
	if *httpAddr != "" {
		hl, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			metrics.Read(s)
			fmt.Fprintf(w, "# TYPE tinymq_go_heap_objects_bytes gauge\ntinymq_go_heap_objects_bytes %d\n", s[0].Value.Uint64())
		})
		go func() { _ = http.Serve(hl, mux) }()
	}
	serve(ln)
	return nil
}

// TestWriteCompareTLS: a row per broker that has figures, in order, then
// the first one's ratio to each other one.
func TestWriteCompareTLS(t *testing.T) {
	rep := CompareReport{TLS: map[string]ConnResult{
		"tinymq":    {Connected: 10, RSSPerConn: 5000, HandshakesPerSec: 2000, CPUusPerHandshake: 100, Resumed: 9, HeapAfter: 1, HeapPerConn: 4000},
		"mosquitto": {Connected: 10, Failed: 1, RSSPerConn: 10000, HandshakesPerSec: 1000, CPUusPerHandshake: 400},
	}}
	var out strings.Builder
	WriteCompareTLS(&out, rep, []string{"tinymq", "absent", "mosquitto"}, "TLS 1.3, X25519")
	want := `
| idle TLS connections (TLS 1.3, X25519) | connected (failed) | broker RSS per idle TLS connection | handshakes/s | broker CPU µs per handshake | resumed handshakes | broker Go heap per connection |
| --- | --- | --- | --- | --- | --- | --- |
| tinymq | 10 (0) | 5000 B | 2000 | 100 | 9 | 4000 B |
| mosquitto | 10 (1) | 10000 B | 1000 | 400 | 0 | — |
| tinymq/mosquitto | | 0.50 | 2.00 | 0.25 | | |
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	WriteCompareTLS(&out, CompareReport{}, []string{"tinymq"}, "")
	if out.Len() != 0 {
		t.Fatalf("no TLS figures, yet a table:\n%s", out.String())
	}
}
