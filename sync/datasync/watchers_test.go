package datasync

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The watcher tests use real inotify. Their intervals are an hour, so that
// only an event (or a rescan the watcher asked for) can explain an upload;
// full passes are counted through onPass to prove it.

// runEngine runs e.Run until the test ends.
func runEngine(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
}

// countFullPasses counts the full passes of mapping id from now on (set it
// before Run and Configure).
func countFullPasses(e *Engine, id string) *atomic.Int64 {
	var n atomic.Int64
	e.hooks.onPass = func(got string, _ PassOptions, partial bool) {
		if got == id && !partial {
			n.Add(1)
		}
	}
	return &n
}

// inotifyFDs counts this process's inotify instances.
func inotifyFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, de := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil && l == "anon_inode:inotify" {
			n++
		}
	}
	return n
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}

// uploadLog records which files the engine started uploading, and how often.
type uploadLog struct {
	mu sync.Mutex
	n  map[string]int
}

func logUploads(e *Engine) *uploadLog {
	l := &uploadLog{n: map[string]int{}}
	e.hooks.beforeUpload = func(rel string) {
		l.mu.Lock()
		l.n[rel]++
		l.mu.Unlock()
	}
	return l
}

func (l *uploadLog) count(rel string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[rel]
}

const eventWait = 10 * time.Second // far below the hour a pass would take

func TestWatchUploadsChangesWithoutAPass(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	f.eng.hooks.watch.Settle = 500 * time.Millisecond
	full := countFullPasses(f.eng, "e1")
	uploads := logUploads(f.eng)
	f.write("out/old", []byte("before Run"))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	uploaded := func(key string, want []byte) func() bool {
		return func() bool { b, err := f.get(key); return err == nil && bytes.Equal(b, want) }
	}
	require.Eventually(t, uploaded("p/old", []byte("before Run")), eventWait, 20*time.Millisecond, "Run's first pass")
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	assert.True(t, watched(f.eng, "e1"), "a healthy watcher covers the mapping")
	f.count.Reset()

	// A new file, closed after writing.
	f.write("out/new", []byte("new"))
	require.Eventually(t, uploaded("p/new", []byte("new")), eventWait, 20*time.Millisecond, "a new file goes up on its event")

	// A new subdirectory and its files (written before its watch existed).
	f.write("out/sub/deeper/file", []byte("deep"))
	require.Eventually(t, uploaded("p/sub/deeper/file", []byte("deep")), eventWait, 20*time.Millisecond, "a new subdirectory is watched")

	// A file still being written is not uploaded until it is closed and settled.
	fh, err := os.Create(filepath.Join(f.root, "out/growing"))
	require.NoError(t, err)
	_, err = fh.WriteString("first half, ")
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond) // three settle times with the file open
	assert.Zero(t, uploads.count("growing"), "an open file is not uploaded")
	_, err = fh.WriteString("second half")
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	require.Eventually(t, uploaded("p/growing", []byte("first half, second half")), eventWait, 20*time.Millisecond)

	// Closed, then changed again within the settle time: one upload, of the last version.
	f.write("out/rewritten", []byte("v1"))
	time.Sleep(150 * time.Millisecond)
	f.write("out/rewritten", []byte("v2, longer"))
	require.Eventually(t, uploaded("p/rewritten", []byte("v2, longer")), eventWait, 20*time.Millisecond)
	time.Sleep(700 * time.Millisecond) // past another settle time: nothing more comes

	assert.Equal(t, 1, uploads.count("growing"))
	assert.Equal(t, 1, uploads.count("rewritten"), "one upload once the file settled")
	assert.Equal(t, int64(1), full.Load(), "only Run's first pass was a full pass")
	assert.Equal(t, f.count.Writes(), f.count.Requests(), "events cost a PUT each: no listing, no HEAD")
	assert.Equal(t, int64(4), f.count.Writes())
}

