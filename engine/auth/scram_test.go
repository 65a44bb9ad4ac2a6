package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// scramFile builds a real PasswordFile: each user's password hashed with
// HashPasswordPBKDF2 at the given iterations, plus extra raw lines.
func scramFile(t testing.TB, iterations int, users map[string]string, extra ...string) *PasswordFile {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := HashPasswordPBKDF2([]byte(p), iterations)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + h + "\n")
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	f, err := ParsePasswordFile("test", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fixedNonce returns a nonce hook that always answers n.
func fixedNonce(n string) func() string { return func() string { return n } }

// scramRun drives one whole exchange between c and s and returns the first
// error, which step it came from, and the server-first message.
func scramRun(c *SCRAMClient, s *SCRAMServer) (step string, serverFirst []byte, err error) {
	sf, done, err := s.Step(c.First())
	if err != nil || done {
		return "server-first", nil, fmt.Errorf("done=%v: %w", done, err)
	}
	cf, err := c.Step(sf)
	if err != nil {
		return "client-final", sf, err
	}
	sfin, done, err := s.Step(cf)
	if err != nil {
		return "server-final", sf, err
	}
	if !done {
		return "server-final", sf, errors.New("not done after client-final")
	}
	if err := c.Verify(sfin); err != nil {
		return "verify", sf, err
	}
	return "", sf, nil
}

func TestSCRAMRoundTrip(t *testing.T) {
	users := map[string]string{"alice": "s3cret", "bob,=1": "pa ss:wörd", "carol": ""}
	for _, iter := range []int{101, 1000} {
		f := scramFile(t, iter, users)
		for u, p := range users {
			t.Run(fmt.Sprintf("iterations=%d/user=%s", iter, u), func(t *testing.T) {
				s := NewSCRAMServer(f.SCRAM)
				c := NewSCRAMClient(u, p)
				step, sf, err := scramRun(c, s)
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				if got := s.Username(); got != u {
					t.Errorf("Username() = %q, want %q", got, u)
				}
				if !bytes.HasSuffix(sf, fmt.Appendf(nil, ",i=%d", iter)) {
					t.Errorf("server-first %q does not offer i=%d", sf, iter)
				}
				// The exchange is over: any further Step fails.
				if out, done, err := s.Step([]byte("n,,n=alice,r=x")); !errors.Is(err, ErrSCRAMFailed) || done || out != nil {
					t.Errorf("Step after done = %q, %v, %v; want ErrSCRAMFailed", out, done, err)
				}
				// ... and does not take back the authentication that was done.
				if got := s.Username(); got != u {
					t.Errorf("Username() after a refused extra Step = %q, want %q", got, u)
				}
			})
		}
	}
}

// TestSCRAMGS2Y: a "y,," client (it could bind a channel but thinks we
// cannot) is accepted; c= must then carry "y,,".
func TestSCRAMGS2Y(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "pw"})
	c := NewSCRAMClient("alice", "pw")
	c.gs2 = "y,,"
	if step, _, err := scramRun(c, NewSCRAMServer(f.SCRAM)); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
}

func TestSCRAMWrongPassword(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "right"})
	s := NewSCRAMServer(f.SCRAM)
	step, _, err := scramRun(NewSCRAMClient("alice", "wrong"), s)
	if step != "server-final" || !errors.Is(err, ErrSCRAMFailed) {
		t.Fatalf("wrong password: %s: %v; want server-final: ErrSCRAMFailed", step, err)
	}
	if s.Username() != "" {
		t.Errorf("Username() after failure = %q", s.Username())
	}
	if _, _, err := s.Step([]byte("c=biws,r=x,p=x")); !errors.Is(err, ErrSCRAMFailed) {
		t.Errorf("Step after failure: %v, want ErrSCRAMFailed", err)
	}
}

// serverFirstShape is what every server-first looks like for a client nonce
// of "CNONCE": the nonce plus 32 base64 characters (24 bytes), a 12-byte
// salt, an iteration count.
var serverFirstShape = regexp.MustCompile(`^r=CNONCE[A-Za-z0-9+/]{32},s=([A-Za-z0-9+/]{16}),i=([0-9]+)$`)

