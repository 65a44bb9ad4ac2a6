package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Fsync is when a committed batch counts as durable.
type Fsync uint8

const (
	// FsyncInterval commits without sync and syncs the WAL every Interval;
	// durability is posted after that sync. The default.
	FsyncInterval Fsync = iota
	// FsyncAlways syncs the WAL for every commit (group commit: one sync per
	// batch of submissions); durability is posted after the sync.
	FsyncAlways
	// FsyncNone commits without sync and posts durability at once.
	FsyncNone
)

var fsyncNames = [...]string{FsyncInterval: "interval", FsyncAlways: "always", FsyncNone: "none"}

func (f Fsync) String() string {
	if int(f) < len(fsyncNames) {
		return fsyncNames[f]
	}
	return "fsync(" + strconv.Itoa(int(f)) + ")"
}

// ParseFsync reads "always", "interval" or "none".
func ParseFsync(s string) (Fsync, error) {
	for i, n := range fsyncNames {
		if s == n {
			return Fsync(i), nil
		}
	}
	return 0, fmt.Errorf("store: fsync %q: want always, interval or none", s)
}

// Options configure a Store. Zero values take the defaults given.
type Options struct {
	Dir      string        // data directory, created if missing
	Fsync    Fsync         // default FsyncInterval
	Interval time.Duration // FsyncInterval period; default 1 s
	// Window is how long the writer holds records in memory before it
	// writes them to pebble (FsyncInterval and FsyncNone; overlay.go):
	// a record deleted within it is never written, and a process crash
	// loses up to it. FsyncInterval still syncs every Interval. Default
	// 100 ms; at most Interval.
	Window time.Duration

	// QueueLen bounds the batches waiting for the writer; a full queue
	// makes Submit return ErrQueueFull. Default 4096.
	QueueLen int
	// MaxCommitBytes caps the encoded bytes the writer gathers into one
	// pebble commit. Default 1 MiB.
	MaxCommitBytes int
	// MaxWindowBytes bounds the records the writer holds in memory for
	// the commit window (overlay.go); past it they are written to pebble
	// early (FsyncInterval still syncs at the end of the interval).
	// Default 1 MiB.
	MaxWindowBytes int

	// Pebble tuning, small by default for a small VM.
	MemTableSize   uint64 // default 4 MiB
	CacheSize      int64  // block cache, default 4 MiB
	MaxCompactions int    // concurrent compactions, default 1

	// OnDurable is called on the writer goroutine with the highest sequence
	// number (from Submit) that is now durable per the Fsync mode; every
	// lower one is durable too. It must not block (post to a mailbox).
	OnDurable func(seq uint64)
	// OnError is called on the writer goroutine for each failed commit or
	// sync; the writer keeps retrying and OnDurable stops until a retry
	// succeeds. Pebble's background (flush, compaction) errors come here
	// too, from pebble's goroutines. Nil: errors are only visible through
	// Health. It must not block.
	OnError func(err error)
	// Now is the clock for expiry checks; default time.Now.
	Now func() time.Time
	// FS is the file system pebble uses; nil: the OS. For tests of the
	// code above the store (pebble's errorfs injects disk errors).
	FS FS

	fs          vfs.FS          // tests: injected errors; nil: the OS
	beforeSync  func()          // tests: called on the writer before a synced commit
	afterSync   func(n uint64)  // tests: called after a synced commit of up to seq n, before OnDurable
	afterCommit func(sync bool) // tests: called after each successful commit
	maxManifest int64           // tests: MANIFEST roll-over size; 0: maxManifestSize
	afterApply  func()          // tests: called after batches entered the commit window
}

// FS is pebble's file system interface (vfs.FS).
type FS = vfs.FS

// Errors.
var (
	ErrQueueFull = errors.New("store: writer queue full")
	ErrClosed    = errors.New("store: closed")
	ErrLocked    = errors.New("store: data directory in use")
	ErrVersion   = errors.New("store: unsupported data format version")
)

const pidFileName = "tinymq.pid"

// maxManifestSize is the MANIFEST size at which pebble starts a new one
// (openDB).
const maxManifestSize = 1 << 20

// Store is the durable state on pebble. Submit is safe from any goroutine
// and never blocks on I/O; one writer goroutine commits and posts
// durability. Reads (Load, Queue) are safe from any goroutine and see what
// is committed.
type Store struct {
	opts Options
	fs   vfs.FS
	lock *pebble.Lock

	dbMu sync.RWMutex // guards db replacement after a failure (writer writes, readers read)
	db   *pebble.DB

	mu     sync.Mutex // guards seq, closed and the send on ch
	seq    uint64
	closed bool
	ch     chan *Batch

	committed atomic.Uint64
	durable   atomic.Uint64
	writeOnly atomic.Bool // set while a commit's log sync must only write (walfs.go)
	nextMsg   atomic.Uint64
	health    atomic.Pointer[error]

	refs    map[uint64]int32 // writer goroutine: reference counts of messages put since open (applier.ref)
	w       applier          // writer goroutine: reused across commits
	ov      overlay          // writer goroutine: the commit window's records (overlay.go)
	idFloor uint64           // highest message id on disk at open: a record above it is new
	ovStats atomic.Pointer[OverlayStats]

	// FsyncInterval, writer goroutine: what the write-only commits since
	// the last sync wrote, as pebble batch representations end to end
	// (unsyncedEnd[i] ends the i-th), kept for a replay after a failed
	// write or sync in place of the batches they came from (run, fail).
	unsynced    []byte
	unsyncedEnd []int

	flushReq chan flushReq // readers ask the writer to write the overlay to pebble

	replayMu sync.Mutex
	replay   []string // pebble's WAL replay lines from the opens (fatalLogger)

	pages      chan pageReq // RequestQueue to the reader goroutine
	readerDone chan struct{}

	quit chan struct{}
	done chan struct{}
}

