package main

// tinymq passwd: mosquitto_passwd 2.0 for TinyMQ's (and Mosquitto's)
// password files. Same options, messages and exit codes; two differences,
// both safer: the file is replaced atomically (a temporary file in the
// same directory, then rename) rather than rewritten in place, and -U
// leaves lines that already hold a hash alone instead of hashing the hash.
// Comment and blank lines are kept (mosquitto_passwd 2.0.11 calls them
// corrupt; the broker skips them).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/tinymq/tinymq/engine/auth"
)

const passwdUsage = `tinymq passwd manages password files for TinyMQ and Mosquitto.

Usage: tinymq passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username
       tinymq passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password
       tinymq passwd -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
      Mosquitto 1.6 and earlier defaulted to sha512.
 -I : number of PBKDF2 iterations (default 101).
 -U : update a plain text password file to use hashed passwords.

Without -b the password is read twice from the terminal, without echo, or
as two lines from standard input when it is not a terminal.
See docs/security.md.

`

// passwdMain runs "tinymq passwd ARGS" and returns the exit status.
func passwdMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	errf := func(format string, a ...any) int {
		fmt.Fprintf(stderr, format+"\n", a...)
		return 1
	}
	if len(args) == 0 {
		fmt.Fprint(stdout, passwdUsage)
		return 1
	}
	var batch, create, del, upgrade, sha512Only bool
	iterations := auth.DefaultIterations
	idx := 0
flags:
	for ; idx < len(args); idx++ {
		switch args[idx] {
		case "-b":
			batch = true
		case "-c":
			create = true
		case "-D":
			del = true
		case "-U":
			upgrade = true
		case "-H":
			if idx+1 == len(args) {
				return errf("Error: -H argument given but not enough other arguments.")
			}
			switch args[idx+1] {
			case "sha512":
				sha512Only = true
			case "sha512-pbkdf2":
				sha512Only = false
			default:
				return errf("Error: Unknown hash type '%s'", args[idx+1])
			}
			idx++
		case "-I":
			if idx+1 == len(args) {
				return errf("Error: -I argument given but not enough other arguments.")
			}
			n, err := strconv.Atoi(args[idx+1])
			if err != nil || n < 1 {
				return errf("Error: Number of iterations must be > 0.")
			}
			iterations = n
			idx++
		default:
			break flags
		}
	}
	switch {
	case create && del:
		return errf("Error: -c and -D cannot be used together.")
	case create && upgrade:
		return errf("Error: -c and -U cannot be used together.")
	case del && upgrade:
		return errf("Error: -D and -U cannot be used together.")
	case del && batch:
		return errf("Error: -b and -D cannot be used together.")
	}
	rest := args[idx:]
	var file, user, password string
	havePassword := false
	switch {
	case create && batch:
		if len(rest) < 3 {
			return errf("Error: -c argument given but password file, username, or password missing.")
		}
		file, user, password, havePassword = rest[0], rest[1], rest[2], true
	case create:
		if len(rest) < 2 {
			return errf("Error: -c argument given but password file or username missing.")
		}
		file, user = rest[0], rest[1]
	case del:
		if len(rest) < 2 {
			return errf("Error: -D argument given but password file or username missing.")
		}
		file, user = rest[0], rest[1]
	case upgrade:
		if len(rest) != 1 {
			return errf("Error: -U argument given but password file missing.")
		}
		file = rest[0]
	case batch && len(rest) == 3:
		file, user, password, havePassword = rest[0], rest[1], rest[2], true
	case !batch && len(rest) == 2:
		file, user = rest[0], rest[1]
	default:
		fmt.Fprint(stdout, passwdUsage)
		return 1
	}
	if !upgrade {
		if msg := checkUsername(user); msg != "" {
			return errf("%s", msg)
		}
	}
	if len(password) > 65535 {
		return errf("Error: Password must be less than 65536 characters long.")
	}
	hash := func(pw string) (string, error) {
		if sha512Only {
			return auth.HashPasswordSHA512([]byte(pw))
		}
		return auth.HashPasswordPBKDF2([]byte(pw), iterations)
	}
	if resolved, err := filepath.EvalSymlinks(file); err == nil {
		file = resolved // replace the file a symlink points to, not the link
	}

	if create {
		if !havePassword {
			pw, rc := readPassword(stdin, stdout, stderr)
			if rc != 0 {
				return rc
			}
			password = pw
		}
		h, err := hash(password)
		if err != nil {
			return errf("Error: Unable to hash password.")
		}
		mode := os.FileMode(0o600)
		if st, err := os.Stat(file); err == nil {
			mode = st.Mode().Perm()
		}
		if err := writeFileAtomic(file, []byte(user+":"+h+"\n"), mode); err != nil {
			return errf("Error: Unable to open file %s for writing. %s.", file, errnoText(err))
		}
		return 0
	}

	data, err := os.ReadFile(file)
	if err != nil {
		return errf("Error: Unable to open password file %s. %s.", file, errnoText(err))
	}
	st, err := os.Stat(file)
	if err != nil {
		return errf("Error: Unable to open password file %s. %s.", file, errnoText(err))
	}
	lines := strings.SplitAfter(string(data), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var out strings.Builder
	found := false
	if !del && !upgrade && !havePassword {
		pw, rc := readPassword(stdin, stdout, stderr)
		if rc != 0 {
			return rc
		}
		password = pw
	}
	for n, line := range lines {
		body := strings.TrimRight(line, "\r\n")
		if s := strings.TrimSpace(body); s == "" || s[0] == '#' {
			out.WriteString(line)
			continue
		}
		u, pw, ok := strings.Cut(body, ":")
		u, pw = strings.TrimSpace(u), strings.TrimSpace(pw)
		if !ok || u == "" || pw == "" {
			return errf("Error: Corrupt password file at line %d.", n+1)
		}
		switch {
		case upgrade:
			if auth.IsHash(pw) {
				out.WriteString(line)
				continue
			}
			h, err := hash(pw)
			if err != nil {
				return errf("Error: Unable to hash password.")
			}
			out.WriteString(u + ":" + h + "\n")
		case u != user:
			out.WriteString(line)
		case del:
			found = true // dropped
		default:
			found = true
			h, err := hash(password)
			if err != nil {
				return errf("Error: Unable to hash password.")
			}
			out.WriteString(u + ":" + h + "\n")
		}
	}
	if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
		out.WriteString("\n") // a last line without one, kept verbatim
	}
	switch {
	case del && !found:
		fmt.Fprintf(stderr, "Warning: User %s not found in password file.\n", user)
		return 1
	case !del && !upgrade && !found:
		h, err := hash(password)
		if err != nil {
			return errf("Error: Unable to hash password.")
		}
		out.WriteString(user + ":" + h + "\n")
	}
	if err := writeFileAtomic(file, []byte(out.String()), st.Mode().Perm()); err != nil {
		return errf("Error occurred updating password file. %s.", errnoText(err))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		_ = os.Chown(file, int(sys.Uid), int(sys.Gid)) // keep the owner (e.g. mosquitto); best effort
	}
	return 0
}

