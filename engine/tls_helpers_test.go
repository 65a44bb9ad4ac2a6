package engine

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test (ECDSA P-256), with
// its PEM file in a directory readable by other users (Mosquitto drops
// privileges before it reads certificates).
type testCA struct {
	t    testing.TB
	dir  string
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	File string // CA certificate PEM
	Pool *x509.CertPool
}

var serialMu sync.Mutex
var serialNext int64 = 1

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serialNext++
	return big.NewInt(serialNext)
}

// newTestCA makes a CA named name in a fresh temporary directory.
func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"TinyMQ tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: dir, name: name, cert: cert, key: key, Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	ca.File = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// issued is a certificate signed by a testCA: PEM files and the loaded pair.
type issued struct {
	CertFile, KeyFile string
	Pair              tls.Certificate
}

// issue signs a certificate for cn: a server certificate for 127.0.0.1 and
// localhost when server is set, else a client certificate.
func (ca *testCA) issue(cn string, server bool) issued {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	base := strings.ReplaceAll(cn, " ", "_")
	out := issued{
		CertFile: ca.write(base+".crt", "CERTIFICATE", der),
		KeyFile:  ca.write(base+".key", "PRIVATE KEY", kder),
	}
	out.Pair, err = tls.LoadX509KeyPair(out.CertFile, out.KeyFile)
	if err != nil {
		ca.t.Fatal(err)
	}
	return out
}

// startTLSBroker runs a broker with MQTT over TLS on a free loopback port
// (and plain MQTT), with a server certificate from ca.
func startTLSBroker(t testing.TB, ca *testCA, edit func(*Options)) *Broker {
	t.Helper()
	srv := ca.issue("tinymq-server", true)
	return startBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSCert, o.TLSKey = srv.CertFile, srv.KeyFile
		if edit != nil {
			edit(o)
		}
	})
}

// clientTLS is a client config trusting ca, with optional client
// certificates. A given certificate is always sent, even when the server
// asks for another CA's (Go's client would otherwise send none).
func clientTLS(ca *testCA, certs ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return cfg
}

// dialTLSRaw opens a byte-level MQTT client over TLS (the handshake is
// done when it returns).
func dialTLSRaw(t testing.TB, addr string, cfg *tls.Config) *rawClient {
	t.Helper()
	c, err := tlsDial(addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: 4}
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// logCapture collects a broker's log lines.
type logCapture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// capture points o's logger at a new logCapture.
func capture(o *Options) *logCapture {
	lc := &logCapture{}
	o.Logger = slog.New(slog.NewTextHandler(lc, nil))
	return lc
}

var _ io.Writer = (*logCapture)(nil)
