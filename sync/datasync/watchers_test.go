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

// Whether the scheduler treats a mapping as watched has one public effect,
// which the tests below observe: with a short Interval and WatchedInterval
// an hour, a watched mapping gets no full pass, an unwatched one gets one
// every Interval.

// quiet reports whether no full pass (counted by full) started during four
// Intervals: the mapping is watched.
func quiet(full *atomic.Int64, interval time.Duration) bool {
	n := full.Load()
	time.Sleep(4 * interval)
	return full.Load() == n
}

// passing reports whether full passes come every Interval, two within six
// Intervals: the mapping is not watched.
func passing(full *atomic.Int64, interval time.Duration) bool {
	n := full.Load()
	for end := time.Now().Add(6 * interval); time.Now().Before(end); time.Sleep(interval / 10) {
		if full.Load() >= n+2 {
			return true
		}
	}
	return full.Load() >= n+2
}

// inotifyFDs counts this process's inotify instances.
func inotifyFDs(t *testing.T) int {
	t.Helper()
	return len(inotifySet(t))
}

// inotifySet lists the descriptors of this process's inotify instances: a
// watcher kept is the same descriptor, a new one another.
func inotifySet(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var out []string
	for _, de := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil && l == "anon_inode:inotify" {
			out = append(out, de.Name())
		}
	}
	return out
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

// watchInterval is the Interval of the tests that observe the schedule.
const watchInterval = 100 * time.Millisecond

func TestWatchUploadsChangesWithoutAPass(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	f.eng.hooks.watch.Settle = 500 * time.Millisecond
	full := countFullPasses(f.eng, "e1")
	uploads := logUploads(f.eng)
	f.write("out/old", []byte("before Run"))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	uploaded := func(key string, want []byte) func() bool {
		return func() bool { b, ok := f.be.data(key); return ok && bytes.Equal(b, want) }
	}
	require.Eventually(t, uploaded("p/old", []byte("before Run")), eventWait, 20*time.Millisecond, "Run's first pass")
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	requests, lists, puts := f.be.requests(), f.be.lists.Load(), f.be.puts.Load()

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
	assert.Equal(t, lists, f.be.lists.Load(), "events list nothing")
	assert.Equal(t, f.be.puts.Load()-puts, f.be.requests()-requests, "events cost a PUT each: no listing, no HEAD")
	assert.Equal(t, int64(4), f.be.puts.Load()-puts)
}

