package main

import "testing"

func TestParseConnRate(t *testing.T) {
	cfg, err := parse([]string{"--max-conn-burst", "40"}, env(map[string]string{"TINYMQ_MAX_CONN_RATE": "2.5"}))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.opts; o.MaxConnRate != 2.5 || o.MaxConnBurst != 40 {
		t.Fatalf("rate %v burst %d; want 2.5 and 40", o.MaxConnRate, o.MaxConnBurst)
	}
	if cfg, _ := parse(nil, env(nil)); cfg.opts.MaxConnRate != 0 || cfg.opts.MaxConnBurst != 0 {
		t.Fatalf("default rate %v burst %d; want off", cfg.opts.MaxConnRate, cfg.opts.MaxConnBurst)
	}
}
