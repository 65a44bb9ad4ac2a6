package main

// tinymq store: the running broker's store operations, through its HTTP
// API (the broker holds the data directory's lock, so a second process
// cannot open it): a checkpoint (a consistent copy, written by the broker
// under its --checkpoint-dir) and a compaction. See docs/durability.md
// "Backup and restore".

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const storeUsage = `tinymq store runs store operations on a running broker through its HTTP API.

Usage: tinymq store checkpoint [--api URL] [NAME]
       tinymq store compact [--api URL]

 checkpoint : the broker writes a consistent copy of its data directory into
              --checkpoint-dir/NAME (default NAME: checkpoint-<UTC time>);
              start a broker on it with tinymq --data-dir DIR.
 compact    : the broker compacts its store (drops deleted records).
 --api URL  : the broker's HTTP address (default http://127.0.0.1:7800,
              or TINYMQ_API).
 --timeout D: how long to wait for the answer (default 10m).

TINYMQ_API_KEY, when set, is sent as the bearer token; TINYMQ_API_USER
(user:password) as Basic credentials otherwise.
See docs/durability.md.
`

// storeMain runs "tinymq store ARGS" and returns the exit status.
func storeMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "checkpoint" && args[0] != "compact") {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	op := args[0]
	fs := flag.NewFlagSet("tinymq store "+op, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	api := fs.String("api", "", "")
	timeout := fs.Duration("timeout", 10*time.Minute, "")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "tinymq store %s: %v\n\n%s", op, err, storeUsage)
		return 2
	}
	if *api == "" {
		*api = getenv("TINYMQ_API")
	}
	if *api == "" {
		*api = "http://127.0.0.1:7800"
	}
	var body string
	switch {
	case op == "checkpoint" && fs.NArg() == 1:
		b, _ := json.Marshal(struct {
			Name string `json:"name"`
		}{fs.Arg(0)})
		body = string(b)
	case fs.NArg() == 0:
	default:
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	req, err := http.NewRequest("POST", strings.TrimSuffix(*api, "/")+"/api/v1/store/"+op, strings.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "tinymq store %s: %v\n", op, err)
		return 1
	}
	req.Header.Set("Content-Type", "application/json")
	if key := getenv("TINYMQ_API_KEY"); key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	} else if u := getenv("TINYMQ_API_USER"); u != "" {
		user, pass, _ := strings.Cut(u, ":")
		req.SetBasicAuth(user, pass)
	}
	resp, err := (&http.Client{Timeout: *timeout}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "tinymq store %s: %v\n", op, err)
		return 1
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r struct {
		Dir    string `json:"dir"`
		Bytes  int64  `json:"bytes"`
		TookMS int64  `json:"took_ms"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || resp.StatusCode != http.StatusOK {
		msg := r.Error
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		fmt.Fprintf(stderr, "tinymq store %s: %s: %s\n", op, resp.Status, msg)
		return 1
	}
	if op == "checkpoint" {
		fmt.Fprintf(stdout, "checkpoint written: %s (%d bytes, %d ms)\n", r.Dir, r.Bytes, r.TookMS)
	} else {
		fmt.Fprintf(stdout, "store compacted: data directory %d bytes (%d ms)\n", r.Bytes, r.TookMS)
	}
	return 0
}
