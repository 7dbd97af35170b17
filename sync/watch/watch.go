// Package watch reports which files of a directory tree are ready to be
// uploaded, from Linux inotify events.
//
// A Watcher watches every directory under a root (new directories as they
// appear) and reports a regular file once it was closed after writing or
// renamed into place, and then stayed unchanged (size, mtime, inode) for a
// settle time. It only observes: what to do with a file, and whether it
// differs from what was uploaded before, is the caller's decision.
//
// Events are a shortcut, not the truth. Whenever the watcher may have missed
// something (the kernel's event queue overflowed, the watch limit was
// reached, the root disappeared, too many files were pending) it delivers a
// Batch with Rescan set, and the caller runs a full pass. While it cannot
// watch the whole tree, Healthy reports false and the caller should run its
// periodic full pass at the short interval; the watcher tries again on its
// own and reports Rescan once more when it watches again.
//
// The files found by listing a directory that appeared (created, or moved
// into the tree) are reported too once they settle, since their close may
// have happened before the directory was watched.
//
// Files that exist when New returns are not reported: the caller's first full
// pass covers them. Create the Watcher before that pass so nothing written in
// between is missed.
//
// # Why golang.org/x/sys/unix and not github.com/fsnotify/fsnotify
//
// fsnotify (v1.10.1, the newest release) is well kept, but it does not fit
// this job: it subscribes IN_MODIFY, so a writer produces one event per
// write(2), and it offers no IN_CLOSE_WRITE (the option exists only
// unexported), which is the event that says "the writer is done". Its Add
// follows symlinks (no IN_DONT_FOLLOW/IN_ONLYDIR), it keeps its own path
// bookkeeping that would duplicate ours, and it is not recursive on Linux. The
// raw inotify calls of golang.org/x/sys/unix (already a dependency) give
// exactly the events needed (IN_CLOSE_WRITE, IN_MOVED_TO, IN_Q_OVERFLOW,
// IN_IGNORED), no per-write wake-ups, and symlink-safe watches, in a few
// dozen lines.
package watch

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Options tune a Watcher. The zero value gives the defaults.
type Options struct {
	// Settle is how long a file must stay unchanged (size, mtime, inode)
	// after it was closed after writing or renamed into place before it is
	// reported. Each new change starts the wait again, so a file that keeps
	// being rewritten is reported once, after its writer stops. Default
	// 200ms.
	Settle time.Duration
	// MaxPending bounds how many files may wait to settle or to be
	// delivered. Beyond it they are all dropped and one Batch with Rescan
	// set is delivered instead. Default 10000.
	MaxPending int
	// MaxWatches bounds how many directories are watched (0: only the
	// kernel's fs.inotify.max_user_watches applies). Reaching either limit
	// gives up the watches (freeing them for other processes), reports
	// Rescan and unhealthy, and retries with backoff.
	MaxWatches int
	// RetryInterval is how often a missing root is looked for, and the
	// first delay before retrying after a lost watch (limit, overflow,
	// read error); that delay doubles on each failure up to
	// MaxRetryInterval. Defaults 1s and 2m.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// MaxWait, when positive, also watches writes (IN_MODIFY): a file
	// written to and not closed (a log held open) is reported in
	// Batch.Growing at most MaxWait after its first write not yet reported,
	// settled or not. Zero: a writer is only heard of when it closes the
	// file (no wake-up per write).
	MaxWait time.Duration
}