// checkUsername is mosquitto_passwd's is_username_valid.
func checkUsername(u string) string {
	if len(u) > 65535 {
		return "Error: Username must be less than 65536 characters long."
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x20 || u[i] == 0x7f {
			return "Error: Username must not contain control characters."
		}
	}
	if strings.Contains(u, ":") {
		return "Error: Username must not contain the ':' character."
	}
	return ""
}

// readPassword asks for the password twice, as mosquitto_passwd does:
// without echo on a terminal, else as two lines of stdin. The exit status
// is 1 for an empty password, 2 when the two differ.
func readPassword(stdin io.Reader, stdout, stderr io.Writer) (string, int) {
	var next func() (string, bool)
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		next = func() (string, bool) {
			b, err := term.ReadPassword(int(f.Fd()))
			return string(b), err == nil
		}
	} else {
		r := bufio.NewReader(stdin)
		next = func() (string, bool) {
			s, err := r.ReadString('\n')
			if err != nil && (s == "" || !errors.Is(err, io.EOF)) {
				return "", false
			}
			return strings.TrimRight(s, "\r\n"), true
		}
	}
	var pw [2]string
	for i, prompt := range []string{"Password: ", "Reenter password: "} {
		fmt.Fprint(stdout, prompt)
		s, ok := next()
		if !ok || s == "" {
			fmt.Fprintln(stderr, "Error: Empty password.")
			return "", 1
		}
		fmt.Fprintln(stdout)
		pw[i] = s
	}
	if pw[0] != pw[1] {
		fmt.Fprintln(stderr, "Error: Passwords do not match.")
		return "", 2
	}
	return pw[0], 0
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// errnoText is strerror's wording: "No such file or directory".
func errnoText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	s := err.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}
