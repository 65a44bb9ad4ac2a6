package main

import (
	"os/exec"
	"testing"
)

// TestShellJoin: the command line in a generated report, run by sh, gives
// back the same arguments (spaces, braces, quotes, empty ones).
func TestShellJoin(t *testing.T) {
	args := []string{"compare", "--duration", "3s", "--broker", "flashmq=env FLASHMQ=/x bench/flashmq.sh {port} {dir}",
		"--mosquitto", "", "--broker", `nats=sh -c "printf 'a b'"`}
	line := shellJoin(args)
	got, err := exec.Command("/bin/sh", "-c", `set -- `+line+`; for a in "$@"; do printf '[%s]\n' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, a := range args {
		want += "[" + a + "]\n"
	}
	if string(got) != want {
		t.Fatalf("%s\ngives\n%s\nwant\n%s", line, got, want)
	}
}