// TestSCRAMUnknownUser: users without SCRAM credentials (unknown, or a $6$
// entry) get a server-first shaped like a real one, with a salt stable per
// user, and fail at the proof exactly as a wrong password does.
func TestSCRAMUnknownUser(t *testing.T) {
	h6, err := HashPasswordSHA512([]byte("old"))
	if err != nil {
		t.Fatal(err)
	}
	f := scramFile(t, DefaultIterations, map[string]string{"alice": "pw"}, "dave:"+h6)
	firstOf := func(user string) (salt, iter string) {
		t.Helper()
		c := NewSCRAMClient(user, "pw")
		c.nonce = fixedNonce("CNONCE")
		sf, _, err := NewSCRAMServer(f.SCRAM).Step(c.First())
		if err != nil {
			t.Fatalf("server-first for %q: %v", user, err)
		}
		m := serverFirstShape.FindSubmatch(sf)
		if m == nil {
			t.Fatalf("server-first for %q = %q, not shaped like %v", user, sf, serverFirstShape)
		}
		return string(m[1]), string(m[2])
	}
	realSalt, realIter := firstOf("alice")
	if realIter != "101" {
		t.Fatalf("alice's i=%s", realIter)
	}
	for _, u := range []string{"mallory", "dave"} {
		salt, iter := firstOf(u)
		if iter != realIter {
			t.Errorf("%s: i=%s, a real user's is %s", u, iter, realIter)
		}
		if again, _ := firstOf(u); again != salt {
			t.Errorf("%s: salt %s then %s; want stable", u, salt, again)
		}
		if salt == realSalt {
			t.Errorf("%s: same salt as alice", u)
		}
		// Even the right password of a $6$ entry fails, at the proof.
		pw := map[string]string{"mallory": "pw", "dave": "old"}[u]
		step, _, err := scramRun(NewSCRAMClient(u, pw), NewSCRAMServer(f.SCRAM))
		if step != "server-final" || !errors.Is(err, ErrSCRAMFailed) {
			t.Errorf("%s: %s: %v; want server-final: ErrSCRAMFailed", u, step, err)
		}
	}
	if a, b := fakeSCRAMSalt("mallory"), fakeSCRAMSalt("mallorz"); a == b {
		t.Error("two unknown users share a salt")
	}
}

func fakeSCRAMSalt(u string) string { s, _ := fakeSCRAM(u); return string(s) }

// TestSCRAMUnknownUserFakeKeyLeaked: even a client that knows the fake
// SaltedPassword (it would need the process key) is refused: the proof
// matches, the user still has no credentials.
func TestSCRAMUnknownUserFakeKeyLeaked(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "pw"})
	s := NewSCRAMServer(f.SCRAM)
	s.nonce = fixedNonce("SN")
	sf, _, err := s.Step([]byte("n,,n=mallory,r=abc"))
	if err != nil {
		t.Fatal(err)
	}
	_, sp := fakeSCRAM("mallory")
	cfw := "c=biws,r=abcSN"
	auth := []byte("n=mallory,r=abc," + string(sf) + "," + cfw)
	mac := hmac.New(sha512.New, sp)
	mac.Write([]byte("Client Key"))
	ck := mac.Sum(nil)
	sk := sha512.Sum512(ck)
	mac = hmac.New(sha512.New, sk[:])
	mac.Write(auth)
	proof := mac.Sum(nil)
	for i := range proof {
		proof[i] ^= ck[i]
	}
	cf := cfw + ",p=" + base64.StdEncoding.EncodeToString(proof)
	if out, done, err := s.Step([]byte(cf)); !errors.Is(err, ErrSCRAMFailed) || done || out != nil {
		t.Fatalf("fake credentials: %q, %v, %v; want ErrSCRAMFailed", out, done, err)
	}
	// The same hand-made proof with alice's real SaltedPassword passes, so
	// the refusal above is the known-user check, not a bad proof.
	s = NewSCRAMServer(f.SCRAM)
	s.nonce = fixedNonce("SN")
	if sf, _, err = s.Step([]byte("n,,n=alice,r=abc")); err != nil {
		t.Fatal(err)
	}
	_, _, sp, _ = f.SCRAM("alice")
	auth = []byte("n=alice,r=abc," + string(sf) + "," + cfw)
	mac = hmac.New(sha512.New, sp)
	mac.Write([]byte("Client Key"))
	ck = mac.Sum(nil)
	sk = sha512.Sum512(ck)
	mac = hmac.New(sha512.New, sk[:])
	mac.Write(auth)
	proof = mac.Sum(nil)
	for i := range proof {
		proof[i] ^= ck[i]
	}
	if _, done, err := s.Step([]byte(cfw + ",p=" + base64.StdEncoding.EncodeToString(proof))); err != nil || !done {
		t.Fatalf("hand-made proof for alice: %v, done=%v", err, done)
	}
}

