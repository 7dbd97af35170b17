package watch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// These tests use real inotify on temporary directories. Timeouts are long
// because the machine running them may be busy; the assertions are about what
// is reported, not how fast.

const waitLimit = 15 * time.Second

// recorder collects what a Watcher delivers.
type recorder struct {
	mu      sync.Mutex
	batches []Batch
	at      []time.Time
	closed  chan struct{}
}

func start(t *testing.T, root string, opts Options) (*Watcher, *recorder) {
	t.Helper()
	if opts.Settle == 0 {
		opts.Settle = 100 * time.Millisecond
	}
	if opts.RetryInterval == 0 {
		opts.RetryInterval = 100 * time.Millisecond
	}
	w, err := New(root, opts, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		for b := range w.Events() {
			r.mu.Lock()
			r.batches = append(r.batches, b)
			r.at = append(r.at, time.Now())
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
		<-r.closed
	})
	return w, r
}

// count is how many times rel was reported.
func (r *recorder) count(rel string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		for _, p := range b.Paths {
			if p == rel {
				n++
			}
		}
	}
	return n
}

// firstAt is when rel was first reported (zero if never).
func (r *recorder) firstAt(rel string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.batches {
		for _, p := range b.Paths {
			if p == rel {
				return r.at[i]
			}
		}
	}
	return time.Time{}
}

func (r *recorder) rescans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		if b.Rescan {
			n++
		}
	}
	return n
}

func (r *recorder) all() []Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Batch(nil), r.batches...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *recorder) waitPaths(t *testing.T, rels ...string) {
	t.Helper()
	for _, rel := range rels {
		eventually(t, "report of "+rel, func() bool { return r.count(rel) > 0 })
	}
}

func (r *recorder) waitRescans(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d rescan batches", n), func() bool { return r.rescans() >= n })
}

// quiet lets the watcher run for a while so that anything wrongly reported
// would show.
func quiet(opts Options) {
	time.Sleep(5*opts.Settle + 300*time.Millisecond)
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCreateWriteClose(t *testing.T) {
	root := t.TempDir()
	w, r := start(t, root, Options{})
	if !w.Healthy() || w.Reason() != "" {
		t.Fatalf("not healthy on an existing root: %q", w.Reason())
	}
	write(t, filepath.Join(root, "a.txt"), "hello")
	r.waitPaths(t, "a.txt")
	quiet(w.opts)
	if n := r.count("a.txt"); n != 1 {
		t.Fatalf("a.txt reported %d times, want once", n)
	}
	if n := r.rescans(); n != 0 {
		t.Fatalf("%d rescans, want none", n)
	}
}

func TestExistingFilesAreNotReported(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "old"), "x")
	if err := os.MkdirAll(filepath.Join(root, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "d/e/old"), "x")
	w, r := start(t, root, Options{})
	write(t, filepath.Join(root, "d/e/new"), "x")
	r.waitPaths(t, "d/e/new")
	quiet(w.opts)
	if r.count("old")+r.count("d/e/old") != 0 {
		t.Fatalf("files that existed before New were reported: %+v", r.all())
	}
}

func TestRenameIntoPlace(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, r := start(t, root, Options{})

	// From outside the tree: only IN_MOVED_TO is seen.
	write(t, filepath.Join(outside, "b"), "bbb")
	if err := os.Rename(filepath.Join(outside, "b"), filepath.Join(root, "sub/b")); err != nil {
		t.Fatal(err)
	}
	// Write to a temporary name in the tree, then rename: the final name
	// is reported, the temporary one is not.
	write(t, filepath.Join(root, ".c.tmp"), "ccc")
	if err := os.Rename(filepath.Join(root, ".c.tmp"), filepath.Join(root, "c")); err != nil {
		t.Fatal(err)
	}
	r.waitPaths(t, "sub/b", "c")
	quiet(w.opts)
	if n := r.count(".c.tmp"); n != 0 {
		t.Fatalf("the temporary name was reported %d times", n)
	}
}

