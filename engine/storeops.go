package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tinymq/tinymq/engine/store"
)

// Store administration: a checkpoint (a consistent copy of the running
// store, docs/durability.md "Backup and restore") and a compaction, from
// the HTTP API (POST /api/v1/store/checkpoint, POST /api/v1/store/compact)
// or any caller of Broker.Checkpoint and Broker.CompactStore.
//
// Both block on I/O for milliseconds to minutes, so the loop never runs
// them. The HTTP request is served the way an HTTP request whose Basic
// credentials go to the worker pool is (authpool.go): the handler starts
// the operation on a goroutine of its own and marks the connection waiting
// (c.authWait), so the request stays in gnet's buffer and the connection
// reads nothing more; the goroutine hands the result back to the
// connection's loop (storeJob.Run), which serves the same request again
// and this time answers it with the result. One operation runs at a time
// (persister.adminBusy; a second gets 409), so this is at most one
// goroutine: one of DESIGN.md's bounded exceptions.
//
// Where a checkpoint goes: the request names a subdirectory of
// Options.CheckpointDir (--checkpoint-dir), never a path, so that whoever
// may call the API cannot make the broker write anywhere else on the
// machine (over another store, into a web root, onto a mount it should not
// fill).

// ErrNoPersistence is Checkpoint's and CompactStore's answer when the
// broker keeps its state in memory only (--persistence=false).
var ErrNoPersistence = errors.New("engine: persistence is off")

// ErrStoreBusy is the answer while another checkpoint or compaction runs.
var ErrStoreBusy = errors.New("engine: a checkpoint or compaction is running")

// CheckpointResult is what a checkpoint wrote.
type CheckpointResult struct {
	Dir   string        // absolute path of the new directory
	Bytes int64         // sizes of its files (tables hard-linked from the data directory share their disk blocks)
	Took  time.Duration // from the call to the synced directory
}

// Checkpoint writes a consistent copy of the store into dir, which must not
// exist or be empty (store.ErrCheckpointExists otherwise). The copy holds
// every record the broker had written before the call: the records the
// loops had not yet submitted are submitted first, and the store's writer
// puts its commit window and queue into pebble before the copy
// (store.Checkpoint). `tinymq --data-dir DIR` starts on it. It blocks on
// I/O: any goroutine but a loop.
func (b *Broker) Checkpoint(dir string) (CheckpointResult, error) {
	p, err := b.adminStart()
	if err != nil {
		return CheckpointResult{}, err
	}
	defer p.adminBusy.Store(false)
	return b.checkpoint(p, dir)
}

func (b *Broker) checkpoint(p *persister, dir string) (CheckpointResult, error) {
	start := time.Now()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return CheckpointResult{}, fmt.Errorf("engine: checkpoint %s: %w", dir, err)
	}
	if _, ok := p.flush(); !ok {
		// The records stay pending on the loops: a copy now would lack them.
		return CheckpointResult{}, fmt.Errorf("engine: checkpoint: %w (the store's writer is behind; try again)", store.ErrQueueFull)
	}
	if err := p.st.Checkpoint(abs); err != nil {
		return CheckpointResult{}, err
	}
	res := CheckpointResult{Dir: abs, Took: time.Since(start)}
	res.Bytes, _ = store.DirBytes(abs)
	b.log.Info("store: checkpoint written", "dir", abs, "bytes", res.Bytes, "took", res.Took.Round(time.Millisecond).String())
	return res, nil
}

// CompactStore writes what the loops and the store's writer hold to pebble
// and compacts the whole key space into the bottom level, dropping deleted
// and overwritten records (store.Compact): the smallest the data directory
// gets for its live state. It returns the directory's size after. Blocks on
// I/O for as long as the rewrite takes: any goroutine but a loop.
func (b *Broker) CompactStore() (int64, error) {
	p, err := b.adminStart()
	if err != nil {
		return 0, err
	}
	defer p.adminBusy.Store(false)
	return b.compact(p)
}

func (b *Broker) compact(p *persister) (int64, error) {
	start := time.Now()
	p.flush() // a refused batch waits on the loops; the rest is compacted
	if err := p.st.Compact(); err != nil {
		return 0, err
	}
	n, _ := store.DirBytes(p.dir) // the live directory: files pebble drops are skipped
	b.log.Info("store: compacted", "dir", p.dir, "bytes", n, "took", time.Since(start).Round(time.Millisecond).String())
	return n, nil
}

// adminStart takes the one-operation-at-a-time flag. Any goroutine.
func (b *Broker) adminStart() (*persister, error) {
	p := b.ps
	if p == nil {
		return nil, ErrNoPersistence
	}
	if p.shut.Load() {
		return nil, store.ErrClosed
	}
	if !p.adminBusy.CompareAndSwap(false, true) {
		return nil, ErrStoreBusy
	}
	return p, nil
}

// storeJob is one store operation an HTTP request waits for. The loop
// fills it and starts run; run fills the result and hands it back (Run).
type storeJob struct {
	c       *conn
	compact bool   // POST /api/v1/store/compact; else a checkpoint into dir
	dir     string // checkpoint target, under Options.CheckpointDir

	done  bool // the result below is in (set on the loop, in Run)
	ckpt  CheckpointResult
	bytes int64 // compaction: the directory's size after
	took  time.Duration
	err   error
}