func TestSCRAMMalformedClientFirst(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "pw"})
	for _, c := range []struct{ name, msg string }{
		{"empty", ""},
		{"short", "n,"},
		{"channel binding p=", "p=tls-unique,,n=alice,r=abc"},
		{"bad cbind flag", "x,,n=alice,r=abc"},
		{"authzid a= refused", "n,a=alice,n=alice,r=abc"},
		{"no gs2 header", "n=alice,r=abc"},
		{"reserved m=", "n,,m=ext,n=alice,r=abc"},
		{"missing nonce", "n,,n=alice"},
		{"empty nonce", "n,,n=alice,r="},
		{"nonce with space", "n,,n=alice,r=ab c"},
		{"nonce with DEL", "n,,n=alice,r=ab\x7f"},
		{"nonce with NUL", "n,,n=alice,r=ab\x00"},
		{"nonce high byte", "n,,n=alice,r=ab\xc3\xa9"},
		{"order swapped", "n,,r=abc,n=alice"},
		{"empty user", "n,,n=,r=abc"},
		{"escape =41", "n,,n=al=41ice,r=abc"},
		{"escape lower =2c", "n,,n=al=2cice,r=abc"},
		{"escape truncated", "n,,n=alice=2,r=abc"},
		{"escape bare =", "n,,n=alice=,r=abc"},
		{"user NUL", "n,,n=al\x00ice,r=abc"},
		{"user bad UTF-8", "n,,n=al\xffice,r=abc"},
		{"empty extension", "n,,n=alice,r=abc,"},
		{"bad extension", "n,,n=alice,r=abc,1=x"},
		{"extension m=", "n,,n=alice,r=abc,m=x"},
		{"over 4 KiB", "n,,n=alice,r=" + strings.Repeat("a", 4096)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewSCRAMServer(f.SCRAM)
			out, done, err := s.Step([]byte(c.msg))
			if !errors.Is(err, ErrSCRAMMalformed) || done || out != nil {
				t.Fatalf("Step(%.40q) = %q, %v, %v; want ErrSCRAMMalformed", c.msg, out, done, err)
			}
			if _, _, err := s.Step([]byte("n,,n=alice,r=abc")); !errors.Is(err, ErrSCRAMFailed) {
				t.Errorf("Step after malformed: %v, want ErrSCRAMFailed", err)
			}
		})
	}
	// Accepted variants, for contrast.
	for _, msg := range []string{"n,,n=alice,r=abc", "y,,n=alice,r=abc", "n,,n=alice,r=abc,x=ignored", "n,,n=a=2Cb=3D,r=!~+/"} {
		if _, _, err := NewSCRAMServer(f.SCRAM).Step([]byte(msg)); err != nil {
			t.Errorf("Step(%q): %v", msg, err)
		}
	}
}

