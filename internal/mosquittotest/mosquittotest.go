// Package mosquittotest runs the real Mosquitto broker and its tools in
// tests: Require finds a program (skipping the test when it is missing,
// unless TINYMQ_REQUIRE_INTEROP=1), Start runs a broker on a free loopback
// port and stops it at the end of the test.
package mosquittotest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Require returns the path of program bin, or skips the test when it is
// not installed; with TINYMQ_REQUIRE_INTEROP=1 (CI) the test fails instead.
func Require(t testing.TB, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} { // mosquitto lives in sbin
			if q := filepath.Join(dir, bin); isExec(q) {
				return q
			}
		}
		if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s not found and TINYMQ_REQUIRE_INTEROP=1", bin)
		}
		t.Skipf("%s not installed (apt-get install mosquitto mosquitto-clients); skipping interop test", bin)
	}
	return p
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Readable makes dir and everything in it readable by other users:
// Mosquitto started as root drops privileges to user mosquitto before it
// reads its password and ACL files, and t.TempDir() is 0700. Directories
// between os.TempDir() and dir get o+rx too.
func Readable(t testing.TB, dir string) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir() nests dir in a per-test directory that is 0700 as well.
	tmp := filepath.Clean(os.TempDir())
	for p := filepath.Dir(filepath.Clean(dir)); strings.HasPrefix(p, tmp+string(filepath.Separator)); p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil {
			_ = os.Chmod(p, st.Mode().Perm()|0o055)
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Start writes dir/mosquitto.conf ("listener PORT 127.0.0.1" followed by
// conf), makes dir readable (Readable), runs mosquitto -c on it and waits
// until the port accepts connections. It returns "127.0.0.1:PORT". The
// broker is killed (by its pid) when the test ends; its log is printed if
// the test failed.
func Start(t testing.TB, dir, conf string) string {
	t.Helper()
	bin := Require(t, "mosquitto")
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between the probe and the bind
		port := freePort(t)
		cfg := filepath.Join(dir, "mosquitto.conf")
		body := fmt.Sprintf("listener %d 127.0.0.1\n%s\n", port, conf)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		Readable(t, dir)
		cmd := exec.Command(bin, "-c", cfg)
		out := &syncBuf{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting mosquitto: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{}
				continue
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				t.Cleanup(func() {
					_ = cmd.Process.Kill()
					<-exited
					if t.Failed() {
						t.Logf("mosquitto log:\n%s", out.String())
					}
				})
				return addr
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Millisecond):
			}
		}
		_ = cmd.Process.Kill()
		<-exited
		lastLog = out.String()
	}
	t.Fatalf("mosquitto did not start:\n%s", lastLog)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