func TestWatchSourceCreatedLater(t *testing.T) {
	t.Run("a rescan once it appears", func(t *testing.T) {
		f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
		f.eng.hooks.watch.RetryInterval = 100 * time.Millisecond // how often the missing root is looked for
		full := countFullPasses(f.eng, "e1")
		f.configure(f.egress("e1", "later", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond,
			"a source that does not exist yet is normal")

		// The workload writes: the watcher finds the directory, the engine
		// rescans it, and from then on events cover it.
		f.write("later/a", []byte("a"))
		require.Eventually(t, func() bool { return f.has("p/a") }, eventWait, 20*time.Millisecond)
		passes := full.Load()
		assert.Equal(t, int64(2), passes, "Run's first pass and the rescan once the directory appeared")

		f.write("later/b", []byte("b"))
		require.Eventually(t, func() bool { return f.has("p/b") }, eventWait, 20*time.Millisecond)
		assert.Equal(t, passes, full.Load(), "b went up on its event")
	})
	t.Run("passes every Interval until then", func(t *testing.T) {
		f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = watchInterval, time.Hour })
		f.eng.hooks.watch.RetryInterval = 100 * time.Millisecond // how often the missing root is looked for
		full := countFullPasses(f.eng, "e1")
		f.configure(f.egress("e1", "later", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
		require.Eventually(t, func() bool { return passing(full, watchInterval) }, eventWait, 10*time.Millisecond,
			"nothing to watch yet: passes every Interval")
		f.write("later/a", []byte("a"))
		require.Eventually(t, func() bool { return f.has("p/a") }, eventWait, 20*time.Millisecond)
		require.Eventually(t, func() bool { return quiet(full, watchInterval) }, eventWait, 10*time.Millisecond,
			"watched once it appeared: WatchedInterval")
	})
}

func TestWatchFollowsTheMappings(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
	const reader = "(*Engine).readWatch"
	fds, readers := inotifyFDs(t), goroutinesIn(reader)
	for _, d := range []string{"out", "out2", "moved", "in"} {
		require.NoError(t, os.MkdirAll(filepath.Join(f.root, d), 0o755))
	}
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return inotifyFDs(t) == fds+2 }, eventWait, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, fds+2, inotifyFDs(t), "one watcher per egress mapping; ingress targets are not watched")
	// A reader's stack names readWatch only once its goroutine has run.
	require.Eventually(t, func() bool { return goroutinesIn(reader) == readers+2 }, eventWait, 10*time.Millisecond)
	for _, id := range []string{"e1", "e2", "i1"} {
		require.Eventually(t, func() bool { return f.status(id).LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	}

	// The same configuration again (the worker resends it): same watchers.
	before := inotifySet(t)
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	assert.Equal(t, before, inotifySet(t))

	// e1's directory changes: the new one is watched, the old one no more.
	f.configure(f.egress("e1", "moved", "p"), f.egress("e2", "out2", "q"), f.ingress("i1", "in", "r"))
	assert.Equal(t, fds+2, inotifyFDs(t))
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	f.write("moved/x", []byte("x"))
	require.Eventually(t, func() bool { return f.has("p/x") }, eventWait, 20*time.Millisecond)
	f.write("out/y", []byte("y"))
	time.Sleep(time.Second)
	assert.False(t, f.has("p/y"), "the old directory is not watched any more")

	// e2 removed: its watcher is closed, its reader returns.
	f.configure(f.egress("e1", "moved", "p"), f.ingress("i1", "in", "r"))
	assert.Equal(t, fds+1, inotifyFDs(t))
	require.Eventually(t, func() bool { return goroutinesIn(reader) == readers+1 }, eventWait, 10*time.Millisecond)

	// Sync off, then on again: watched again.
	require.NoError(t, f.eng.Configure(nil, f.maps))
	assert.Equal(t, fds, inotifyFDs(t))
	require.NoError(t, f.eng.Configure(f.ep, f.maps))
	assert.Equal(t, fds+1, inotifyFDs(t))
	f.write("moved/z", []byte("z"))
	require.Eventually(t, func() bool { return f.has("p/z") }, eventWait, 20*time.Millisecond, "events after sync on again")

	// Close releases everything, Run running or not.
	require.NoError(t, f.eng.Close())
	assert.Equal(t, fds, inotifyFDs(t))
	assert.Equal(t, readers, goroutinesIn(reader))
	assert.Equal(t, 0, goroutinesIn("watch.(*Watcher).run"))
}

func TestWatchFallsBackToPasses(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	t.Run("watch limit: passes every Interval", func(t *testing.T) {
		f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = watchInterval, time.Hour })
		f.eng.hooks.watch.MaxWatches = 2
		full := countFullPasses(f.eng, "e1")
		f.write("out/a/1", []byte("1"))
		f.configure(f.egress("e1", "out", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { return f.has("p/a/1") }, eventWait, 20*time.Millisecond)
		time.Sleep(5 * watchInterval)
		assert.Equal(t, int64(1), full.Load(), "watched: no full pass before WatchedInterval")

		// A third directory is more than the watcher may watch.
		f.write("out/b/2", []byte("2"))
		require.Eventually(t, func() bool { return passing(full, watchInterval) }, eventWait, 10*time.Millisecond)
		require.Eventually(t, func() bool { return f.has("p/b/2") }, eventWait, 20*time.Millisecond)
		n := full.Load()
		time.Sleep(time.Second)
		assert.GreaterOrEqual(t, full.Load()-n, int64(3), "unwatched: a full pass every Interval")
		f.write("out/b/3", []byte("3"))
		require.Eventually(t, func() bool { return f.has("p/b/3") }, eventWait, 20*time.Millisecond,
			"the passes move what events no longer report")
	})

	t.Run("too many pending files: one full pass", func(t *testing.T) {
		f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = time.Hour, time.Hour })
		f.eng.hooks.watch.MaxPending = 3
		f.eng.hooks.watch.Settle = time.Second // all ten are pending at once
		full := countFullPasses(f.eng, "e1")
		require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
		f.configure(f.egress("e1", "out", "p"))
		runEngine(t, f.eng)
		require.Eventually(t, func() bool { return full.Load() == 1 }, eventWait, 10*time.Millisecond)
		require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
		for i := range 10 {
			f.write(filepath.Join("out", string(rune('a'+i))), []byte{byte('a' + i)})
		}
		require.Eventually(t, func() bool { return len(f.be.keys()) == 10 }, eventWait, 20*time.Millisecond)
		// The last rescan asked for may still be on its way: a second without one.
		require.Eventually(t, func() bool { return quiet(full, 250*time.Millisecond) }, eventWait, 10*time.Millisecond)
		// Each time more than MaxPending files wait, the watcher drops them
		// and asks for one rescan: ten files make one to three, and requests
		// that arrive during a pass in flight fold into the next one.
		n := full.Load()
		assert.GreaterOrEqual(t, n, int64(2), "the rescan the watcher asked for")
		assert.LessOrEqual(t, n, int64(4), "no more than one rescan per overflow")
		f.write("out/z", []byte("z"))
		require.Eventually(t, func() bool { return f.has("p/z") }, eventWait, 20*time.Millisecond)
		assert.Equal(t, n, full.Load(), "still watching: z went up on its event")
	})
}