// run performs the operation and posts the job back to its connection's
// loop. Its own goroutine (one at a time: adminBusy, taken by the loop).
func (j *storeJob) run(b *Broker, p *persister) {
	start := time.Now()
	if j.compact {
		j.bytes, j.err = b.compact(p)
	} else {
		j.ckpt, j.err = b.checkpoint(p, j.dir)
	}
	j.took = time.Since(start)
	p.adminBusy.Store(false)
	if j.err != nil {
		b.log.Warn("store: operation failed", "op", j.op(), "err", j.err.Error())
	}
	if err := j.c.l.el.Execute(context.Background(), j); err != nil {
		return // the engine is stopping: the connection goes with it
	}
}

func (j *storeJob) op() string {
	if j.compact {
		return "compact"
	}
	return "checkpoint"
}

// Run implements gnet.Runnable: the result arrives on the connection's
// loop, which serves the waiting request again (storeOp answers it).
func (j *storeJob) Run(context.Context) error {
	c := j.c
	if !c.open || c.x == nil || c.x.store != j {
		return nil // closed (or timed out) meanwhile; the log has the result
	}
	j.done = true
	c.authWait = false
	c.resume()
	return nil
}

// storeAdmitted is admitted (the API key, when one is set) and, when any
// authentication is configured (an API key, a password file or an
// Authenticator), never an anonymous caller, even with --allow-anonymous:
// these endpoints write to the disk. With no authentication at all they
// are as open as every other endpoint, and write only under
// --checkpoint-dir. It answers 403 itself. Runs on the request's loop.
func (r *httpReq) storeAdmitted() bool {
	if !r.admitted() {
		return false
	}
	b := r.b
	if r.admin || r.hasUser || (b.apiKey == nil && b.authn.Load() == nil) {
		return true
	}
	r.fail(403, "this endpoint needs the API key or a user of the password file")
	return false
}

// maxCheckpointName bounds a checkpoint's name.
const maxCheckpointName = 128

// checkpointName reports whether n may name a checkpoint: 1 to 128 of
// A-Z a-z 0-9 . _ - and not starting with a dot (no "..", no hidden
// directory, no separator: it stays a child of --checkpoint-dir).
func checkpointName(n string) bool {
	if n == "" || len(n) > maxCheckpointName || n[0] == '.' {
		return false
	}
	for i := 0; i < len(n); i++ {
		switch ch := n[i]; {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '.', ch == '_', ch == '-':
		default:
			return false
		}
	}
	return true
}

// storeOp serves POST /api/v1/store/checkpoint (body {"name":"..."} or
// ?name=; none: "checkpoint-" and the UTC time) and POST
// /api/v1/store/compact. The first time the request is served it starts
// the operation and leaves the request buffered (c.authWait); served again
// with the result in, it answers. Runs on the request's loop; never
// blocks.
func (r *httpReq) storeOp(compact bool) bool {
	c, b := r.c, r.b
	if j := r.storeDone; j != nil {
		return r.storeAnswer(j)
	}
	if !r.only("POST") {
		return r.close
	}
	p := b.ps
	if p == nil {
		return r.fail(503, "persistence is off (--persistence=false): there is no store")
	}
	j := &storeJob{c: c, compact: compact}
	if !compact {
		name := ""
		if v, ok := r.arg("name"); ok {
			name = string(v)
		} else if body := r.h.req.Body(); len(body) > 0 {
			var req struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				return r.fail(400, `body must be {"name":"..."}: `+err.Error())
			}
			name = req.Name
		}
		if name == "" {
			name = "checkpoint-" + time.Now().UTC().Format("20060102T150405.000Z")
		}
		if !checkpointName(name) {
			return r.fail(400, "checkpoint name must be 1 to "+strconv.Itoa(maxCheckpointName)+
				" letters, digits, '.', '_' or '-', not starting with '.' (it names a directory under --checkpoint-dir)")
		}
		j.dir = filepath.Join(b.opts.CheckpointDir, name)
	}
	if p.shut.Load() {
		return r.fail(503, "the broker is stopping")
	}
	if !p.adminBusy.CompareAndSwap(false, true) {
		return r.fail(409, ErrStoreBusy.Error())
	}
	c.x.store, c.authWait = j, true
	go j.run(b, p)
	return false
}

// storeAnswer writes the result of j. Runs on the request's loop.
func (r *httpReq) storeAnswer(j *storeJob) bool {
	switch {
	case j.err == nil:
	case errors.Is(j.err, store.ErrCheckpointExists):
		return r.fail(409, j.err.Error())
	case errors.Is(j.err, ErrNoPersistence), errors.Is(j.err, store.ErrClosed), errors.Is(j.err, store.ErrQueueFull):
		return r.fail(503, j.err.Error())
	default:
		return r.fail(500, j.err.Error())
	}
	out := r.h.body[:0]
	if j.compact {
		out = append(out, `{"status":"compacted","bytes":`...)
		out = strconv.AppendInt(out, j.bytes, 10)
	} else {
		out = append(out, `{"dir":`...)
		out = appendJSONString(out, []byte(j.ckpt.Dir))
		out = append(out, `,"bytes":`...)
		out = strconv.AppendInt(out, j.ckpt.Bytes, 10)
	}
	out = append(out, `,"took_ms":`...)
	out = strconv.AppendInt(out, j.took.Milliseconds(), 10)
	out = append(out, '}')
	r.h.body = out
	return r.ok(200, out)
}