func TestSCRAMMalformedClientFinal(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "pw"})
	const sn = "SERVERNONCE"
	// A valid client-final for comparison, computed by the real client.
	start := func(t *testing.T) (*SCRAMServer, string) {
		t.Helper()
		s := NewSCRAMServer(f.SCRAM)
		s.nonce = fixedNonce(sn)
		c := NewSCRAMClient("alice", "pw")
		c.nonce = fixedNonce("abc")
		sf, _, err := s.Step(c.First())
		if err != nil {
			t.Fatal(err)
		}
		cf, err := c.Step(sf)
		if err != nil {
			t.Fatal(err)
		}
		return s, string(cf)
	}
	_, valid := start(t)
	proof := valid[strings.LastIndex(valid, ",p=")+3:]
	for _, c := range []struct{ name, msg string }{
		{"empty", ""},
		{"missing c=", "r=abc" + sn + ",p=" + proof},
		{"c= not base64", "c=biws!,r=abc" + sn + ",p=" + proof},
		{"c= of y,, for n,,", "c=eSws,r=abc" + sn + ",p=" + proof},
		{"c= with channel data", "c=" + base64.StdEncoding.EncodeToString([]byte("n,,x")) + ",r=abc" + sn + ",p=" + proof},
		{"r= client nonce only", "c=biws,r=abc,p=" + proof},
		{"r= tampered", "c=biws,r=abd" + sn + ",p=" + proof},
		{"missing r=", "c=biws,p=" + proof},
		{"missing p=", "c=biws,r=abc" + sn},
		{"p= not last", "c=biws,r=abc" + sn + ",p=" + proof + ",x=1"},
		{"p= not base64", "c=biws,r=abc" + sn + ",p=" + strings.Repeat("!", 88)},
		{"p= short", "c=biws,r=abc" + sn + ",p=" + proof[:84]},
		{"p= empty", "c=biws,r=abc" + sn + ",p="},
		{"p= too long", "c=biws,r=abc" + sn + ",p=" + proof + "AAAA"},
		{"bad extension", "c=biws,r=abc" + sn + ",1=x,p=" + proof},
		{"over 4 KiB", "c=biws,r=abc" + sn + ",x=" + strings.Repeat("a", 4096) + ",p=" + proof},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := start(t)
			out, done, err := s.Step([]byte(c.msg))
			if !errors.Is(err, ErrSCRAMMalformed) || done || out != nil {
				t.Fatalf("Step(%.60q) = %q, %v, %v; want ErrSCRAMMalformed", c.msg, out, done, err)
			}
			if _, _, err := s.Step([]byte(valid)); !errors.Is(err, ErrSCRAMFailed) {
				t.Errorf("Step after malformed: %v, want ErrSCRAMFailed", err)
			}
		})
	}
	// The valid one passes, and an extension before p= (ignored, but part of
	// the AuthMessage) turns it into a failed proof, not a malformed message.
	s, _ := start(t)
	if _, done, err := s.Step([]byte(valid)); err != nil || !done {
		t.Fatalf("valid client-final: %v, done=%v", err, done)
	}
	s, _ = start(t)
	withExt := strings.Replace(valid, ",p=", ",x=1,p=", 1)
	if _, _, err := s.Step([]byte(withExt)); !errors.Is(err, ErrSCRAMFailed) {
		t.Errorf("client-final with an extension the proof does not cover: %v, want ErrSCRAMFailed", err)
	}
}