// TestWatchFailedUploadsBringThePassesBack: an upload an event started fails
// (the server is down); while it waits for its retry the mapping gets its
// full pass every Interval, as without a watcher, and WatchedInterval again
// once it went up.
func TestWatchFailedUploadsBringThePassesBack(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = watchInterval, time.Hour })
	var full, partial atomic.Int64
	f.eng.hooks.onPass = func(_ string, _ PassOptions, part bool) {
		if part {
			partial.Add(1)
		} else {
			full.Add(1)
		}
	}
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	require.Eventually(t, func() bool { return quiet(&full, watchInterval) }, eventWait, 10*time.Millisecond, "watched")

	f.be.down.Store(true)
	f.write("out/a", []byte("a"))
	require.Eventually(t, func() bool { return passing(&full, watchInterval) }, eventWait, 10*time.Millisecond,
		"a file waits for its retry: passes every Interval")
	events := partial.Load() // a's event was tried, and failed
	f.be.down.Store(false)
	require.Eventually(t, func() bool { return f.has("p/a") }, eventWait, 20*time.Millisecond)
	assert.Equal(t, events, partial.Load(), "a full pass retried it, not an event")
	require.Eventually(t, func() bool { return quiet(&full, watchInterval) }, eventWait, 10*time.Millisecond, "nothing owed any more")

	// A failed file that is deleted meanwhile is owed no more either.
	f.be.down.Store(true)
	f.write("out/gone", []byte("gone"))
	require.Eventually(t, func() bool { return passing(&full, watchInterval) }, eventWait, 10*time.Millisecond)
	require.NoError(t, os.Remove(filepath.Join(f.root, "out/gone")))
	require.Eventually(t, func() bool { return quiet(&full, watchInterval) }, eventWait, 10*time.Millisecond)
	f.be.down.Store(false)
}

// TestWatchServerDownAtStart: the first pass fails as a whole (no file was
// even tried: the adoption listing failed); the mapping keeps its passes
// every Interval until one succeeds.
func TestWatchServerDownAtStart(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval, o.WatchedInterval = watchInterval, time.Hour })
	full := countFullPasses(f.eng, "e1")
	f.write("out/a", []byte("a"))
	f.be.down.Store(true)
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastError != "" }, eventWait, 10*time.Millisecond)
	require.Eventually(t, func() bool { return passing(full, watchInterval) }, eventWait, 10*time.Millisecond,
		"a failed pass: passes every Interval")
	f.be.down.Store(false)
	require.Eventually(t, func() bool { return f.has("p/a") }, eventWait, 20*time.Millisecond)
	require.Eventually(t, func() bool { return quiet(full, watchInterval) }, eventWait, 10*time.Millisecond)
}

func TestWatchOff(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval, o.NoWatch = time.Hour, true })
	fds := inotifyFDs(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "out"), 0o755))
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	require.Eventually(t, func() bool { return f.status("e1").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	f.write("out/a", []byte("a"))
	time.Sleep(time.Second)
	assert.False(t, f.has("p/a"), "no watcher: the file waits for the next pass")
	assert.Equal(t, fds, inotifyFDs(t), "no watcher")
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
	require.Eventually(t, func() bool { return f.status("e").LastSuccess.After(time.Time{}) }, eventWait, 10*time.Millisecond)
	lists := f.be.lists.Load()
	f.write("out/d/new", []byte("new"))
	require.Eventually(t, func() bool { _, ok := f.be.data("dev/d/new"); return ok }, eventWait, 10*time.Millisecond)
	assert.Equal(t, int64(1), full.Load())
	assert.Equal(t, lists, f.be.lists.Load(), "no listing")
	assert.Equal(t, fds+1, inotifyFDs(t))
	f.configure()
	assert.Equal(t, fds, inotifyFDs(t))
}

// A mapping owed a prompt pass when the engine closes under a running Run
// must not wake Run again and again: each such pass fails at once.
func TestClosedEngineDoesNotSpin(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.NoWatch = true })
	core, logs := observer.New(zap.DebugLevel)
	f.log = zap.New(core)
	f.restart()
	f.write("out/a", []byte("a"))
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.eng.hooks.beforeUpload = func(string) { once.Do(func() { close(held); <-release }) }
	f.configure(f.egress("e1", "out", "p"))
	runEngine(t, f.eng)
	select {
	case <-held: // Run's first pass is in flight
	case <-time.After(eventWait):
		t.Fatal("no pass started")
	}
	// A new endpoint: the mapping is owed a prompt pass after this one.
	f.newEndpoint()
	f.configure(f.egress("e1", "out", "p"))
	closed := make(chan error, 1)
	go func() { closed <- f.eng.Close() }()
	require.Eventually(t, func() bool { return f.eng.Configure(f.ep, f.maps) != nil }, eventWait, 5*time.Millisecond,
		"Close has begun")
	close(release) // the pass in flight ends, its prompt pass still owed
	require.NoError(t, <-closed)
	time.Sleep(300 * time.Millisecond)
	// The pass Close cancelled logs its end (as the pass, and as Run's); a
	// Run woken again and again would log hundreds more.
	failed := logs.FilterMessage("sync pass failed").Len()
	assert.LessOrEqual(t, failed, 2, "passes tried after Close")
}
