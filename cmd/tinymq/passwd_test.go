package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine/auth"
	"github.com/tinymq/tinymq/internal/mosquittotest"
)

// passwd runs passwdMain and returns its status, stdout and stderr.
func passwd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := passwdMain(args, strings.NewReader(stdin), &out, &errb)
	return rc, out.String(), errb.String()
}

func mustPasswd(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if rc, out, errs := passwd(t, stdin, args...); rc != 0 {
		t.Fatalf("tinymq passwd %v: status %d\n%s%s", args, rc, out, errs)
	}
}

func loadPW(t *testing.T, path string) *auth.PasswordFile {
	t.Helper()
	f, err := auth.LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPasswdCreateUpdateKeepsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mustPasswd(t, "", "-c", "-b", path, "alice", "a-pw")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode %v; want 0600", st.Mode().Perm())
	}
	mustPasswd(t, "", "-b", path, "bob", "b-pw")
	// A comment and a blank line survive, in place; the last line has no
	// newline.
	if err := os.WriteFile(path, []byte("# users\n"+readFile(t, path)+"\n"+"carol:"+mustHash(t, "c-pw")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	mustPasswd(t, "", "-b", path, "alice", "a-new")
	mustPasswd(t, "", "-b", path, "dave", "d-pw")
	got := readFile(t, path)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	var shape []string
	for _, l := range lines {
		u, _, _ := strings.Cut(l, ":")
		shape = append(shape, u)
	}
	if want := "# users|alice|bob||carol|dave"; strings.Join(shape, "|") != want {
		t.Fatalf("lines %q; want %q\n%s", strings.Join(shape, "|"), want, got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v changed; want 0640 kept", st.Mode().Perm())
	}
	f := loadPW(t, path)
	for u, pw := range map[string]string{"alice": "a-new", "bob": "b-pw", "carol": "c-pw", "dave": "d-pw"} {
		if !f.Verify(u, []byte(pw)) {
			t.Errorf("Verify(%s) false", u)
		}
	}
	if f.Verify("alice", []byte("a-pw")) {
		t.Error("old password still valid")
	}
	// -c overwrites.
	mustPasswd(t, "", "-c", "-b", path, "erin", "e-pw")
	if f := loadPW(t, path); f.Len() != 1 || !f.Verify("erin", []byte("e-pw")) {
		t.Fatalf("-c did not overwrite:\n%s", readFile(t, path))
	}
	// -H sha512 and -I.
	mustPasswd(t, "", "-b", "-H", "sha512", path, "old", "o-pw")
	mustPasswd(t, "", "-b", "-I", "500", path, "slow", "s-pw")
	got = readFile(t, path)
	if !strings.Contains(got, "old:$6$") || !strings.Contains(got, "slow:$7$500$") {
		t.Fatalf("-H/-I:\n%s", got)
	}
	if f := loadPW(t, path); !f.Verify("old", []byte("o-pw")) || !f.Verify("slow", []byte("s-pw")) {
		t.Fatal("-H/-I hashes do not verify")
	}
}

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := auth.HashPassword([]byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPasswdPrompt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	rc, out, errs := passwd(t, "pw1\npw1\n", "-c", path, "alice")
	if rc != 0 || out != "Password: \nReenter password: \n" || errs != "" {
		t.Fatalf("status %d stdout %q stderr %q", rc, out, errs)
	}
	mustPasswd(t, "pw2\r\npw2", path, "bob") // CRLF, and a last line without newline
	f := loadPW(t, path)
	if !f.Verify("alice", []byte("pw1")) || !f.Verify("bob", []byte("pw2")) {
		t.Fatalf("prompted passwords do not verify:\n%s", readFile(t, path))
	}
	before := readFile(t, path)
	for _, c := range []struct {
		stdin string
		rc    int
		err   string
	}{
		{"a\nb\n", 2, "Error: Passwords do not match.\n"},
		{"", 1, "Error: Empty password.\n"},
		{"\n", 1, "Error: Empty password.\n"},
		{"a\n", 1, "Error: Empty password.\n"},
	} {
		rc, _, errs := passwd(t, c.stdin, path, "carol")
		if rc != c.rc || errs != c.err {
			t.Errorf("stdin %q: status %d stderr %q; want %d %q", c.stdin, rc, errs, c.rc, c.err)
		}
	}
	if readFile(t, path) != before {
		t.Error("a failed prompt changed the file")
	}
}

func TestPasswdDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mustPasswd(t, "", "-c", "-b", path, "alice", "a")
	mustPasswd(t, "", "-b", path, "bob", "b")
	mustPasswd(t, "", "-D", path, "alice")
	if f := loadPW(t, path); f.Has("alice") || !f.Has("bob") {
		t.Fatalf("after -D alice:\n%s", readFile(t, path))
	}
	before := readFile(t, path)
	rc, _, errs := passwd(t, "", "-D", path, "nobody")
	if rc != 1 || errs != "Warning: User nobody not found in password file.\n" {
		t.Fatalf("-D unknown: status %d stderr %q", rc, errs)
	}
	if readFile(t, path) != before {
		t.Fatal("-D of an unknown user changed the file")
	}
}

func TestPasswdUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	hashed := mustHash(t, "h-pw")
	if err := os.WriteFile(path, []byte("# plain\nalice:a-pw\n bob : b pw \ncarol:"+hashed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustPasswd(t, "", "-U", path)
	got := readFile(t, path)
	f := loadPW(t, path)
	if !f.Verify("alice", []byte("a-pw")) || !f.Verify("bob", []byte("b pw")) || !f.Verify("carol", []byte("h-pw")) {
		t.Fatalf("after -U:\n%s", got)
	}
	if !strings.HasPrefix(got, "# plain\n") || !strings.Contains(got, "carol:"+hashed+"\n") {
		t.Fatalf("-U changed a comment or an already hashed line:\n%s", got)
	}
}

func TestPasswdErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	corrupt := filepath.Join(dir, "corrupt")
	if err := os.WriteFile(corrupt, []byte("alice:"+mustHash(t, "x")+"\nbob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args           []string
		rc             int
		stdout, stderr string
	}{
		{nil, 1, "Usage: tinymq passwd", ""},
		{[]string{"f"}, 1, "Usage: tinymq passwd", ""},
		{[]string{"-b", "f", "u"}, 1, "Usage: tinymq passwd", ""},
		{[]string{"-b", missing, "u", "p"}, 1, "", "Error: Unable to open password file " + missing + ". No such file or directory.\n"},
		{[]string{"-D", missing, "u"}, 1, "", "Error: Unable to open password file " + missing + ". No such file or directory.\n"},
		{[]string{"-c", "-D", "f", "u"}, 1, "", "Error: -c and -D cannot be used together.\n"},
		{[]string{"-c", "-U", "f"}, 1, "", "Error: -c and -U cannot be used together.\n"},
		{[]string{"-D", "-U", "f"}, 1, "", "Error: -D and -U cannot be used together.\n"},
		{[]string{"-b", "-D", "f", "u"}, 1, "", "Error: -b and -D cannot be used together.\n"},
		{[]string{"-D", "f"}, 1, "", "Error: -D argument given but password file or username missing.\n"},
		{[]string{"-U", "f", "x"}, 1, "", "Error: -U argument given but password file missing.\n"},
		{[]string{"-c", "-b", "f", "u"}, 1, "", "Error: -c argument given but password file, username, or password missing.\n"},
		{[]string{"-c", "f"}, 1, "", "Error: -c argument given but password file or username missing.\n"},
		{[]string{"-H", "md5", "f", "u"}, 1, "", "Error: Unknown hash type 'md5'\n"},
		{[]string{"-I", "0", "f", "u"}, 1, "", "Error: Number of iterations must be > 0.\n"},
		{[]string{"-c", "-b", filepath.Join(dir, "x"), "a:b", "p"}, 1, "", "Error: Username must not contain the ':' character.\n"},
		{[]string{"-c", "-b", filepath.Join(dir, "x"), "a\tb", "p"}, 1, "", "Error: Username must not contain control characters.\n"},
		{[]string{"-b", corrupt, "carol", "p"}, 1, "", "Error: Corrupt password file at line 2.\n"},
		{[]string{"-c", "-b", filepath.Join(dir, "no", "such", "dir"), "u", "p"}, 1, "", "Error: Unable to open file " + filepath.Join(dir, "no", "such", "dir") + " for writing. No such file or directory.\n"},
	} {
		rc, out, errs := passwd(t, "", c.args...)
		if rc != c.rc || !strings.Contains(out, c.stdout) || errs != c.stderr {
			t.Errorf("%q: status %d stdout %.40q stderr %q; want %d, %q, %q", c.args, rc, out, errs, c.rc, c.stdout, c.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a refused user name created the file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left-over files in %s: %v", dir, ents)
	}
}

// TestPasswdMosquittoInterop: a file written by tinymq passwd is accepted
// by the real Mosquitto (right password connects, a wrong one is refused),
// and mosquitto_passwd -D edits it.
func TestPasswdMosquittoInterop(t *testing.T) {
	pub := mosquittotest.Require(t, "mosquitto_pub")
	mpw := mosquittotest.Require(t, "mosquitto_passwd")
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	mustPasswd(t, "", "-c", "-b", path, "alice", "s3cret pw")
	mustPasswd(t, "", "-b", path, "bob", "b-pw")
	addr := mosquittotest.Start(t, dir, "allow_anonymous false\npersistence false\npassword_file "+path+"\n")
	_, port, _ := strings.Cut(addr, ":")
	publish := func(user, pw string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", port, "-i", "pwtest-"+strconv.Itoa(os.Getpid()),
			"-u", user, "-P", pw, "-t", "t", "-m", "m", "-q", "1").CombinedOutput()
		return string(out), err
	}
	if out, err := publish("alice", "s3cret pw"); err != nil {
		t.Fatalf("right password refused: %v\n%s", err, out)
	}
	if out, err := publish("bob", "b-pw"); err != nil {
		t.Fatalf("right password refused: %v\n%s", err, out)
	}
	out, err := publish("alice", "wrong")
	if err == nil || !strings.Contains(out, "not authorised") {
		t.Fatalf("wrong password: err %v, output %q; want a refusal saying \"not authorised\"", err, out)
	}
	if out, err := exec.Command(mpw, "-D", path, "alice").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd -D on our file: %v\n%s", err, out)
	}
	if f := loadPW(t, path); f.Has("alice") || !f.Verify("bob", []byte("b-pw")) {
		t.Fatalf("after mosquitto_passwd -D:\n%s", readFile(t, path))
	}
}