func TestSCRAMClientChecks(t *testing.T) {
	f := scramFile(t, 101, map[string]string{"alice": "pw"})
	const salt = "dGlueW1xLXNhbHQh"
	newClient := func() *SCRAMClient {
		c := NewSCRAMClient("alice", "pw")
		c.nonce = fixedNonce("abc")
		c.First()
		return c
	}
	if _, err := NewSCRAMClient("a", "b").Step([]byte("r=x,s=" + salt + ",i=101")); !errors.Is(err, ErrSCRAMFailed) {
		t.Errorf("Step before First: %v, want ErrSCRAMFailed", err)
	}
	for _, c := range []struct {
		name, sf string
		want     error
	}{
		{"nonce not extended", "r=abc,s=" + salt + ",i=101", ErrSCRAMMalformed},
		{"nonce replaced", "r=xyzSN,s=" + salt + ",i=101", ErrSCRAMMalformed},
		{"missing s=", "r=abcSN,i=101", ErrSCRAMMalformed},
		{"salt not base64", "r=abcSN,s=!!!!,i=101", ErrSCRAMMalformed},
		{"missing i=", "r=abcSN,s=" + salt, ErrSCRAMMalformed},
		{"i= not a number", "r=abcSN,s=" + salt + ",i=1x1", ErrSCRAMMalformed},
		{"i= leading zero", "r=abcSN,s=" + salt + ",i=0101", ErrSCRAMMalformed},
		{"reserved m=", "m=x,r=abcSN,s=" + salt + ",i=101", ErrSCRAMMalformed},
		{"over 4 KiB", "r=abcSN,s=" + salt + ",i=101,x=" + strings.Repeat("a", 4096), ErrSCRAMMalformed},
		{"i=100 below Mosquitto's default", "r=abcSN,s=" + salt + ",i=100", ErrSCRAMFailed},
		{"i= above 10M", "r=abcSN,s=" + salt + ",i=10000001", ErrSCRAMFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := newClient()
			if out, err := cl.Step([]byte(c.sf)); !errors.Is(err, c.want) || out != nil {
				t.Fatalf("Step(%.40q) = %q, %v; want %v", c.sf, out, err, c.want)
			}
			if _, err := cl.Step([]byte("r=abcSN,s=" + salt + ",i=101")); !errors.Is(err, ErrSCRAMFailed) {
				t.Errorf("Step after an error: %v, want ErrSCRAMFailed", err)
			}
		})
	}
	if _, err := newClient().Step([]byte("r=abcSN,s=" + salt + ",i=101,x=ignored")); err != nil {
		t.Errorf("server-first with an extension at i=101: %v", err)
	}

	// Server-final checks, against a real server.
	final := func(t *testing.T) (*SCRAMClient, []byte) {
		t.Helper()
		c := NewSCRAMClient("alice", "pw")
		s := NewSCRAMServer(f.SCRAM)
		sf, _, err := s.Step(c.First())
		if err != nil {
			t.Fatal(err)
		}
		cf, err := c.Step(sf)
		if err != nil {
			t.Fatal(err)
		}
		sfin, done, err := s.Step(cf)
		if err != nil || !done {
			t.Fatalf("server-final: %v, done=%v", err, done)
		}
		return c, sfin
	}
	c, sfin := final(t)
	if err := c.Verify(sfin); err != nil {
		t.Fatalf("Verify(real server-final): %v", err)
	}
	if err := c.Verify(sfin); !errors.Is(err, ErrSCRAMFailed) {
		t.Errorf("second Verify: %v, want ErrSCRAMFailed", err)
	}
	tampered := func(sfin []byte) []byte {
		sig, err := base64.StdEncoding.DecodeString(string(sfin[2:]))
		if err != nil {
			t.Fatal(err)
		}
		sig[17] ^= 1
		return []byte("v=" + base64.StdEncoding.EncodeToString(sig))
	}
	for _, c := range []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"tampered signature", tampered, ErrSCRAMFailed},
		{"truncated signature", func(b []byte) []byte { return append([]byte("v="), b[2:len(b)-4]...) }, ErrSCRAMFailed},
		{"server error e=", func([]byte) []byte { return []byte("e=invalid-proof") }, ErrSCRAMFailed},
		{"not base64", func(b []byte) []byte { return append([]byte("v=!"), b[3:]...) }, ErrSCRAMMalformed},
		{"no v=", func(b []byte) []byte { return b[2:] }, ErrSCRAMMalformed},
		{"empty", func([]byte) []byte { return nil }, ErrSCRAMMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, sfin := final(t)
			if err := cl.Verify(c.mod(sfin)); !errors.Is(err, c.want) {
				t.Errorf("Verify: %v, want %v", err, c.want)
			}
			if err := cl.Verify(sfin); !errors.Is(err, ErrSCRAMFailed) {
				t.Errorf("Verify after an error: %v, want ErrSCRAMFailed", err)
			}
		})
	}
}

