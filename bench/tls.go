package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TLSClient says how the load generator's connections speak TLS. The zero
// value is TLS 1.3 with X25519 only, verifying the broker against the
// system's roots.
type TLSClient struct {
	Version    string `json:"version"`               // "1.2" or "1.3" (default); the client offers only this one
	CAFile     string `json:"ca_file,omitempty"`     // PEM roots to verify the broker against; empty: the system's
	CertFile   string `json:"cert_file,omitempty"`   // client certificate for mTLS, with KeyFile
	KeyFile    string `json:"key_file,omitempty"`    // client key for mTLS
	Curve      string `json:"curve"`                 // "x25519" (default: what an ESP32's mbedTLS offers) or "default" (Go's, X25519MLKEM768 first)
	Resume     bool   `json:"resume"`                // resume sessions (tickets) across one worker's connections
	ServerName string `json:"server_name,omitempty"` // name to verify; default: the host of the broker address
}

// Normalize fills in the defaults and checks the choices.
func (t *TLSClient) Normalize() error {
	switch t.Version {
	case "":
		t.Version = "1.3"
	case "1.2", "1.3":
	default:
		return fmt.Errorf("bench: TLS version %q: want 1.2 or 1.3", t.Version)
	}
	switch t.Curve {
	case "":
		t.Curve = "x25519"
	case "x25519", "default":
	default:
		return fmt.Errorf("bench: TLS curve %q: want x25519 or default", t.Curve)
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("bench: a TLS client certificate needs both a certificate and a key file")
	}
	return nil
}

// Config builds the crypto/tls client configuration for connections to
// addr. One configuration is shared by every connection of a worker, so
// with Resume they share one session cache.
func (t TLSClient) Config(addr string) (*tls.Config, error) {
	if err := t.Normalize(); err != nil {
		return nil, err
	}
	c := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13}
	if t.Version == "1.2" {
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("bench: broker address %q: %w", addr, err)
		}
		c.ServerName = host
	}
	if t.Curve == "x25519" {
		c.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bench: TLS CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("bench: TLS CA %s: no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bench: TLS client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	if t.Resume {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	} else {
		c.SessionTicketsDisabled = true
	}
	return c, nil
}

// workerArgs are the worker command-line flags that carry t.
func (t TLSClient) workerArgs() []string {
	a := []string{"--tls", "--tls-version", t.Version, "--tls-curve", t.Curve}
	if t.CAFile != "" {
		a = append(a, "--tls-ca", t.CAFile)
	}
	if t.CertFile != "" {
		a = append(a, "--tls-cert", t.CertFile, "--tls-key", t.KeyFile)
	}
	if t.ServerName != "" {
		a = append(a, "--tls-server-name", t.ServerName)
	}
	if t.Resume {
		a = append(a, "--tls-resume")
	}
	return a
}

// CertFiles names the PEM files of a directory WriteCerts filled.
type CertFiles struct {
	Dir        string `json:"dir"`
	CA         string `json:"ca"`          // ca.pem
	ServerCert string `json:"server_cert"` // server.pem, SAN 127.0.0.1 and localhost
	ServerKey  string `json:"server_key"`  // server.key
	ClientCert string `json:"client_cert"` // client.pem, CN tinymq-bench-client
	ClientKey  string `json:"client_key"`  // client.key
}

