package auth

import (
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinymq/tinymq/internal/mosquittotest"
)

// mosquittoPasswd runs the real mosquitto_passwd with args.
func mosquittoPasswd(t *testing.T, args ...string) {
	t.Helper()
	bin := mosquittotest.Require(t, "mosquitto_passwd")
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
	}
}

// hand6 builds a $6$ line without our code: sha512(password || salt)
// through openssl when it is installed, crypto/sha512 otherwise.
func hand6(t *testing.T, user, password string, salt []byte) string {
	t.Helper()
	var sum []byte
	if bin, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command(bin, "dgst", "-sha512", "-binary")
		cmd.Stdin = strings.NewReader(password + string(salt))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl: %v", err)
		}
		sum = out
	} else {
		s := sha512.Sum512(append([]byte(password), salt...))
		sum = s[:]
	}
	if len(sum) != 64 {
		t.Fatalf("digest of %d bytes", len(sum))
	}
	return user + ":$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum)
}

func TestPasswordFileFromMosquittoPasswd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "secret")
	mosquittoPasswd(t, "-b", path, "bob", "pa ss:wörd")
	mosquittoPasswd(t, "-b", "-I", "1000", path, "carol", "x")
	mosquittoPasswd(t, "-b", "-H", "sha512", path, "dave", "old-style")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, hand6(t, "erin", "hunter2", []byte("0123456789ab"))+"\n"...)
	data = append([]byte("# made by mosquitto_passwd\n\n"), data...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != 5 {
		t.Fatalf("Len %d; want 5\n%s", f.Len(), data)
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "secret", true},
		{"alice", "Secret", false},
		{"alice", "", false},
		{"bob", "pa ss:wörd", true},
		{"bob", "pa ss", false},
		{"carol", "x", true},
		{"carol", "y", false},
		{"dave", "old-style", true},
		{"dave", "old-stylE", false},
		{"erin", "hunter2", true},
		{"erin", "hunter3", false},
		{"mallory", "secret", false},
		{"Alice", "secret", false},
	} {
		if got := f.Verify(c.user, []byte(c.pw)); got != c.want {
			t.Errorf("Verify(%q, %q) = %v; want %v", c.user, c.pw, got, c.want)
		}
	}
	if !f.Has("erin") || f.Has("mallory") {
		t.Errorf("Has: erin %v mallory %v", f.Has("erin"), f.Has("mallory"))
	}
	salt, iter, sp, ok := f.SCRAM("carol")
	if !ok || iter != 1000 || len(salt) != SaltLen || !bytes.Equal(sp, pbkdf2SHA512([]byte("x"), salt, 1000)) {
		t.Errorf("SCRAM(carol) = %x %d %x %v", salt, iter, sp, ok)
	}
	if _, _, _, ok := f.SCRAM("dave"); ok {
		t.Error("SCRAM of a $6$ entry: ok")
	}
	if _, _, _, ok := f.SCRAM("mallory"); ok {
		t.Error("SCRAM of an unknown user: ok")
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$7$101$") || len(strings.Split(h, "$")) != 5 {
		t.Fatalf("hash %q", h)
	}
	h2, _ := HashPassword([]byte("s3cret"))
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	h6, err := HashPasswordSHA512([]byte("s3cret"))
	if err != nil || !strings.HasPrefix(h6, "$6$") {
		t.Fatalf("HashPasswordSHA512: %q %v", h6, err)
	}
	f, err := ParsePasswordFile("p", []byte("u:"+h+"\r\n  v : "+h6+"  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Verify("u", []byte("s3cret")) || f.Verify("u", []byte("s3cre")) || !f.Verify("v", []byte("s3cret")) {
		t.Fatal("Verify of HashPassword output")
	}
	if _, err := HashPasswordPBKDF2(nil, 0); err == nil {
		t.Fatal("0 iterations accepted")
	}
}

func TestParsePasswordFileErrors(t *testing.T) {
	good, _ := HashPassword([]byte("p"))
	salt := base64.StdEncoding.EncodeToString([]byte("0123456789ab"))
	hash := base64.StdEncoding.EncodeToString(make([]byte, 64))
	for _, c := range []struct{ data, want string }{
		{"alice\n", "f:1: missing ':'"},
		{"# c\n\nalice:plain\n", "f:3: user \"alice\": password is not a hash"},
		{":" + good, "f:1: empty user name"},
		{"a:", "f:1: missing password hash"},
		{"a:$5$x$y", "unknown hash type $5$"},
		{"a:$7$0$" + salt + "$" + hash, "bad iteration count"},
		{"a:$7$x$" + salt + "$" + hash, "bad iteration count"},
		{"a:$7$101$" + salt + "$" + hash[4:], "hash must be 64 bytes"},
		{"a:$7$101$AAAA$" + hash, "salt must be 12 bytes"},
		{"a:$6$" + salt + "$" + hash + "$", "malformed $6$"},
		{"a:$7$101$" + salt, "malformed $7$"},
	} {
		_, err := ParsePasswordFile("f", []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v; want %q", c.data, err, c.want)
		}
	}
	if _, err := LoadPasswordFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file: no error")
	}
	// Last line wins for a user listed twice, as in Mosquitto.
	h1, _ := HashPassword([]byte("one"))
	h2, _ := HashPassword([]byte("two"))
	f, err := ParsePasswordFile("f", []byte("u:"+h1+"\nu:"+h2))
	if err != nil || f.Len() != 1 || !f.Verify("u", []byte("two")) || f.Verify("u", []byte("one")) {
		t.Errorf("duplicate user: %v", err)
	}
}

func FuzzParsePasswordFile(f *testing.F) {
	h, _ := HashPassword([]byte("p"))
	f.Add([]byte("alice:" + h + "\n# c\n\n"))
	f.Add([]byte("a:$6$MDEyMzQ1Njc4OWFi$" + base64.StdEncoding.EncodeToString(make([]byte, 64))))
	f.Add([]byte(" b :$7$1$MDEyMzQ1Njc4OWFi$" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := ParsePasswordFile("f", data)
		if err != nil {
			return
		}
		// Every entry round-trips: format it, parse it, same entry.
		var out strings.Builder
		for u, e := range pf.users {
			out.WriteString(u + ":" + e.String() + "\n")
		}
		pf2, err := ParsePasswordFile("g", []byte(out.String()))
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out.String())
		}
		if pf2.Len() != pf.Len() {
			t.Fatalf("reparse: %d users; want %d", pf2.Len(), pf.Len())
		}
		for u, e := range pf.users {
			e2 := pf2.users[u]
			if e2 == nil || e2.String() != e.String() || e2.kind != e.kind || e2.iter != e.iter {
				t.Fatalf("user %q: %v -> %v", u, e, e2)
			}
		}
	})
}