// scramVector was computed with Python 3.11's standard library alone
// (hashlib.pbkdf2_hmac, hmac, base64), independently of this package:
//
//	user="bob,=1"; pw="pencil ü".encode(); salt=b"tinymq-salt!"; it=101
//	cn="fyko+d2lbbFgONRv9qkxdawL"; sn=base64.b64encode(bytes(range(24))).decode()
//	sp=hashlib.pbkdf2_hmac('sha512',pw,salt,it,64)       # the $7$ hash
//	bare="n="+user.replace("=","=3D").replace(",","=2C")+",r="+cn
//	sf="r="+cn+sn+",s="+base64.b64encode(salt).decode()+",i=%d"%it
//	cfw="c="+base64.b64encode(b"n,,").decode()+",r="+cn+sn
//	am=(bare+","+sf+","+cfw).encode()
//	ck=HM(sp,b"Client Key"); proof=xor(ck, HM(H(ck),am))  # HM = HMAC-SHA512, H = SHA-512
//	sfinal="v="+b64(HM(HM(sp,b"Server Key"),am))
//
// The same script reproduces the SCRAM-SHA-512 vector that Apache Qpid
// Proton and others use (user "user", password "pencil", i=4096).
var scramVector = struct {
	line, user, password, cnonce, snonce               string
	clientFirst, serverFirst, clientFinal, serverFinal string
}{
	line:        "bob,=1:$7$101$dGlueW1xLXNhbHQh$aY2qAmlo6k+JgN2R44NhjpF5AW0LUmANiVxAYSqoQH1bo1VDHxiu1PQ9MpGrBiYqtYcfidDXlBeufdDKE1+3fA==",
	user:        "bob,=1",
	password:    "pencil ü",
	cnonce:      "fyko+d2lbbFgONRv9qkxdawL",
	snonce:      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
	clientFirst: "n,,n=bob=2C=3D1,r=fyko+d2lbbFgONRv9qkxdawL",
	serverFirst: "r=fyko+d2lbbFgONRv9qkxdawLAAECAwQFBgcICQoLDA0ODxAREhMUFRYX,s=dGlueW1xLXNhbHQh,i=101",
	clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawLAAECAwQFBgcICQoLDA0ODxAREhMUFRYX,p=6L7udumNmEhTjB4W39bsy0QlDeq1D6DvLCz6keDRSaPS4mdM27tkshCdoOqpUlgaqMA6BU9SrFTBA6jq4t2jSA==",
	serverFinal: "v=h7C30zhQUtu07tv8kHIUs2G1YecS3eeMomUwZ3Ww5bK40lo7kIVvGiIU93UXy5ubjr47SAv75HwgImTABFvqkA==",
}