// fatalLogger turns pebble's Fatalf (it exits the process by default) into
// a panic the writer recovers as an error, so an I/O failure is reported and
// retried rather than killing the broker.
//
// It also keeps what pebble says about replaying its write-ahead log at
// open ("WAL N stopped reading at offset: O; replayed K keys in B
// batches"): where recovery stopped, for the recovery log (WALReplay).
type fatalLogger struct{ s *Store }

type pebbleFatal struct {
	msg   string
	cause error // the first error among Fatalf's arguments, kept for errors.Is (NoSpace)
}

// err is f as the writer reports it.
func (f pebbleFatal) err() error { return &fatalError{msg: "store: " + f.msg, cause: f.cause} }

// fatalError is a pebble fatal error turned into a write error; it
// unwraps to the I/O error that caused it, when pebble gave one.
type fatalError struct {
	msg   string
	cause error
}

func (e *fatalError) Error() string { return e.msg }
func (e *fatalError) Unwrap() error { return e.cause }

// catchFatal, deferred by a function that calls pebble, turns pebble's
// Fatalf (a pebbleFatal panic, fatalLogger) into that function's error
// *err; any other panic goes on.
func catchFatal(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(pebbleFatal)
		if !ok {
			panic(r)
		}
		*err = f.err()
	}
}

// NoSpace reports whether err (a Health error) comes from a full disk or
// an exhausted quota (ENOSPC, EDQUOT), as opposed to another I/O error.
// Any goroutine.
func NoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	// A cause pebble formatted into its message without wrapping it.
	m := err.Error()
	return strings.Contains(m, syscall.ENOSPC.Error()) || strings.Contains(m, syscall.EDQUOT.Error())
}

func (l fatalLogger) Infof(format string, args ...any) {
	if l.s != nil && strings.Contains(format, "stopped reading at offset") {
		l.s.replayMu.Lock()
		l.s.replay = append(l.s.replay, fmt.Sprintf(format, args...))
		l.s.replayMu.Unlock()
	}
}
func (fatalLogger) Errorf(string, ...any) {}
func (fatalLogger) Fatalf(format string, args ...any) {
	f := pebbleFatal{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if e, ok := a.(error); ok {
			f.cause = e
			break
		}
	}
	panic(f)
}

// Open opens or creates the store in o.Dir and starts its writer. It refuses
// a directory another process holds (ErrLocked, naming the pid when its pid
// file says) and one written in another format version (ErrVersion). Blocks
// on I/O: call it at startup, not on a loop.
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("store: no data directory")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Window <= 0 {
		o.Window = 100 * time.Millisecond
	}
	if o.Window > o.Interval {
		o.Window = o.Interval
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 4096
	}
	if o.MaxCommitBytes <= 0 {
		o.MaxCommitBytes = 1 << 20
	}
	if o.MaxWindowBytes <= 0 {
		o.MaxWindowBytes = 1 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 4 << 20
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 4 << 20
	}
	if o.MaxCompactions <= 0 {
		o.MaxCompactions = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{opts: o, fs: o.fs, refs: make(map[uint64]int32), ch: make(chan *Batch, o.QueueLen), quit: make(chan struct{}), done: make(chan struct{}),
		pages: make(chan pageReq, o.QueueLen), readerDone: make(chan struct{}), flushReq: make(chan flushReq)}
	if s.fs == nil {
		s.fs = o.FS
	}
	if s.fs == nil {
		s.fs = vfs.Default
	}
	if err := s.fs.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	lock, err := pebble.LockDirectory(o.Dir, s.fs)
	if err != nil {
		return nil, lockedError(o.Dir, err)
	}
	s.lock = lock
	db, err := s.openDB()
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.db = db
	if err := s.checkVersion(); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, err
	}
	if err := s.initNextMsg(); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(o.Dir, pidFileName), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	go s.run()
	go s.reader()
	return s, nil
}

func lockedError(dir string, err error) error {
	who := "another process"
	if b, rerr := os.ReadFile(filepath.Join(dir, pidFileName)); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
			who = "pid " + strconv.Itoa(pid)
			if pid == os.Getpid() {
				who += " (this process)"
			}
		}
	}
	return fmt.Errorf("%w: %s is locked by %s; stop it or choose another --data-dir (%v)", ErrLocked, dir, who, err)
}