// CertFilesIn names the files WriteCerts writes in dir.
func CertFilesIn(dir string) CertFiles {
	return CertFiles{Dir: dir, CA: filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client.key")}
}

// DefaultCertDir is where `tinymq-bench certs` writes and where
// `tinymq-bench conn --tls` looks for ca.pem unless told otherwise.
const DefaultCertDir = "tls-certs"

// WriteCerts writes a throwaway CA, a server certificate for hosts (IP
// addresses or DNS names; none: 127.0.0.1 and localhost) and a client
// certificate, all ECDSA P-256, into dir, creating it. These are benchmark
// keys: the directory is 0755 and every file 0644, so that a broker that
// drops root (Mosquitto runs as user mosquitto) can read them.
func WriteCerts(dir string, hosts ...string) (CertFiles, error) {
	f := CertFilesIn(dir)
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return f, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tinymq-bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(2, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	leaf := func(certPath, keyPath, cn string, usage x509.ExtKeyUsage, hosts []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.AddDate(2, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "PRIVATE KEY", kb)
	}
	if err := leaf(f.ServerCert, f.ServerKey, hosts[0], x509.ExtKeyUsageServerAuth, hosts); err != nil {
		return f, err
	}
	if err := leaf(f.ClientCert, f.ClientKey, "tinymq-bench-client", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return f, err
	}
	return f, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644) // whatever the umask
}

// TLSServer is how the comparison configures each broker's TLS listener.
type TLSServer struct {
	Files       CertFiles
	Version     string // "1.2" or "1.3": the lowest version the broker is told to accept, where it can be told
	ClientCerts bool   // require a client certificate signed by Files.CA (mTLS)
}

// tinyMQTLSArgs is TinyMQ's command line for a TLS listener on tlsAddr
// with plain MQTT on mqttAddr and, when httpAddr is not empty, /metrics
// there.
func tinyMQTLSArgs(mqttAddr, tlsAddr, httpAddr string, s TLSServer) []string {
	a := []string{"--mqtt-addr", mqttAddr, "--http-addr=" + httpAddr, "--sys-interval", "0s", "--persistence=false",
		"--tls-addr", tlsAddr, "--tls-cert", s.Files.ServerCert, "--tls-key", s.Files.ServerKey}
	if s.ClientCerts {
		a = append(a, "--tls-client-ca", s.Files.CA, "--tls-require-cert")
	}
	return a
}

// StartTinyMQTLS runs a tinymq binary with a TLS listener on a free
// loopback port (the Broker's Addr), plain MQTT and HTTP (for /metrics,
// the Broker's MetricsURL) on two more.
func StartTinyMQTLS(bin string, s TLSServer) (*Broker, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	cmd := execCommand(bin, tinyMQTLSArgs(addr(ports[0]), addr(ports[1]), addr(ports[2]), s)...)
	b, err := startAndWait("tinymq", addr(ports[1]), cmd)
	if err != nil {
		return nil, err
	}
	// The HTTP door (for /metrics) may come up after the TLS listener.
	if err := waitListen(addr(ports[2]), 10*time.Second); err != nil {
		b.Stop()
		return nil, fmt.Errorf("tinymq metrics: %w", err)
	}
	b.MetricsURL = "http://" + addr(ports[2]) + "/metrics"
	return b, nil
}

// waitListen polls addr until it accepts a connection, or d has passed.
func waitListen(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mosquittoTLSConf is a Mosquitto 2.0 configuration with one TLS listener
// and the defaults StartMosquitto uses.
func mosquittoTLSConf(port int, s TLSServer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\ncafile %s\n", port, s.Files.ServerCert, s.Files.ServerKey, s.Files.CA)
	// tls_version is the lowest version accepted (Mosquitto ≥ 2.0).
	if s.Version == "1.2" {
		b.WriteString("tls_version tlsv1.2\n")
	} else {
		b.WriteString("tls_version tlsv1.3\n")
	}
	if s.ClientCerts {
		b.WriteString("require_certificate true\n")
	}
	b.WriteString("allow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 1000\nlog_type error\n")
	return b.String()
}

// StartMosquittoTLS runs mosquitto with a TLS listener on a free loopback
// port and otherwise the configuration of StartMosquitto. The
// configuration lives in dir; the certificate files must be readable by
// the user Mosquitto drops root to (WriteCerts makes them so).
func StartMosquittoTLS(bin, dir string, s TLSServer) (*Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto-tls.conf")
	if err := os.WriteFile(conf, []byte(mosquittoTLSConf(port, s)), 0o644); err != nil {
		return nil, err
	}
	cmd := mosquittoCommand(bin, conf)
	return startAndWait("mosquitto", "127.0.0.1:"+strconv.Itoa(port), cmd)
}

// StartCommandTLS runs another broker as StartCommand does, for its TLS
// listener: in the command, {port} is the free loopback port it must
// serve MQTT over TLS on, {cert} and {key} the server certificate and key
// (PEM), {ca} the CA certificate (to verify client certificates with, for
// mTLS) and {dir} a scratch directory.
func StartCommandTLS(label, command, dir string, s TLSServer) (*Broker, error) {
	return startCommand(label, command, dir, "{cert}", s.Files.ServerCert, "{key}", s.Files.ServerKey, "{ca}", s.Files.CA)
}