func TestNestedNewDirectories(t *testing.T) {
	root := t.TempDir()
	w, r := start(t, root, Options{})
	var want []string
	// Many trees, each created and filled at once, so that some files are
	// created before their directory is watched and are found by its
	// listing, and others after, through events.
	for i := range 20 {
		top := "t" + strconv.Itoa(i)
		if err := os.MkdirAll(filepath.Join(root, top, "b/c"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, rel := range []string{top + "/b/c/f", top + "/b/g", top + "/h"} {
			write(t, filepath.Join(root, rel), rel)
			want = append(want, rel)
		}
	}
	r.waitPaths(t, want...)
	// The new directories are watched: a later file in the deepest one is
	// reported through an event.
	write(t, filepath.Join(root, "t7/b/c/later"), "x")
	r.waitPaths(t, "t7/b/c/later")
	if !w.Healthy() {
		t.Fatal("unhealthy")
	}
	if n := r.rescans(); n != 0 {
		t.Fatalf("%d rescans, want none", n)
	}
}

func TestMovedDirectoryKeepsPathsRight(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(root, "a/deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, r := start(t, root, Options{})
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "b/deep/f"), "x")
	r.waitPaths(t, "b/deep/f")

	// A directory moved in from outside: its files are new paths.
	if err := os.MkdirAll(filepath.Join(base, "out/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(base, "out/x/y"), "y")
	if err := os.Rename(filepath.Join(base, "out"), filepath.Join(root, "in")); err != nil {
		t.Fatal(err)
	}
	r.waitPaths(t, "in/x/y")

	// A directory renamed over an empty one: the moved one is watched.
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	// (os.Rename refuses an existing directory; rename(2) replaces an empty one.)
	if err := unix.Rename(filepath.Join(root, "in"), filepath.Join(root, "empty")); err != nil {
		t.Fatal(err)
	}
	r.waitPaths(t, "empty/x/y")
	time.Sleep(200 * time.Millisecond)
	write(t, filepath.Join(root, "empty/x/z"), "z")
	r.waitPaths(t, "empty/x/z")

	// A directory moved out is no longer watched: nothing under it is
	// reported, under any name.
	if err := os.Rename(filepath.Join(root, "b"), filepath.Join(base, "gone")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	write(t, filepath.Join(base, "gone/deep/g"), "x")
	write(t, filepath.Join(root, "marker"), "x")
	r.waitPaths(t, "marker")
	quiet(Options{Settle: 100 * time.Millisecond})
	for _, b := range r.all() {
		for _, p := range b.Paths {
			if strings.HasSuffix(p, "/g") {
				t.Fatalf("a file outside the tree was reported as %q", p)
			}
		}
	}
}

func TestSlowWriterIsReportedOnceAfterItFinishes(t *testing.T) {
	root := t.TempDir()
	opts := Options{Settle: 150 * time.Millisecond}
	_, r := start(t, root, opts)

	// One open file written slowly: nothing until it is closed.
	f, err := os.Create(filepath.Join(root, "slow"))
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := f.WriteString("0123456789"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if n := r.count("slow"); n != 0 {
		t.Fatalf("reported %d times while still open", n)
	}
	closed := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// A writer that reopens and appends faster than the settle time:
	// reported once, after its last append.
	var last time.Time
	for range 12 {
		g, err := os.OpenFile(filepath.Join(root, "append"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.WriteString("line\n"); err != nil {
			t.Fatal(err)
		}
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		last = time.Now()
		time.Sleep(40 * time.Millisecond)
	}
	r.waitPaths(t, "slow", "append")
	quiet(opts)
	if n := r.count("slow"); n != 1 {
		t.Fatalf("slow reported %d times, want once", n)
	}
	if at := r.firstAt("slow"); at.Before(closed) {
		t.Fatalf("slow reported before it was closed")
	}
	if n := r.count("append"); n != 1 {
		// Under heavy load a pause between appends can exceed the settle
		// time; that is a true report of a settled state, but say so.
		t.Fatalf("append reported %d times, want once (batches %+v)", n, r.all())
	}
	if at := r.firstAt("append"); at.Before(last) {
		t.Fatalf("append reported before its last write")
	}
}

func TestDeletionsAreNotReported(t *testing.T) {
	root := t.TempDir()
	opts := Options{Settle: 200 * time.Millisecond}
	_, r := start(t, root, opts)

	// Deleted before it settled: never reported.
	write(t, filepath.Join(root, "short"), "x")
	if err := os.Remove(filepath.Join(root, "short")); err != nil {
		t.Fatal(err)
	}
	// Reported, then deleted, with its directory: nothing more.
	if err := os.MkdirAll(filepath.Join(root, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "d/e/f"), "x")
	r.waitPaths(t, "d/e/f")
	if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "marker"), "x")
	r.waitPaths(t, "marker")
	quiet(opts)
	if n := r.count("short"); n != 0 {
		t.Fatalf("a file deleted before it settled was reported %d times", n)
	}
	if n := r.count("d/e/f"); n != 1 {
		t.Fatalf("d/e/f reported %d times, want once", n)
	}
	if n := r.rescans(); n != 0 {
		t.Fatalf("%d rescans, want none", n)
	}
}

func TestSymlinksAreNotFollowed(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	w, r := start(t, root, Options{})
	// A symlink created later, to a directory and to a file.
	if err := os.Symlink(outside, filepath.Join(root, "link2")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(outside, "secret"), "x")
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "filelink")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(outside, "secret2"), "x")
	write(t, filepath.Join(root, "marker"), "x")
	r.waitPaths(t, "marker")
	quiet(w.opts)
	for _, b := range r.all() {
		for _, p := range b.Paths {
			if p != "marker" {
				t.Fatalf("reported %q", p)
			}
		}
	}

	// A root that is a symlink is not watched.
	w2, err := New(filepath.Join(root, "link"), Options{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if w2.Healthy() {
		t.Fatal("a symlinked root is watched")
	}
}

func TestHardLinkIntoPlace(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(base, "src"), "x")
	_, r := start(t, root, Options{})
	if err := os.Link(filepath.Join(base, "src"), filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	r.waitPaths(t, "linked")
}

func TestMissingRootAtStartAndRootRemoved(t *testing.T) {
	root := filepath.Join(t.TempDir(), "later")
	w, r := start(t, root, Options{})
	if w.Healthy() || w.Reason() == "" {
		t.Fatalf("healthy without a root (reason %q)", w.Reason())
	}
	if err := os.MkdirAll(filepath.Join(root, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Found again: a rescan covers whatever was written before the watch.
	r.waitRescans(t, 1)
	eventually(t, "healthy", w.Healthy)
	write(t, filepath.Join(root, "x/f"), "x")
	r.waitPaths(t, "x/f")

	// The root goes away: unhealthy and a rescan; it comes back: a rescan
	// again and events flow.
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	r.waitRescans(t, 2)
	eventually(t, "unhealthy", func() bool { return !w.Healthy() })
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	r.waitRescans(t, 3)
	eventually(t, "healthy", w.Healthy)
	write(t, filepath.Join(root, "g"), "x")
	r.waitPaths(t, "g")

	// Moved away counts as gone too.
	if err := os.Rename(root, root+".old"); err != nil {
		t.Fatal(err)
	}
	r.waitRescans(t, 4)
	write(t, filepath.Join(root+".old", "h"), "x")
	quiet(w.opts)
	if r.count("h") != 0 {
		t.Fatal("a file under the moved-away root was reported")
	}
}

func TestWatchLimitFallsBack(t *testing.T) {
	root := t.TempDir()
	opts := Options{MaxWatches: 3, RetryInterval: 50 * time.Millisecond, MaxRetryInterval: 200 * time.Millisecond}
	w, r := start(t, root, opts)
	if !w.Healthy() {
		t.Fatal("unhealthy with one directory")
	}
	// Two more directories fit, the third does not.
	if err := os.MkdirAll(filepath.Join(root, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "a/b/f"), "x")
	r.waitPaths(t, "a/b/f")
	if err := os.Mkdir(filepath.Join(root, "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.waitRescans(t, 1)
	eventually(t, "unhealthy", func() bool { return !w.Healthy() })
	// Retrying (with backoff) keeps failing while the tree is too big.
	time.Sleep(500 * time.Millisecond)
	if w.Healthy() {
		t.Fatal("healthy with too many directories")
	}
	// Back within the limit: it recovers by itself and asks for a rescan.
	if err := os.Remove(filepath.Join(root, "c")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", w.Healthy)
	r.waitRescans(t, 2)
	write(t, filepath.Join(root, "a/g"), "x")
	r.waitPaths(t, "a/g")
}

func TestQueueOverflowFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("creates ~16,000 files")
	}
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || max > 100000 {
		t.Skipf("max_queued_events %q", b)
	}
	root := t.TempDir()
	// Hold the reader so that the kernel queue fills up.
	gate := make(chan struct{})
	testReadGate = gate
	w, r := start(t, root, Options{})
	testReadGate = nil
	// Each file gives IN_CREATE and IN_CLOSE_WRITE.
	for i := range max/2 + 100 {
		f, err := os.Create(filepath.Join(root, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	close(gate)
	r.waitRescans(t, 1)
	// It rebuilds its watches and asks for a rescan once more.
	r.waitRescans(t, 2)
	eventually(t, "healthy", w.Healthy)
	write(t, filepath.Join(root, "after"), "x")
	r.waitPaths(t, "after")
}

func TestPendingSetIsBounded(t *testing.T) {
	root := t.TempDir()
	opts := Options{MaxPending: 10, Settle: 500 * time.Millisecond}
	w, r := start(t, root, opts)
	for i := range 50 {
		write(t, filepath.Join(root, strconv.Itoa(i)), "x")
	}
	r.waitRescans(t, 1)
	quiet(opts)
	total := 0
	for _, b := range r.all() {
		if len(b.Paths) > opts.MaxPending {
			t.Fatalf("a batch of %d paths, cap %d", len(b.Paths), opts.MaxPending)
		}
		if b.Rescan && len(b.Paths) != 0 {
			t.Fatal("a rescan batch with paths")
		}
		total += len(b.Paths)
	}
	if total > opts.MaxPending {
		t.Fatalf("%d paths reported beside the rescan, cap %d", total, opts.MaxPending)
	}
	if !w.Healthy() {
		t.Fatal("a collapsed pending set is no failure of the watch")
	}
	// Still watching.
	write(t, filepath.Join(root, "after"), "x")
	r.waitPaths(t, "after")
}

func TestSlowConsumerGetsCoalescedBatches(t *testing.T) {
	root := t.TempDir()
	w, err := New(root, Options{Settle: 50 * time.Millisecond}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 30 {
		write(t, filepath.Join(root, strconv.Itoa(i)), "x")
	}
	// Nobody reads for a while; then one receive gets everything that
	// settled, sorted.
	time.Sleep(time.Second)
	seen := map[string]bool{}
	deadline := time.After(waitLimit)
	for len(seen) < 30 {
		select {
		case b := <-w.Events():
			for i, p := range b.Paths {
				if i > 0 && b.Paths[i-1] >= p {
					t.Fatalf("paths not sorted: %v", b.Paths)
				}
				seen[p] = true
			}
		case <-deadline:
			t.Fatalf("saw %d of 30", len(seen))
		}
	}
}

func TestCloseClosesEvents(t *testing.T) {
	w, err := New(t.TempDir(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("Events still open after Close")
	}
	if _, err := New("", Options{}, nil); err == nil {
		t.Fatal("an empty root was accepted")
	}
}

// TestConcurrentChurnMissesNothing has writers create nested directories,
// write, rename and delete files and move directories around at once; every
// file that exists at the end must have been reported after its last change,
// and no reported path may leave the tree.
func TestConcurrentChurnMissesNothing(t *testing.T) {
	root := t.TempDir()
	opts := Options{Settle: 100 * time.Millisecond}
	_, r := start(t, root, opts)
	var wg sync.WaitGroup
	var mu sync.Mutex
	lastChange := map[string]time.Time{}
	changed := func(rel string) {
		mu.Lock()
		lastChange[rel] = time.Now()
		mu.Unlock()
	}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				dir := fmt.Sprintf("g%d/i%d/a/b", g, i)
				if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
					t.Error(err)
					return
				}
				for k := range 3 {
					rel := fmt.Sprintf("%s/f%d", dir, k)
					if err := os.WriteFile(filepath.Join(root, rel), []byte(rel), 0o644); err != nil {
						t.Error(err)
						return
					}
					changed(rel)
				}
				switch i % 3 {
				case 1: // delete one file
					_ = os.Remove(filepath.Join(root, dir, "f0"))
					mu.Lock()
					delete(lastChange, dir+"/f0")
					mu.Unlock()
				case 2: // move the whole i-directory: its files get new paths
					from := fmt.Sprintf("g%d/i%d", g, i)
					to := fmt.Sprintf("g%d/m%d", g, i)
					if err := os.Rename(filepath.Join(root, from), filepath.Join(root, to)); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for k := range 3 {
						delete(lastChange, fmt.Sprintf("%s/f%d", dir, k))
						lastChange[fmt.Sprintf("%s/a/b/f%d", to, k)] = time.Now()
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	want := make(map[string]time.Time, len(lastChange))
	for k, v := range lastChange {
		want[k] = v
	}
	mu.Unlock()
	eventually(t, "every surviving file reported", func() bool {
		for rel := range want {
			if r.count(rel) == 0 {
				return false
			}
		}
		return true
	})
	quiet(opts)
	for _, b := range r.all() {
		if b.Rescan {
			t.Errorf("unexpected rescan")
		}
		for _, p := range b.Paths {
			if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
				t.Errorf("reported path %q leaves the tree", p)
			}
			if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
				if _, ok := want[p]; ok {
					t.Errorf("reported %q, which should exist: %v", p, err)
				}
			}
		}
	}
}

// TestKernelWatchLimitFallsBack meets the kernel's own limit (ENOSPC from
// inotify_add_watch), not Options.MaxWatches: it runs itself again in a new
// user namespace, where fs.inotify limits are per namespace
// (/proc/sys/user/max_inotify_watches) and can be lowered without touching
// the rest of the machine.
func TestKernelWatchLimitFallsBack(t *testing.T) {
	const env = "FLOTTA_WATCH_TEST_IN_USERNS"
	if os.Getenv(env) == "" {
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("no unshare(1)")
		}
		cmd := exec.Command(unshare, "--user", "--map-root-user", os.Args[0],
			"-test.run", "^TestKernelWatchLimitFallsBack$", "-test.count", "1", "-test.v")
		cmd.Env = append(os.Environ(), env+"=1")
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), "SKIP-USERNS") {
			t.Skipf("cannot lower the limit in a user namespace: %s", out)
		}
		if err != nil {
			t.Fatalf("in a user namespace: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "--- PASS: TestKernelWatchLimitFallsBack") {
			t.Fatalf("the test did not run in the user namespace:\n%s", out)
		}
		return
	}
	if err := os.WriteFile("/proc/sys/user/max_inotify_watches", []byte("4"), 0o644); err != nil {
		t.Skipf("SKIP-USERNS: %v", err)
	}
	root := t.TempDir()
	for _, d := range []string{"a", "b", "c", "d", "e"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, r := start(t, root, Options{RetryInterval: 50 * time.Millisecond, MaxRetryInterval: 200 * time.Millisecond})
	if w.Healthy() {
		t.Fatal("healthy with 6 directories and a limit of 4 watches")
	}
	if !strings.Contains(w.Reason(), "max_user_watches") {
		t.Fatalf("reason %q, want the kernel's watch limit", w.Reason())
	}
	// Within the limit again: it recovers and asks for a rescan.
	for _, d := range []string{"c", "d", "e"} {
		if err := os.Remove(filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "healthy", w.Healthy)
	r.waitRescans(t, 1)
	write(t, filepath.Join(root, "a/f"), "x")
	r.waitPaths(t, "a/f")
	// One directory too many while watching: unhealthy and a rescan.
	if err := os.MkdirAll(filepath.Join(root, "x/y"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.waitRescans(t, 2)
	eventually(t, "unhealthy", func() bool { return !w.Healthy() })
}

func TestFileHeldOpenIsReportedAsGrowingAfterMaxWait(t *testing.T) {
	root := t.TempDir()
	w, r := start(t, root, Options{MaxWait: 400 * time.Millisecond})
	_ = w
	f, err := os.Create(filepath.Join(root, "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	began := time.Now()
	deadline := began.Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := f.WriteString("a line\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		r.mu.Lock()
		var got []string
		for _, b := range r.batches {
			got = append(got, b.Growing...)
			if len(b.Paths) > 0 {
				t.Errorf("a file held open was reported as settled: %v", b.Paths)
			}
		}
		r.mu.Unlock()
		if len(got) > 0 {
			if got[0] != "app.log" {
				t.Fatalf("growing: %v", got)
			}
			if time.Since(began) < 400*time.Millisecond {
				t.Fatalf("reported before MaxWait: %s", time.Since(began))
			}
			return
		}
	}
	t.Fatal("a file written to and held open was never reported")
}

func TestWithoutMaxWaitWritesAreNotWatched(t *testing.T) {
	root := t.TempDir()
	_, r := start(t, root, Options{})
	f, err := os.Create(filepath.Join(root, "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 10 {
		if _, err := f.WriteString("a line\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	quiet(Options{Settle: 100 * time.Millisecond})
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches) != 0 {
		t.Fatalf("reported without a close: %+v", r.batches)
	}
}

// A file held open arms the timer for MaxWait; a file closed meanwhile must
// still be reported after its settle time, not after MaxWait.
func TestClosedFileIsNotDelayedByAFileHeldOpen(t *testing.T) {
	root := t.TempDir()
	_, r := start(t, root, Options{MaxWait: time.Hour})
	open, err := os.Create(filepath.Join(root, "held.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(root, "done.txt"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, b := range r.batches {
			if slices.Contains(b.Paths, "done.txt") {
				r.mu.Unlock()
				return
			}
		}
		r.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("a closed file waited for the MaxWait of a file held open")
}
