package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine/store"
)

// TestMain runs the brokers these tests start (in process, or this binary
// re-executed as main) in memory, since several may run at once and the
// data directory takes one; and points them at a temporary data directory
// anyway, so that none leaves ./data behind in the package directory.
// Persistence itself is tested in engine (persist_*_test.go), the binary
// included.
func TestMain(m *testing.M) {
	if os.Getenv("TINYMQ_PERSISTENCE") == "" {
		os.Setenv("TINYMQ_PERSISTENCE", "false")
	}
	if os.Getenv("TINYMQ_DATA_DIR") == "" {
		dir, err := os.MkdirTemp("", "tinymq-cmd-test-")
		if err != nil {
			panic(err)
		}
		os.Setenv("TINYMQ_DATA_DIR", dir)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// The durability flags: defaults (persistence on, interval, 1 s, ./data)
// and each one set.
func TestPersistenceFlags(t *testing.T) {
	cfg, err := parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.opts; !o.Persistence || o.Fsync != store.FsyncInterval || o.FsyncInterval != time.Second || o.DataDir != "./data" {
		t.Fatalf("defaults: persistence %v fsync %v interval %v dir %q", o.Persistence, o.Fsync, o.FsyncInterval, o.DataDir)
	}
	cfg, err = parse([]string{"--persistence=false", "--fsync", "always", "--fsync-interval", "250ms", "--data-dir", "/tmp/x"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.opts; o.Persistence || o.Fsync != store.FsyncAlways || o.FsyncInterval != 250*time.Millisecond || o.DataDir != "/tmp/x" {
		t.Fatalf("set: persistence %v fsync %v interval %v dir %q", o.Persistence, o.Fsync, o.FsyncInterval, o.DataDir)
	}
	cfg, err = parse(nil, env(map[string]string{"TINYMQ_FSYNC": "none", "TINYMQ_PERSISTENCE": "false"}))
	if err != nil || cfg.opts.Fsync != store.FsyncNone || cfg.opts.Persistence {
		t.Fatalf("env: %v %+v", err, cfg)
	}
	for _, args := range [][]string{{"--fsync", "sometimes"}, {"--fsync-interval", "0s"}, {"--persistence", "maybe"}} {
		if _, err := parse(args, env(nil)); err == nil {
			t.Fatalf("parse(%v) accepted", args)
		}
	}
}

// --check-config never touches the data directory: it is not created,
// and one in use by a running broker does not fail the check.
func TestCheckConfigLeavesDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var out bytes.Buffer
	if err := run([]string{"--check-config", "--mqtt-addr", "127.0.0.1:0", "--persistence=true", "--data-dir", dir}, &out, nil); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("--check-config created %s (%v)", dir, err)
	}
}