func TestWatchSourceCreatedLater(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	full := countFullPasses(f.eng, "e1")
	f.configure(f.egress("e1", "later", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond,
		"a source that does not exist yet is normal")
	assert.False(t, watched(f.eng, "e1"), "nothing to watch yet: passes every Interval")

	// The workload writes: the watcher finds the directory, the engine
	// rescans it, and from then on events cover it.
	f.write("later/a", []byte("a"))
	require.Eventually(t, func() bool { _, err := f.get("p/a"); return err == nil }, eventWait, 20*time.Millisecond)
	require.Eventually(t, func() bool { return watched(f.eng, "e1") }, eventWait, 20*time.Millisecond)
	passes := full.Load()
	assert.Equal(t, int64(2), passes, "Run's first pass and the rescan once the directory appeared")

	f.write("later/b", []byte("b"))
	require.Eventually(t, func() bool { _, err := f.get("p/b"); return err == nil }, eventWait, 20*time.Millisecond)
	assert.Equal(t, passes, full.Load(), "b went up on its event")
}

func TestWatchFollowsTheMappings(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	const reader = "(*Engine).readWatch"
	fds, readers := inotifyFDs(t), goroutinesIn(reader)
	for _, d := range []string{"out", "out2", "moved", "in"} {
		require.NoError(t, os.MkdirAll(filepath.Join(f.root, d), 0o755))
	}
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return watched(f.eng, "e1") && watched(f.eng, "e2") }, eventWait, 10*time.Millisecond)
	assert.False(t, watched(f.eng, "i1"), "ingress targets are not watched")
	assert.Equal(t, fds+2, inotifyFDs(t))
	// A reader's stack names readWatch only once its goroutine has run.
	require.Eventually(t, func() bool { return goroutinesIn(reader) == readers+2 }, eventWait, 10*time.Millisecond)

	// The same configuration again (the worker resends it): same watchers.
	watcherOf := func(id string) *mappingWatch {
		f.eng.watchers.mu.Lock()
		defer f.eng.watchers.mu.Unlock()
		return f.eng.watchers.byID[id]
	}
	before := watcherOf("e1")
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	assert.Same(t, before, watcherOf("e1"))

	// e1's directory changes: the new one is watched, the old one no more.
	f.configure(f.egress("e1", "moved", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	require.Eventually(t, func() bool { return watched(f.eng, "e1") }, eventWait, 10*time.Millisecond)
	assert.Equal(t, fds+2, inotifyFDs(t))
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	f.write("moved/x", []byte("x"))
	require.Eventually(t, func() bool { _, err := f.get("p/x"); return err == nil }, eventWait, 20*time.Millisecond)
	f.write("out/y", []byte("y"))
	time.Sleep(time.Second)
	_, err := f.get("p/y")
	assert.Error(t, err, "the old directory is not watched any more")

	// e2 removed: its watcher is closed, its reader returns.
	f.configure(f.egress("e1", "moved", "p"), f.ingress("i1", "in", "r"))
	assert.Equal(t, fds+1, inotifyFDs(t))
	require.Eventually(t, func() bool { return goroutinesIn(reader) == readers+1 }, eventWait, 10*time.Millisecond)

	// Sync off, then on again.
	require.NoError(t, f.eng.Configure(nil, f.mapping))
	assert.Equal(t, fds, inotifyFDs(t))
	require.NoError(t, f.eng.Configure(f.ep, f.mapping))
	assert.Equal(t, fds+1, inotifyFDs(t))
	assert.True(t, watched(f.eng, "e1"))

	// Close releases everything, Run running or not.
	require.NoError(t, f.eng.Close())
	assert.Equal(t, fds, inotifyFDs(t))
	assert.Equal(t, readers, goroutinesIn(reader))
	assert.Equal(t, 0, goroutinesIn("watch.(*Watcher).run"))
}

func TestWatchFallsBackToPasses(t *testing.T) {
	t.Run("watch limit: passes every Interval", func(t *testing.T) {
		f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = 200*time.Millisecond, time.Hour })
		f.eng.hooks.watch.MaxWatches = 2
		full := countFullPasses(f.eng, "e1")
		f.write("out/a/1", []byte("1"))
		f.configure(f.egress("e1", "out", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { _, err := f.get("p/a/1"); return err == nil }, eventWait, 20*time.Millisecond)
		require.True(t, watched(f.eng, "e1"))
		time.Sleep(time.Second) // five Intervals
		assert.Equal(t, int64(1), full.Load(), "watched: no full pass before WatchedInterval")

		// A third directory is more than the watcher may watch.
		f.write("out/b/2", []byte("2"))
		require.Eventually(t, func() bool { return !watched(f.eng, "e1") }, eventWait, 10*time.Millisecond)
		require.Eventually(t, func() bool { _, err := f.get("p/b/2"); return err == nil }, eventWait, 20*time.Millisecond)
		n := full.Load()
		time.Sleep(time.Second)
		assert.GreaterOrEqual(t, full.Load()-n, int64(3), "unwatched: a full pass every Interval")
		f.write("out/b/3", []byte("3"))
		require.Eventually(t, func() bool { _, err := f.get("p/b/3"); return err == nil }, eventWait, 20*time.Millisecond,
			"the passes move what events no longer report")
	})

	t.Run("too many pending files: one full pass", func(t *testing.T) {
		f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
		f.eng.hooks.watch.MaxPending = 3
		f.eng.hooks.watch.Settle = time.Second // all ten are pending at once
		full := countFullPasses(f.eng, "e1")
		require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
		f.configure(f.egress("e1", "out", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { return watched(f.eng, "e1") && full.Load() == 1 }, eventWait, 10*time.Millisecond)
		require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
		for i := range 10 {
			f.write(filepath.Join("out", string(rune('a'+i))), []byte{byte('a' + i)})
		}
		require.Eventually(t, func() bool { return len(f.listKeys("p/")) == 10 }, eventWait, 20*time.Millisecond)
		// Each time more than MaxPending files wait, the watcher drops them
		// and asks for one rescan: ten files make one to three, and requests
		// that arrive during a pass in flight fold into the next one.
		n := full.Load()
		assert.GreaterOrEqual(t, n, int64(2), "the rescan the watcher asked for")
		assert.LessOrEqual(t, n, int64(4), "no more than one rescan per overflow")
		assert.True(t, watched(f.eng, "e1"), "still watching")
	})
}

// TestWatchFailedUploadsBringThePassesBack: an upload an event started fails
// (the server is down); while it waits for its retry the mapping gets its
// full pass every Interval, as without a watcher, and WatchedInterval again
// once it went up.
func TestWatchFailedUploadsBringThePassesBack(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = 300*time.Millisecond, time.Hour })
	full := countFullPasses(f.eng, "e1")
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return watched(f.eng, "e1") && f.status("e1").LastSuccess.After(time.Time{}) },
		eventWait, 10*time.Millisecond)

	n := full.Load()
	f.srv.Stop()
	f.write("out/a", []byte("a"))
	require.Eventually(t, func() bool { return !watched(f.eng, "e1") }, eventWait, 10*time.Millisecond,
		"a file waits for its retry: passes every Interval")
	f.srv.Restart()
	require.Eventually(t, func() bool { _, err := f.get("p/a"); return err == nil }, eventWait, 20*time.Millisecond)
	assert.Greater(t, full.Load(), n, "a full pass retried it")
	require.Eventually(t, func() bool { return watched(f.eng, "e1") }, eventWait, 10*time.Millisecond, "nothing owed any more")

	// A failed file that is deleted meanwhile is owed no more either.
	f.srv.Stop()
	f.write("out/gone", []byte("gone"))
	require.Eventually(t, func() bool { return !watched(f.eng, "e1") }, eventWait, 10*time.Millisecond)
	require.NoError(t, os.Remove(filepath.Join(f.root, "out/gone")))
	require.Eventually(t, func() bool { return watched(f.eng, "e1") }, eventWait, 10*time.Millisecond)
	f.srv.Restart()
}