func (s *Store) openDB() (*pebble.DB, error) {
	o := s.opts
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:                          walFS{FS: s.fs, writeOnly: &s.writeOnly},
		Lock:                        s.lock,
		Cache:                       cache,
		MemTableSize:                o.MemTableSize,
		MemTableStopWritesThreshold: 4,
		Logger:                      fatalLogger{s},
		CompactionConcurrencyRange:  func() (int, int) { return 1, o.MaxCompactions },
		// WAL sync chunks record how far the log was synced, so that a
		// damaged record with synced records after it is reported as
		// corruption instead of being taken for a torn tail (which would
		// silently drop everything after it). Pinned, not FormatNewest:
		// a pebble upgrade must not ratchet the on-disk format unasked.
		FormatMajorVersion: pebble.FormatWALSyncChunks,
		// The MANIFEST gets an edit per flush and compaction and is
		// rewritten from a snapshot of the live tables once it passes
		// this size. Pebble's default (128 MB) lets a long steady run
		// grow it by ~0.2 MB an hour for weeks (bench/disk-growth.sh);
		// our live table count is small, so the snapshot is too.
		MaxManifestFileSize: maxManifestSize,
	}
	if o.maxManifest > 0 {
		po.MaxManifestFileSize = o.maxManifest
	}
	if o.OnError != nil {
		// Flush and compaction failures happen on pebble's goroutines; pebble
		// retries them. They are reported, not made the writer's health.
		po.EventListener = &pebble.EventListener{BackgroundError: func(err error) {
			o.OnError(fmt.Errorf("store: background: %w", err))
		}}
	}
	db, err := pebble.Open(o.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", o.Dir, err)
	}
	return db, nil
}

// checkVersion writes the format version into a new store and refuses an
// existing one of another version, or one with data and no version.
func (s *Store) checkVersion() error {
	v, closer, err := s.db.Get(keyFormatVersion)
	if err == nil {
		defer closer.Close()
		if len(v) != 2 {
			return fmt.Errorf("%w: unreadable version record in %s; not touching it", ErrVersion, s.opts.Dir)
		}
		if got := binary.BigEndian.Uint16(v); got != FormatVersion {
			return fmt.Errorf("%w: %s holds format version %d, this build reads %d; not touching it", ErrVersion, s.opts.Dir, got, FormatVersion)
		}
		return nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	nonEmpty := it.First()
	_ = it.Close()
	if nonEmpty {
		return fmt.Errorf("%w: %s has data but no format version; not touching it", ErrVersion, s.opts.Dir)
	}
	if err := s.db.Set(keyFormatVersion, binary.BigEndian.AppendUint16(nil, FormatVersion), pebble.Sync); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// A new pebble store starts its first write-ahead log before it
	// ratchets to FormatWALSyncChunks, so that log has no sync offsets
	// (corruption in it would read as a torn tail). A flush moves on to a
	// log written in the new format.
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// initNextMsg starts message ids above every id on disk, in a message
// record or a reference key (one left by a lost record must not be taken
// for a new message's). That id is also idFloor: a record above it is new
// (overlay.go).
func (s *Store) initNextMsg() error {
	var top uint64
	for _, p := range []byte{prefixMessage, prefixRef} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if it.Last() && len(it.Key()) >= 9 {
			top = max(top, binary.BigEndian.Uint64(it.Key()[1:9]))
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	s.nextMsg.Store(top)
	s.idFloor = top
	return nil
}

// NextMessageID allocates a message record id. Safe from any goroutine.
func (s *Store) NextMessageID() uint64 { return s.nextMsg.Add(1) }

// Submit hands b to the writer and returns its sequence number; OnDurable
// later reports a number >= it. It never blocks: a full queue returns
// ErrQueueFull (b is still the caller's; retry or drop it, and count it).
// Safe from any goroutine; on success the store owns b.
func (s *Store) Submit(b *Batch) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	seq := s.seq + 1
	b.seq = seq
	select {
	case s.ch <- b:
		// b belongs to the writer now (it may already be released).
		s.seq = seq
		return seq, nil
	default:
		b.seq = 0
		return 0, ErrQueueFull
	}
}

// WALReplay is what pebble reported about replaying its write-ahead logs
// when the store was opened: per log, the offset where reading stopped
// and how many batches it replayed. A torn or corrupt tail of the last log
// (a crash in the middle of a write, a bad sector) ends the replay at the
// last good record: that offset. Any goroutine.
func (s *Store) WALReplay() []string {
	s.replayMu.Lock()
	defer s.replayMu.Unlock()
	return append([]string(nil), s.replay...)
}

// Committed is the highest sequence number committed to pebble (visible to
// Load and Queue, not necessarily durable). Safe from any goroutine.
func (s *Store) Committed() uint64 { return s.committed.Load() }

// Durable is the highest sequence number durable per the Fsync mode.
func (s *Store) Durable() uint64 { return s.durable.Load() }

// Health is nil while writes succeed, else the last write error.
func (s *Store) Health() error {
	if p := s.health.Load(); p != nil {
		return *p
	}
	return nil
}

// Compact flushes the memtable and compacts every key into the bottom
// level, dropping deleted and overwritten records: the smallest the
// directory gets for its live state. Pebble compacts on its own as it
// goes; this is for measuring (docs/durability.md "On disk") and before a
// backup. Blocks on I/O for as long as the rewrite takes: call it from a
// test or a command, never from a loop.
func (s *Store) Compact() error {
	s.flushSubmitted() // what the commit window holds must reach pebble to be compacted
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("store: flush: %w", err)
	}
	if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

// Close stops accepting batches, commits and syncs what is queued, stops the
// writer and closes pebble. It returns the last write error if the writer
// was failing. Blocks on I/O.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	close(s.quit)
	<-s.done
	<-s.readerDone
	werr := s.Health()
	s.dbMu.Lock()
	err := safeClose(s.db)
	s.dbMu.Unlock()
	_ = os.Remove(filepath.Join(s.opts.Dir, pidFileName))
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	if werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

func safeClose(db *pebble.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: close: %v", r)
		}
	}()
	return db.Close()
}

