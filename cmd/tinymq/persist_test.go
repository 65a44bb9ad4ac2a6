package main

import (
	"os"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine/store"
)

// TestMain points every broker the tests run (in process, or this binary
// re-executed as main) at a data directory of its own, so that no test
// leaves ./data behind in the package directory.
func TestMain(m *testing.M) {
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