// TestWatchServerDownAtStart: the first pass fails as a whole (no file was
// even tried: the adoption listing failed); the mapping keeps its passes
// every Interval until one succeeds.
func TestWatchServerDownAtStart(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = 300*time.Millisecond, time.Hour })
	f.write("out/a", []byte("a"))
	f.srv.Stop()
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastError != "" }, eventWait, 10*time.Millisecond)
	require.Eventually(t, func() bool { return !watched(f.eng, "e1") }, eventWait, 10*time.Millisecond,
		"a failed pass: passes every Interval")
	f.srv.Restart()
	require.Eventually(t, func() bool { _, err := f.get("p/a"); return err == nil }, eventWait, 20*time.Millisecond)
	require.Eventually(t, func() bool { return watched(f.eng, "e1") }, eventWait, 10*time.Millisecond)
}

func TestWatchOff(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Interval, o.NoWatch = time.Hour, true })
	fds := inotifyFDs(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	f.write("out/a", []byte("a"))
	time.Sleep(time.Second)
	_, err := f.get("p/a")
	assert.Error(t, err, "no watcher: the file waits for the next pass")
	assert.Equal(t, fds, inotifyFDs(t))
	assert.False(t, watched(f.eng, "e1"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("a"), f.mustGet("p/a"))
}

// TestUnitWatch is the wiring on the in-memory bucket (runs under -short):
// an event uploads at once, and the watcher goes with its mapping.
func TestUnitWatch(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	full := countFullPasses(f.eng, "e")
	fds := inotifyFDs(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
	f.configure(f.egress("e", "out", "dev"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return watched(f.eng, "e") && f.status("e").LastSuccess.After(time.Time{}) },
		eventWait, 10*time.Millisecond)
	lists := f.be.lists.Load()
	f.write("out/d/new", []byte("new"))
	require.Eventually(t, func() bool { _, ok := f.be.data("dev/d/new"); return ok }, eventWait, 10*time.Millisecond)
	assert.Equal(t, int64(1), full.Load())
	assert.Equal(t, lists, f.be.lists.Load(), "no listing")
	assert.Equal(t, fds+1, inotifyFDs(t))
	f.configure()
	assert.Equal(t, fds, inotifyFDs(t))
	assert.False(t, watched(f.eng, "e"))
}

// A mapping owed a prompt pass when the engine closes under a running Run
// must not wake Run again and again: each such pass fails at once.
func TestClosedEngineDoesNotSpin(t *testing.T) {
	f := newFixture(t)
	core, logs := observer.New(zap.DebugLevel)
	f.eng.log = zap.New(core)
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)

	require.NoError(t, f.eng.Close())
	// What a notification stream that ends with the engine does.
	f.eng.passSoon([]string{"e1"})
	time.Sleep(300 * time.Millisecond)
	failed := logs.FilterMessage("sync pass failed").Len()
	assert.LessOrEqual(t, failed, 1, "passes tried after Close")
}