func (s *Store) setHealth(err error) {
	if err == nil {
		s.health.Store(nil)
		return
	}
	s.health.Store(&err)
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// run is the writer goroutine: it gathers queued batches, applies them to
// the commit window (overlay.go), writes the window to pebble at its end
// (FsyncAlways: every group; FsyncInterval and FsyncNone: Interval after
// its first record, or earlier past MaxWindowBytes or for a read), syncs
// per the Fsync mode, and posts durability.
//
// Every batch stays in held until what it wrote is durable per the mode
// and in pebble: after a failed commit or sync the writer replays them all
// into a reopened store (fail).
func (s *Store) run() {
	defer close(s.done)
	var (
		held   []*Batch // applied, not yet durable per the mode or not yet in pebble
		cur    []*Batch
		dirty  bool   // pebble holds write-only commits not yet synced
		wseq   uint64 // FsyncInterval: the last batch in those commits (its batches released: s.unsynced)
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
		syncAt time.Time  // FsyncInterval: when held batches are due for their sync
		asked  []flushReq // flush requests waiting for their batches to be applied (flushSubmitted)
	)
	timer.Stop()
	w := &s.w
	w.s = s
	if w.cnt == nil {
		w.cnt = make(map[uint64]int32)
	}
	release := func(bs []*Batch) []*Batch {
		for i, b := range bs {
			b.release()
			bs[i] = nil
		}
		return bs[:0]
	}
	// last is the sequence number a sync now makes durable: that of the
	// last held batch, or of the last one written (0: none).
	last := func() uint64 {
		if len(held) > 0 {
			return held[len(held)-1].seq
		}
		return wseq
	}
	// postSynced posts everything durable after a sync and lets the
	// batches and the write-only commits go.
	postSynced := func() {
		if seq := last(); seq > 0 {
			s.post(seq)
		}
		held = release(held)
		wseq = 0
		s.synced()
	}
	// written lets go of the batches a write-only commit just wrote, in
	// interval: s.unsynced replays them if the sync fails. (None posted
	// them at Submit and replays nothing.)
	written := func() {
		if len(held) > 0 && s.ov.empty() && (s.opts.Fsync == FsyncInterval || s.opts.Fsync == FsyncNone) {
			if s.opts.Fsync == FsyncInterval {
				wseq = held[len(held)-1].seq
			}
			held = release(held)
		}
	}
	// fail handles a failed pebble write: the window is dropped and every
	// held batch is replayed into a reopened store with one synced commit,
	// until that succeeds. False: the store is closing.
	fail := func(err error) bool {
		s.setHealth(err)
		// The failed pebble may have lost commits the counts took in;
		// from here on what is on disk decides (applier.ref).
		clear(s.refs)
		clear(w.cnt)
		clear(w.gc)
		w.zeroed = w.zeroed[:0]
		s.ov.reset()
		backoff := 20 * time.Millisecond
		for {
			select {
			case <-s.quit:
				return false
			case <-time.After(backoff):
			}
			if backoff < time.Second {
				backoff *= 2
			}
			if err = s.reopen(); err == nil {
				if err = s.replayUnsynced(); err == nil {
					err = s.commit(held, true, true)
				}
				if err == nil && len(held) == 0 && len(s.unsyncedEnd) > 0 {
					err = s.syncWAL() // commit syncs nothing without batches
				}
				if err == nil {
					s.setHealth(nil)
					dirty, syncAt = false, time.Time{}
					postSynced()
					return true
				}
			}
			s.setHealth(err)
		}
	}
	// flush writes the window to pebble (sync: and syncs the log, which
	// also covers earlier NoSync commits).
	flush := func(sync bool) error {
		if s.ov.empty() {
			if sync && dirty {
				if err := s.syncWAL(); err != nil {
					return err
				}
				dirty = false
			}
			return nil
		}
		if err := s.commitOverlay(sync); err != nil {
			return err
		}
		dirty = !sync
		return nil
	}
	// apply takes cur into the window (a batch that reads is committed to
	// pebble directly, after the window). False: a failure replayed held.
	apply := func() (ok bool, err error) {
		held = append(held, cur...)
		w.replay = false
		for _, b := range cur {
			if b.reads {
				w.ovFinish()
				if err := flush(false); err != nil {
					return false, err
				}
				if err := s.commit([]*Batch{b}, false, false); err != nil {
					return false, err
				}
				dirty = true
				continue
			}
			if err := b.each(w.ovApply); err != nil {
				return false, fmt.Errorf("store: apply: %w", err)
			}
		}
		w.ovFinish()
		if last := cur[len(cur)-1].seq; last > s.committed.Load() {
			s.committed.Store(last)
		}
		cur = cur[:0]
		s.publishStats()
		if s.opts.afterApply != nil {
			s.opts.afterApply()
		}
		return true, nil
	}
	// settled posts and releases held when the window adds nothing to
	// what pebble holds synced (every record cancelled, or none).
	settled := func() {
		if len(held) > 0 && s.ov.empty() && !dirty {
			postSynced()
			syncAt = time.Time{}
		}
	}
	// serve writes the window to pebble for a reader, which then sees
	// every committed batch. False: the store is closing.
	serve := func(r flushReq) bool {
		if !s.ov.empty() {
			if err := flush(false); err != nil {
				if !fail(err) {
					close(r.done)
					return false
				}
			} else {
				written() // none: posted already, and now in pebble
			}
		}
		close(r.done)
		return true
	}
	for {
		if len(asked) > 0 {
			n := 0
			for _, r := range asked {
				if r.upTo > s.committed.Load() {
					asked[n] = r
					n++
				} else if !serve(r) {
					return
				}
			}
			clear(asked[n:])
			asked = asked[:n]
		}
		var first *Batch
		select {
		case first = <-s.ch:
		case <-timerC:
			timerC = nil
			// The end of the window.
			if s.opts.Fsync == FsyncInterval && time.Now().Before(syncAt) {
				// Written now, synced when the interval is up.
				if err := flush(false); err != nil {
					if !fail(err) {
						return
					}
					continue
				}
				written()
				settled()
				if len(held) > 0 || dirty {
					timer.Reset(min(s.opts.Window, time.Until(syncAt)))
					timerC = timer.C
				}
				continue
			}
			syncAt = time.Time{}
			if err := flush(s.opts.Fsync == FsyncInterval); err != nil {
				if !fail(err) {
					return
				}
				continue
			}
			if s.opts.Fsync == FsyncInterval {
				postSynced()
			} else {
				if len(held) > 0 {
					s.post(held[len(held)-1].seq)
				}
				held = release(held)
			}
			continue
		case r := <-s.flushReq:
			if r.upTo > s.committed.Load() {
				// Batches it must see are still queued: served once
				// they are applied (the top of the loop).
				asked = append(asked, r)
				continue
			}
			if !serve(r) {
				return
			}
			continue
		case <-s.quit:
			// Commit what Submit accepted before Close, and sync.
			cur = cur[:0]
		drain:
			for {
				select {
				case b := <-s.ch:
					cur = append(cur, b)
				default:
					break drain
				}
			}
			if len(cur) > 0 {
				if ok, err := apply(); !ok {
					if !fail(err) {
						return
					}
				}
			}
			if err := flush(true); err != nil {
				if !fail(err) {
					return
				}
			}
			postSynced()
			return
		}
		cur = append(cur[:0], first)
		size := first.Size()
	gather:
		for size < s.opts.MaxCommitBytes {
			select {
			case b := <-s.ch:
				cur = append(cur, b)
				size += b.Size()
			default:
				break gather
			}
		}
		if ok, err := apply(); !ok {
			if !fail(err) {
				return
			}
			continue
		}
		switch s.opts.Fsync {
		case FsyncAlways:
			// The window is this group: durable once the synced commit
			// returns.
			if err := flush(true); err != nil {
				if !fail(err) {
					return
				}
				continue
			}
			postSynced()
		default:
			if s.opts.Fsync == FsyncNone {
				s.post(held[len(held)-1].seq) // none: durable once committed at all
			}
			if s.ov.bytes >= s.opts.MaxWindowBytes {
				if err := flush(false); err != nil {
					if !fail(err) {
						return
					}
					continue
				}
				written()
			}
			settled()
			if len(held) > 0 || (dirty && s.opts.Fsync == FsyncInterval) {
				if s.opts.Fsync == FsyncInterval && syncAt.IsZero() {
					syncAt = time.Now().Add(s.opts.Interval)
				}
				if timerC == nil {
					timer.Reset(s.opts.Window)
					timerC = timer.C
				}
			}
		}
	}
}

// flushReq asks the writer to write the commit window to pebble once every
// batch up to sequence number upTo is applied (0: at once); done is closed
// when it has.
type flushReq struct {
	upTo uint64
	done chan struct{}
}

// flushForRead has the writer write the commit window to pebble, so that
// a read sees every committed batch. It returns at once once the writer
// stopped. Any goroutine but the writer.
func (s *Store) flushForRead() { s.flushUpTo(0) }

// flushSubmitted has the writer write to pebble every batch Submit
// accepted before the call, those still queued for the writer included
// (Checkpoint, Compact). It returns at once once the writer stopped. Any
// goroutine but the writer.
func (s *Store) flushSubmitted() {
	s.mu.Lock()
	seq := s.seq
	s.mu.Unlock()
	s.flushUpTo(seq)
}

func (s *Store) flushUpTo(seq uint64) {
	r := flushReq{upTo: seq, done: make(chan struct{})}
	select {
	case s.flushReq <- r:
	case <-s.done:
		return
	}
	select {
	case <-r.done:
	case <-s.done:
	}
}

// OverlayStats count what the commit window saved (overlay.go).
type OverlayStats struct {
	Written   uint64 // records (sets) written to pebble from the window
	Cancelled uint64 // sets cancelled by their delete inside the window: never written
}

// Overlay reports the commit window's counters. Any goroutine.
func (s *Store) Overlay() OverlayStats {
	if p := s.ovStats.Load(); p != nil {
		return *p
	}
	return OverlayStats{}
}

func (s *Store) publishStats() {
	s.ovStats.Store(&OverlayStats{Written: s.ov.written, Cancelled: s.ov.cancelled})
}

// commitOverlay writes the window to pebble in one batch and empties it.
// Writer goroutine.
func (s *Store) commitOverlay(sync bool) (err error) {
	defer catchFatal(&err)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	pb := s.db.NewBatch()
	defer pb.Close()
	if err := s.ov.write(pb); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	if err := s.commitPebble(pb, sync); err != nil {
		return err
	}
	s.ov.keepCounts(s.refs)
	if len(s.ov.gc) > 0 {
		s.collectAfterCommit(s.ov.gc)
	}
	s.ov.reset()
	s.publishStats()
	if sync && s.opts.afterSync != nil {
		s.opts.afterSync(s.committed.Load())
	}
	if s.opts.afterCommit != nil {
		s.opts.afterCommit(sync)
	}
	return nil
}

// commitPebble commits pb, synced when sync is set (the test hook
// beforeSync runs first). Runs on the writer goroutine; blocks on I/O.
func (s *Store) commitPebble(pb *pebble.Batch, sync bool) error {
	if sync {
		if s.opts.beforeSync != nil {
			s.opts.beforeSync()
		}
	} else {
		// Written to the OS, not synced (walfs.go): a process crash
		// loses none of it.
		s.writeOnly.Store(true)
		defer s.writeOnly.Store(false)
	}
	if err := pb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	if !sync && s.opts.Fsync == FsyncInterval {
		s.unsynced = append(s.unsynced, pb.Repr()...)
		s.unsyncedEnd = append(s.unsyncedEnd, len(s.unsynced))
	}
	return nil
}

// synced forgets the write-only commits a sync has just made durable.
// Writer goroutine.
func (s *Store) synced() {
	if cap(s.unsynced) > 4*s.opts.MaxWindowBytes {
		s.unsynced = nil // let a buffer an outsized burst grew go
	}
	s.unsynced, s.unsyncedEnd = s.unsynced[:0], s.unsyncedEnd[:0]
}

// replayUnsynced writes the write-only commits since the last sync again,
// in order, into a reopened store: each sets and deletes whole keys, so
// applying them over whatever part of them reached the disk leaves what
// they left. Writer goroutine, after reopen.
func (s *Store) replayUnsynced() (err error) {
	defer catchFatal(&err)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	start := 0
	for _, end := range s.unsyncedEnd {
		pb := s.db.NewBatch()
		// The batch owns what SetRepr gets (pebble may reuse it): a copy.
		if err := pb.SetRepr(append([]byte(nil), s.unsynced[start:end]...)); err != nil {
			pb.Close()
			return fmt.Errorf("store: replay: %w", err)
		}
		start = end
		err := pb.Commit(pebble.NoSync)
		pb.Close()
		if err != nil {
			return fmt.Errorf("store: replay: %w", err)
		}
	}
	return nil
}

// collectAfterCommit deletes the messages in gc that no entry references any
// more. The commit stands whatever happens here: a record left
// unreferenced is only garbage (Load skips what no entry references), so
// an error is reported, not returned. Runs on the writer goroutine.
func (s *Store) collectAfterCommit(gc map[uint64]struct{}) {
	if err := s.collect(gc); err != nil && s.opts.OnError != nil {
		s.opts.OnError(fmt.Errorf("store: collecting unreferenced messages: %w", err))
	}
}

func (s *Store) post(seq uint64) {
	if seq <= s.durable.Load() {
		return
	}
	s.durable.Store(seq)
	if s.opts.OnDurable != nil {
		s.opts.OnDurable(seq)
	}
}

// commit applies bs in one pebble batch; pebble's fatal errors come back as
// errors.
func (s *Store) commit(bs []*Batch, sync, replay bool) (err error) {
	if len(bs) == 0 {
		return nil
	}
	defer catchFatal(&err)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	// Reads through the batch (references, old entries) need an indexed
	// batch; a commit of plain writes (fan-out Enqueues) is cheaper without.
	var pb *pebble.Batch
	reads := false
	for _, b := range bs {
		reads = reads || b.reads
	}
	if reads {
		pb = s.db.NewIndexedBatch()
	} else {
		pb = s.db.NewBatch()
	}
	defer pb.Close()
	w := &s.w
	w.s, w.pb, w.replay = s, pb, replay
	if w.cnt == nil {
		w.cnt = make(map[uint64]int32)
	}
	clear(w.cnt)
	clear(w.gc)
	w.zeroed = w.zeroed[:0]
	for _, b := range bs {
		w.batch = b
		if err := b.each(w.apply); err != nil {
			w.batch = nil
			return fmt.Errorf("store: apply: %w", err)
		}
	}
	w.batch = nil
	if err := w.finish(reads); err != nil {
		return err
	}
	if err := s.commitPebble(pb, sync); err != nil {
		return err
	}
	for _, b := range bs {
		if len(b.takes) > 0 {
			b.fireTakes() // committed: the sessions they read are deleted
		}
	}
	w.settleRefs()
	if !reads && len(w.gc) > 0 {
		s.collectAfterCommit(w.gc)
	}
	// This commit's scratch is spent (the window's segments reuse it).
	w.zeroed = w.zeroed[:0]
	clear(w.gc)
	last := bs[len(bs)-1].seq
	if last > s.committed.Load() {
		s.committed.Store(last)
	}
	if sync && s.opts.afterSync != nil {
		s.opts.afterSync(last)
	}
	if s.opts.afterCommit != nil {
		s.opts.afterCommit(sync)
	}
	return nil
}

// syncWAL makes every NoSync commit so far durable.
func (s *Store) syncWAL() (err error) {
	defer catchFatal(&err)
	if s.opts.beforeSync != nil {
		s.opts.beforeSync()
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	if s.opts.afterSync != nil {
		s.opts.afterSync(s.committed.Load())
	}
	return nil
}

// reopen replaces a pebble instance whose WAL failed (pebble's write errors
// are sticky) with a fresh one over the same directory and lock.
func (s *Store) reopen() error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	_ = safeClose(s.db)
	db, err := s.openDB()
	if err != nil {
		// Keep a closed db in place; the next attempt reopens again.
		return err
	}
	s.db = db
	return nil
}

// applier turns ops into pebble writes; it reads through the indexed batch
// so that each op sees the ones before it.
type applier struct {
	s      *Store
	pb     *pebble.Batch
	k      []byte
	gc     map[uint64]struct{} // untracked messages that lost a reference in this commit
	cnt    map[uint64]int32    // tracked messages touched in this commit: their count now (-1: deleted)
	zeroed []uint64            // tracked messages whose count fell to 0 in this commit
	replay bool                // a commit replayed after a failure: track nothing new
	vbuf   []byte
	batch  *Batch // the batch being applied (commit): its DeleteSessionTaking callbacks
}

func (w *applier) get(key []byte) ([]byte, bool, error) {
	v, c, err := w.pb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	w.vbuf = append(w.vbuf[:0], v...)
	_ = c.Close()
	return w.vbuf, true, nil
}

// refOf is the reference key of entry key ('s' cid sub suffix): 'x' id cid sub suffix.
func (w *applier) refOf(id uint64, key []byte) []byte {
	w.k = binary.BigEndian.AppendUint64(append(w.k[:0], prefixRef), id)
	return append(w.k, key[1:]...)
}

func (w *applier) dropRef(key, old []byte) error {
	_, _, _, id, err := decodeEntry(old)
	if err != nil {
		return err
	}
	if err := w.pb.Delete(w.refOf(id, key), nil); err != nil {
		return err
	}
	w.unref(id)
	return nil
}

// ref notes a reference added (+1) or dropped (-1) to message id. A
// message the writer tracks (Store.refs: put since the store opened) has
// its count here, in memory; any other is checked against its reference
// keys at the end of the commit (finish, collect).
func (w *applier) ref(id uint64, d int32) {
	c, ok := w.cnt[id]
	if !ok {
		if c, ok = w.s.refs[id]; !ok {
			if d < 0 {
				if w.gc == nil {
					w.gc = make(map[uint64]struct{})
				}
				w.gc[id] = struct{}{}
			}
			return
		}
	}
	w.cnt[id] = c + d
	if c+d == 0 && d < 0 {
		w.zeroed = append(w.zeroed, id)
	}
}

func (w *applier) unref(id uint64) { w.ref(id, -1) }

// put notes a new message record: tracked from here, with no reference
// yet (its first may come in a later commit: only a count that falls to 0
// deletes it).
func (w *applier) put(key []byte) {
	if len(key) == 9 && key[0] == prefixMessage && !w.replay {
		w.cnt[binary.BigEndian.Uint64(key[1:])] = 0
	}
}

func (w *applier) apply(k opKind, key, val []byte, id uint64) error {
	switch k {
	case opSet:
		w.put(key)
		return w.pb.Set(key, val, nil)
	case opDel:
		return w.pb.Delete(key, nil)
	case opSetRef:
		// Written blind: a queue position is written once (positions only
		// grow), and an in-flight packet id is set again only for the same
		// message (PUBREC) or after DeleteInflight freed it (Batch.SetInflight).
		if err := w.pb.Set(key, val, nil); err != nil {
			return err
		}
		if _, _, pubrel, _, err := decodeEntry(val); err == nil && !pubrel {
			w.ref(id, 1) // PUBREC's update (pubrel) references it already
		}
		return w.pb.Set(w.refOf(id, key), nil, nil)
	case opDelRef:
		if id != 0 {
			// The caller named the message: no read.
			if err := w.pb.Delete(w.refOf(id, key), nil); err != nil {
				return err
			}
			w.unref(id)
			return w.pb.Delete(key, nil)
		}
		old, ok, err := w.get(key)
		if err != nil || !ok {
			return err
		}
		if err := w.dropRef(key, old); err != nil {
			return err
		}
		return w.pb.Delete(key, nil)
	case opDelSession:
		return w.delSession(key, nil)
	case opTakeSession:
		idx, n := binary.Uvarint(val)
		after, m := uint64(0), 0
		if n > 0 {
			after, m = binary.Uvarint(val[n:])
		}
		if n <= 0 || m <= 0 || w.batch == nil || idx >= uint64(len(w.batch.takes)) {
			return errCorrupt
		}
		t := &w.batch.takes[idx]
		t.got = t.got[:0] // a replay reads again
		return w.delSession(key, func(pos uint64, grp uint32, v []byte) error {
			if pos <= after {
				return nil
			}
			return w.take(t, pos, grp, v)
		})
	}
	return errCorrupt
}

// delSession deletes every key of the session whose key prefix is key,
// and their references. take, when not nil, is shown each queue entry
// that recorded a group tag first (position, tag, value). Writer
// goroutine.
func (w *applier) delSession(key []byte, take func(pos uint64, grp uint32, v []byte) error) error {
	it, err := w.pb.NewIter(&pebble.IterOptions{LowerBound: key, UpperBound: prefixEnd(key)})
	if err != nil {
		return err
	}
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		ik := append([]byte(nil), it.Key()...)
		if _, sub, rest, ok := parseSessionKey(ik); ok && (sub == subQueue || sub == subInflight) {
			v, err := it.ValueAndErr()
			if err != nil {
				_ = it.Close()
				return err
			}
			if take != nil && sub == subQueue && len(rest) == 8 {
				if _, _, _, _, err := decodeEntry(v); err == nil {
					if grp := entryGroup(v); grp != 0 {
						if err := take(binary.BigEndian.Uint64(rest), grp, v); err != nil {
							_ = it.Close()
							return err
						}
					}
				}
			}
			if err := w.dropRef(ik, v); err != nil {
				_ = it.Close()
				return err
			}
		}
		keys = append(keys, ik)
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, ik := range keys {
		if err := w.pb.Delete(ik, nil); err != nil {
			return err
		}
	}
	return nil
}

// take adds queue entry v at pos (group tag grp) to t with an owned copy
// of its message, unless the message is missing or expired. Writer
// goroutine, in an indexed batch (it reads through it).
func (w *applier) take(t *take, pos uint64, grp uint32, v []byte) error {
	qos, retain, _, id, err := decodeEntry(v)
	if err != nil {
		return err
	}
	mv, ok, err := w.get(messageKey(w.k[:0], id))
	if err != nil || !ok {
		return err
	}
	var m Message
	if err := decodeMessage(mv, &m); err != nil {
		return nil // a corrupt message is not handed on; the deletion goes ahead
	}
	if m.Expiry != 0 && m.Expiry <= w.s.opts.Now().UnixMilli() {
		return nil
	}
	t.got = append(t.got, Queued{Pos: pos, QoS: qos, Retain: retain, MsgID: id, Group: grp, Message: cloneMessage(m)})
	return nil
}

// finish deletes each tracked message whose last reference went in this
// commit (a count back above 0 by the end keeps it: a queue entry moved in
// flight) and, when the batch is indexed (it can read itself), each
// untracked one with no reference key left. Without an index the
// untracked ones wait for collect, after the commit.
func (w *applier) finish(indexed bool) error {
	for _, id := range w.zeroed {
		if w.cnt[id] != 0 {
			continue // referenced again, or already deleted
		}
		w.cnt[id] = -1
		if err := w.pb.Delete(messageKey(w.k[:0], id), nil); err != nil {
			return err
		}
	}
	if !indexed {
		return nil
	}
	return deleteUnreferenced(w.pb, w.pb, w.gc)
}

// deleteUnreferenced adds to pb the deletion of each message in gc that
// has no reference key in r.
func deleteUnreferenced(r pebble.Reader, pb *pebble.Batch, gc map[uint64]struct{}) error {
	var k []byte
	for id := range gc {
		referenced, err := hasRef(r, id)
		if err != nil {
			return err
		}
		if !referenced {
			k = messageKey(k[:0], id)
			if err := pb.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasRef reports whether message id has a reference key in r.
func hasRef(r pebble.Reader, id uint64) (bool, error) {
	lo := binary.BigEndian.AppendUint64([]byte{prefixRef}, id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return false, err
	}
	referenced := it.First()
	return referenced, it.Close()
}

// settleRefs takes the counts of a committed batch into Store.refs: a
// deleted message (-1) is forgotten, a new one is tracked while fewer than
// maxTracked are. Writer goroutine.
func (w *applier) settleRefs() {
	for id, c := range w.cnt {
		_, had := w.s.refs[id]
		switch {
		case c < 0:
			delete(w.s.refs, id)
		case had || len(w.s.refs) < maxTracked:
			w.s.refs[id] = c
		}
	}
	clear(w.cnt)
}

// maxTracked bounds the messages whose reference counts the writer keeps
// in memory (about 20 bytes each). Past it, and for messages recovered
// from disk, the last reference's deletion looks for reference keys
// instead: correct, only slower.
const maxTracked = 1 << 18

// collect deletes the untracked messages of a committed plain batch that
// have no reference left, reading the committed state. No reference to a
// message is added once it has none (the engine moves a queue entry into
// flight in one batch), so reading after the commit is as good as inside
// it. Writer goroutine, dbMu read-locked.
func (s *Store) collect(gc map[uint64]struct{}) error {
	pb := s.db.NewBatch()
	defer pb.Close()
	if err := deleteUnreferenced(s.db, pb, gc); err != nil {
		return err
	}
	if pb.Empty() {
		return nil
	}
	return pb.Commit(pebble.NoSync)
}