// Defaults of Options.
const (
	DefaultSettle           = 200 * time.Millisecond
	DefaultMaxPending       = 10000
	DefaultRetryInterval    = time.Second
	DefaultMaxRetryInterval = 2 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.Settle <= 0 {
		o.Settle = DefaultSettle
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.MaxRetryInterval <= 0 {
		o.MaxRetryInterval = DefaultMaxRetryInterval
	}
	if o.MaxRetryInterval < o.RetryInterval {
		o.MaxRetryInterval = o.RetryInterval
	}
	return o
}

// Batch is what a Watcher delivers.
type Batch struct {
	// Paths are files ready to upload, relative to the root with '/'
	// separators, sorted, each once. They never contain "..", never start
	// with '/', and name regular files (at the time they settled).
	Paths []string
	// Rescan says events may have been missed: the caller should run a full
	// pass over the root. Paths is empty when Rescan is set.
	Rescan bool
	// Growing (Options.MaxWait) are files written to for MaxWait without
	// being closed: still being written, reported unsettled.
	Growing []string
}

// Watcher watches one directory tree. Create it with New, read Events, and
// Close it when done. Events, Healthy and Close are safe for concurrent use.
type Watcher struct {
	root string
	opts Options
	log  *zap.Logger

	out     chan Batch
	healthy atomic.Bool
	reason  atomic.Pointer[string] // why not healthy; nil while healthy
	done    chan struct{}          // closed by Close
	exited  chan struct{}          // closed when run returns
	once    sync.Once

	raw      chan rawBatch // from the reader of the current instance
	readGate chan struct{} // tests only: the reader waits on it before each read

	// Everything below belongs to the run goroutine (and to New before it
	// starts).
	ino      *instance
	gen      int
	top      *dir
	dirs     map[int32]*dir
	pending  map[string]*entry
	ready    map[string]struct{}
	modified map[string]time.Time // first unreported write of files not closed (MaxWait)
	growing  map[string]struct{}  // to deliver in Batch.Growing
	rescan   bool
	next     *Batch // the batch to deliver, built lazily from ready/rescan
	settle   *time.Timer
	armed    bool
	armedFor time.Time // when the armed timer fires
	retry    *time.Timer
	backoff  time.Duration
	upSince  time.Time
	failedAt string // reason of the current outage, "" while healthy
}

// entry is a file waiting to settle.
type entry struct {
	fp  fingerprint
	due time.Time
}

// fingerprint is what must stay the same for a file to count as settled.
type fingerprint struct {
	size    int64
	mtimeNs int64
	ino     uint64
}

// testReadGate, when set by a test before New, makes the reader wait on it
// before each read so that the kernel queue can be made to overflow.
var testReadGate chan struct{}

// New starts watching the directory tree at root. It fails only on invalid
// arguments: a root that does not exist yet, a watch limit already reached or
// an inotify instance that cannot be created give a Watcher that is not
// Healthy and keeps trying. Symlinks are never followed, the root included.
func New(root string, opts Options, log *zap.Logger) (*Watcher, error) {
	if root == "" {
		return nil, errors.New("watch: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("watch: root %s: %w", root, err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	w := &Watcher{
		root:     abs,
		opts:     opts.withDefaults(),
		log:      log.With(zap.String("root", abs)),
		out:      make(chan Batch),
		done:     make(chan struct{}),
		exited:   make(chan struct{}),
		raw:      make(chan rawBatch, 1),
		readGate: testReadGate,
		pending:  make(map[string]*entry),
		ready:    make(map[string]struct{}),
		modified: make(map[string]time.Time),
		growing:  make(map[string]struct{}),
		settle:   time.NewTimer(time.Hour),
		retry:    time.NewTimer(time.Hour),
	}
	w.settle.Stop()
	w.retry.Stop()
	if w.start() {
		w.log.Debug("watch: watching", zap.Int("dirs", len(w.dirs)))
	} else {
		// The first full pass is the caller's anyway: no Rescan for this.
		w.rescan = false
	}
	go w.run()
	return w, nil
}

// Events delivers batches of files ready to upload and rescan requests. It is
// closed by Close. Batches are coalesced while the reader is busy: a slow
// reader gets fewer, larger batches (up to MaxPending paths, then one Rescan).
func (w *Watcher) Events() <-chan Batch { return w.out }

// Healthy reports whether every directory of the tree is watched, so that
// events can be trusted to cover it. While it is false the caller should run
// full passes at its short interval.
func (w *Watcher) Healthy() bool { return w.healthy.Load() }

// Reason says why the watcher is not Healthy (for status and logs), for
// example that the kernel's watch limit was reached; it is empty while it is
// healthy.
func (w *Watcher) Reason() string {
	if r := w.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// Close stops watching, releases the inotify instance and closes Events. It
// is safe to call more than once.
func (w *Watcher) Close() error {
	w.once.Do(func() { close(w.done) })
	<-w.exited
	return nil
}

func (w *Watcher) run() {
	defer close(w.exited)
	defer close(w.out)
	defer w.teardown()
	defer w.settle.Stop()
	defer w.retry.Stop()
	for {
		var out chan Batch
		var b Batch
		if w.rescan || len(w.ready) > 0 || len(w.growing) > 0 {
			if w.next == nil {
				w.next = w.batch()
			}
			out, b = w.out, *w.next
		}
		select {
		case <-w.done:
			return
		case rb := <-w.raw:
			w.handleRaw(rb)
		case <-w.settle.C:
			w.armed = false
			w.checkPending(time.Now())
		case <-w.retry.C:
			w.recover()
		case out <- b:
			w.ready = make(map[string]struct{})
			w.growing = make(map[string]struct{})
			w.rescan = false
			w.next = nil
		}
	}
}

// batch builds the Batch to deliver from ready and rescan.
func (w *Watcher) batch() *Batch {
	if w.rescan {
		return &Batch{Rescan: true}
	}
	paths := make([]string, 0, len(w.ready))
	for p := range w.ready {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var growing []string
	for p := range w.growing {
		growing = append(growing, p)
	}
	sort.Strings(growing)
	return &Batch{Paths: paths, Growing: growing}
}

// written notes a write to a file not yet closed (MaxWait): it is reported
// as growing MaxWait after the first such write, unless closed before.
func (w *Watcher) written(rel string, now time.Time) {
	if _, ok := w.modified[rel]; ok {
		return
	}
	if _, ok := w.pending[rel]; ok {
		return // closed already, settling
	}
	if len(w.modified) >= w.opts.MaxPending {
		w.collapse()
		return
	}
	w.modified[rel] = now
	w.arm(now, now.Add(w.opts.MaxWait))
}

// candidate notes that the file at rel (relative to the root) was closed
// after writing or renamed into place: it is reported once it settles.
func (w *Watcher) candidate(rel string, now time.Time) {
	fp, ok := w.stat(rel)
	if !ok {
		w.drop(rel)
		return
	}
	e := w.pending[rel]
	if e == nil {
		if len(w.pending)+len(w.ready) >= w.opts.MaxPending {
			w.collapse()
		}
		e = &entry{}
		w.pending[rel] = e
	}
	if _, ok := w.ready[rel]; ok {
		// Changed again before it was delivered: settle again.
		delete(w.ready, rel)
		w.next = nil
	}
	delete(w.modified, rel) // the close reports it
	e.fp = fp
	e.due = now.Add(w.opts.Settle)
	w.arm(now, e.due)
}

// arm makes the settle timer fire by due at the latest: every earlier entry
// is due before a new one, but a file held open (MaxWait) may have armed it
// for later.
func (w *Watcher) arm(now, due time.Time) {
	if w.armed && !w.armedFor.After(due) {
		return
	}
	w.settle.Stop()
	w.settle.Reset(due.Sub(now))
	w.armed, w.armedFor = true, due
}

// drop forgets a file that was deleted or moved away: it is not reported.
func (w *Watcher) drop(rel string) {
	delete(w.pending, rel)
	delete(w.modified, rel)
	if _, ok := w.growing[rel]; ok {
		delete(w.growing, rel)
		w.next = nil
	}
	if _, ok := w.ready[rel]; ok {
		delete(w.ready, rel)
		w.next = nil
	}
}

// collapse gives up on the individual files: one Rescan covers them all.
func (w *Watcher) collapse() {
	if !w.rescan {
		w.log.Debug("watch: too many pending files, asking for a rescan",
			zap.Int("max_pending", w.opts.MaxPending))
	}
	w.pending = make(map[string]*entry)
	w.ready = make(map[string]struct{})
	w.modified = make(map[string]time.Time)
	w.growing = make(map[string]struct{})
	w.rescan = true
	w.next = nil
}

// checkPending moves the files that stayed unchanged for the settle time to
// ready and re-arms the timer for the rest.
func (w *Watcher) checkPending(now time.Time) {
	var next time.Time
	for rel, e := range w.pending {
		if e.due.After(now) {
			if next.IsZero() || e.due.Before(next) {
				next = e.due
			}
			continue
		}
		fp, ok := w.stat(rel)
		switch {
		case !ok:
			delete(w.pending, rel)
		case fp == e.fp:
			delete(w.pending, rel)
			if !w.rescan {
				w.ready[rel] = struct{}{}
				w.next = nil
			}
		default:
			e.fp = fp
			e.due = now.Add(w.opts.Settle)
			if next.IsZero() || e.due.Before(next) {
				next = e.due
			}
		}
	}
	for rel, first := range w.modified {
		due := first.Add(w.opts.MaxWait)
		if due.After(now) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		delete(w.modified, rel)
		if _, ok := w.stat(rel); ok && !w.rescan {
			w.growing[rel] = struct{}{}
			w.next = nil
		}
	}
	if !next.IsZero() {
		w.settle.Reset(next.Sub(now))
		w.armed, w.armedFor = true, next
	}
}

// stat returns the fingerprint of a regular file; ok is false for anything
// else (gone, a symlink, a directory, a device...).
func (w *Watcher) stat(rel string) (fingerprint, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(w.root+"/"+rel, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fingerprint{}, false
	}
	return fingerprint{size: st.Size, mtimeNs: st.Mtim.Nano(), ino: st.Ino}, true
}

// setHealthy records the watcher's state and logs transitions once.
func (w *Watcher) setHealthy(reason string) {
	if reason == "" {
		if w.failedAt != "" {
			w.log.Info("watch: watching again", zap.String("after", w.failedAt), zap.Int("dirs", len(w.dirs)))
		}
		w.failedAt = ""
		w.reason.Store(nil)
		w.healthy.Store(true)
		return
	}
	if w.failedAt == "" {
		w.log.Warn("watch: cannot watch the tree, falling back to full passes", zap.String("reason", reason))
	} else {
		w.log.Debug("watch: still cannot watch the tree", zap.String("reason", reason))
	}
	w.failedAt = reason
	w.reason.Store(&reason)
	w.healthy.Store(false)
}

// failure kinds decide how soon to retry.
const (
	rootMissing = iota // cheap to look again: poll at RetryInterval
	lost               // a retry walks the tree: back off
)

// fail gives up the current watches: the caller is asked for a rescan, the
// watcher turns unhealthy and a retry is scheduled.
func (w *Watcher) fail(kind int, reason string) {
	w.teardown()
	w.pending = make(map[string]*entry)
	w.ready = make(map[string]struct{})
	w.modified = make(map[string]time.Time)
	w.growing = make(map[string]struct{})
	w.rescan = true
	w.next = nil
	w.setHealthy(reason)
	delay := w.opts.RetryInterval
	if kind == lost {
		if w.backoff == 0 || time.Since(w.upSince) > w.opts.MaxRetryInterval {
			w.backoff = w.opts.RetryInterval
		} else {
			w.backoff = min(2*w.backoff, w.opts.MaxRetryInterval)
		}
		delay = w.backoff
	}
	w.retry.Reset(delay)
}

// recover tries to watch the tree again; on success the caller is asked for
// a rescan, since anything may have happened in between.
func (w *Watcher) recover() {
	if w.start() {
		w.rescan = true
		w.next = nil
	}
}

// start creates an inotify instance and watches the whole tree. It reports
// whether that worked; on failure fail has scheduled a retry.
func (w *Watcher) start() bool {
	var st unix.Stat_t
	if err := unix.Lstat(w.root, &st); err != nil {
		w.fail(rootMissing, "root: "+err.Error())
		return false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		w.fail(rootMissing, "root is not a directory (symlinks are not followed)")
		return false
	}
	in, err := w.newInstance()
	if err != nil {
		w.fail(lost, err.Error())
		return false
	}
	w.ino = in
	w.dirs = make(map[int32]*dir)
	w.top = nil
	w.watchTree(nil, "", false)
	if w.ino == nil {
		return false // watchTree failed and scheduled a retry
	}
	w.upSince = time.Now()
	w.setHealthy("")
	return true
}

// teardown closes the inotify instance, which frees all its watches.
func (w *Watcher) teardown() {
	if w.ino == nil {
		return
	}
	w.ino.close()
	w.ino = nil
	w.top = nil
	w.dirs = nil
}