// TestSCRAMVector checks every message of both sides against the pasted
// Python vector, so that client and server cannot agree on the same
// mistake.
func TestSCRAMVector(t *testing.T) {
	v := scramVector
	f, err := ParsePasswordFile("vector", []byte(v.line+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkSCRAMVector(t, f, v.user, v.password, v.cnonce, v.snonce, v.clientFirst, v.serverFirst, v.clientFinal, v.serverFinal)
}

func checkSCRAMVector(t *testing.T, f *PasswordFile, user, password, cnonce, snonce, wantCF, wantSF, wantCFin, wantSFin string) {
	t.Helper()
	c := NewSCRAMClient(user, password)
	c.nonce = fixedNonce(cnonce)
	s := NewSCRAMServer(f.SCRAM)
	s.nonce = fixedNonce(snonce)
	cf := c.First()
	if string(cf) != wantCF {
		t.Fatalf("client-first\n got %s\nwant %s", cf, wantCF)
	}
	sf, _, err := s.Step([]byte(wantCF))
	if err != nil || string(sf) != wantSF {
		t.Fatalf("server-first (%v)\n got %s\nwant %s", err, sf, wantSF)
	}
	cfin, err := c.Step([]byte(wantSF))
	if err != nil || string(cfin) != wantCFin {
		t.Fatalf("client-final (%v)\n got %s\nwant %s", err, cfin, wantCFin)
	}
	sfin, done, err := s.Step([]byte(wantCFin))
	if err != nil || !done || string(sfin) != wantSFin {
		t.Fatalf("server-final (%v, done=%v)\n got %s\nwant %s", err, done, sfin, wantSFin)
	}
	if err := c.Verify([]byte(wantSFin)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if s.Username() != user {
		t.Fatalf("Username() = %q, want %q", s.Username(), user)
	}
}

// scramPython computes a whole exchange with Python's standard library
// from hex arguments: user, password, salt, iterations, cnonce, snonce.
const scramPython = `
import sys, hashlib, hmac, base64
u, pw, salt = (bytes.fromhex(a) for a in sys.argv[1:4])
it = int(sys.argv[4]); cn, sn = sys.argv[5], sys.argv[6]
b64 = lambda b: base64.b64encode(b).decode()
HM = lambda k, m: hmac.new(k, m, hashlib.sha512).digest()
sp = hashlib.pbkdf2_hmac("sha512", pw, salt, it, 64)
user = u.decode()
bare = "n=" + user.replace("=", "=3D").replace(",", "=2C") + ",r=" + cn
sf = "r=" + cn + sn + ",s=" + b64(salt) + ",i=%d" % it
cfw = "c=" + b64(b"n,,") + ",r=" + cn + sn
am = (bare + "," + sf + "," + cfw).encode()
ck = HM(sp, b"Client Key")
proof = bytes(a ^ b for a, b in zip(ck, HM(hashlib.sha512(ck).digest(), am)))
print(user + ":$7$%d$%s$%s" % (it, b64(salt), b64(sp)))
print("n,," + bare)
print(sf)
print(cfw + ",p=" + b64(proof))
print("v=" + b64(HM(HM(sp, b"Server Key"), am)))
`

// TestSCRAMPythonInterop repeats TestSCRAMVector with fresh random
// parameters, computed by /usr/bin/python3 at run time (standard library
// only). Skipped when python3 is missing unless TINYMQ_REQUIRE_INTEROP=1.
func TestSCRAMPythonInterop(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s not found and TINYMQ_REQUIRE_INTEROP=1", py)
		}
		t.Skipf("%s not installed; skipping the Python SCRAM cross-check (TestSCRAMVector still runs)", py)
	}
	for i, iter := range []int{101, 1000} {
		salt := make([]byte, SaltLen)
		pw := make([]byte, 9)
		rand.Read(salt)
		rand.Read(pw)
		password := hex.EncodeToString(pw) + "é,="
		user := fmt.Sprintf("us=er,%d", i)
		cn, sn := randomNonce(), randomNonce()
		out, err := exec.Command(py, "-c", scramPython, hex.EncodeToString([]byte(user)), hex.EncodeToString([]byte(password)),
			hex.EncodeToString(salt), fmt.Sprint(iter), cn, sn).Output()
		if err != nil {
			t.Fatalf("python3: %v", err)
		}
		l := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(l) != 5 {
			t.Fatalf("python3 printed %q", out)
		}
		f, err := ParsePasswordFile("python", []byte(l[0]+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		// Python's PBKDF2 is our HashPasswordPBKDF2's too.
		if !f.Verify(user, []byte(password)) {
			t.Fatalf("Python's $7$ line %q does not verify", l[0])
		}
		checkSCRAMVector(t, f, user, password, cn, sn, l[1], l[2], l[3], l[4])
	}
}

// FuzzSCRAMServer feeds the server any sequence of three messages. It must
// never panic; an error ends the exchange for good (nil out, ErrSCRAMFailed
// after); a server-first has the right shape; and only the seeded right
// password of alice can ever complete (the fuzzer cannot forge a proof).
func FuzzSCRAMServer(f *testing.F) {
	pf := scramFile(f, 101, map[string]string{"alice": "pw"})
	v := scramVector
	vf, err := ParsePasswordFile("vector", []byte(v.line+"\n"))
	if err != nil {
		f.Fatal(err)
	}
	lookup := func(u string) ([]byte, int, []byte, bool) {
		if u == v.user {
			return vf.SCRAM(u)
		}
		return pf.SCRAM(u)
	}
	f.Add([]byte(v.clientFirst), []byte(v.clientFinal), []byte(v.clientFinal))
	f.Add([]byte("y,,n=alice,r=abc,x=1"), []byte("c=eSws,r=abc"+v.snonce+",x=1,p="+strings.Repeat("A", 86)+"=="), []byte{})
	f.Add([]byte("n,,n=mallory,r=abc"), []byte("c=biws,r=abc"+v.snonce+",p="), []byte("n,,n=alice,r=abc"))
	f.Add([]byte("p=tls-unique,,n=a=2C,r=abc"), []byte("n,a=x,n=a,r=b"), []byte(",,,="))
	f.Fuzz(func(t *testing.T, m1, m2, m3 []byte) {
		s := NewSCRAMServer(lookup)
		s.nonce = fixedNonce(v.snonce)
		ended := false
		for i, m := range [][]byte{m1, m2, m3} {
			out, done, err := s.Step(m)
			switch {
			case ended && (!errors.Is(err, ErrSCRAMFailed) || out != nil || done):
				t.Fatalf("step %d after the end: %q, %v, %v", i, out, done, err)
			case err != nil && (out != nil || done):
				t.Fatalf("step %d: error %v with out %q, done %v", i, err, out, done)
			case err != nil && !errors.Is(err, ErrSCRAMFailed) && !errors.Is(err, ErrSCRAMMalformed):
				t.Fatalf("step %d: unexpected error %v", i, err)
			case err == nil && i == 0 && !serverFirstOK(out, m, v.snonce):
				t.Fatalf("server-first %q for %q has the wrong shape", out, m)
			case done && (i != 1 || s.Username() != v.user):
				t.Fatalf("step %d completed for %q", i, s.Username())
			}
			if err != nil || done {
				ended = true
			}
		}
	})
}

// anyServerFirst is any server-first: r=NONCE,s=SALT,i=ITER.
var anyServerFirst = regexp.MustCompile(`^r=[!-+\--~]+,s=[A-Za-z0-9+/]+=*,i=[1-9][0-9]*$`)

// serverFirstOK reports whether out is a well-formed server-first answering
// clientFirst: its nonce is the client's followed by snonce.
func serverFirstOK(out, clientFirst []byte, snonce string) bool {
	if !anyServerFirst.Match(out) {
		return false
	}
	rnd := out[2:bytes.IndexByte(out, ',')]
	cn, ok := bytes.CutSuffix(rnd, []byte(snonce))
	return ok && len(cn) > 0 && bytes.Contains(append(bytes.Clone(clientFirst), ','), append(append([]byte(",r="), cn...), ','))
}

var sinkBytes []byte

// BenchmarkSCRAMServer is one whole server exchange (client-first and
// client-final for a known user, with a fixed server nonce so that the
// client messages can be prepared once): what a SCRAM login costs the
// broker.
func BenchmarkSCRAMServer(b *testing.B) {
	f := scramFile(b, DefaultIterations, map[string]string{"alice": "s3cret"})
	c := NewSCRAMClient("alice", "s3cret")
	s := NewSCRAMServer(f.SCRAM)
	s.nonce = fixedNonce("SERVERNONCE")
	cf := c.First()
	sf, _, err := s.Step(cf)
	if err != nil {
		b.Fatal(err)
	}
	cfin, err := c.Step(sf)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(cf) + len(cfin)))
	for b.Loop() {
		s := NewSCRAMServer(f.SCRAM)
		s.nonce = fixedNonce("SERVERNONCE")
		if _, _, err := s.Step(cf); err != nil {
			b.Fatal(err)
		}
		out, done, err := s.Step(cfin)
		if err != nil || !done {
			b.Fatal(err)
		}
		sinkBytes = out
	}
}

// BenchmarkSCRAMClient is the client's side at Mosquitto's default 101
// iterations: dominated by PBKDF2, the part the broker never runs.
func BenchmarkSCRAMClient(b *testing.B) {
	sf := []byte("r=abcSERVERNONCE,s=dGlueW1xLXNhbHQh,i=101")
	b.ReportAllocs()
	for b.Loop() {
		c := NewSCRAMClient("alice", "s3cret")
		c.nonce = fixedNonce("abc")
		c.First()
		out, err := c.Step(sf)
		if err != nil {
			b.Fatal(err)
		}
		sinkBytes = out
	}
}
