package datasync

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
)

// runFixture is an engine running (Run) against a real server, counting
// requests, notification streams opened and full passes.
type runFixture struct {
	*fixture
	streams atomic.Int64 // notification streams requested
	lists   atomic.Int64 // LIST requests
	mu      sync.Mutex
	full    []time.Time // full passes started
	cancel  context.CancelFunc
	done    chan struct{}
}

// newRunFixture starts srv's engine with opts and Run; ingress mapping "in"
// reads prefix "in" into <root>/in.
func newRunFixture(t *testing.T, srv *s3test.Server, opts ...func(*Options)) *runFixture {
	t.Helper()
	f := &runFixture{fixture: &fixture{t: t, srv: srv, root: t.TempDir(), state: t.TempDir(), count: &s3client.Counter{}}}
	f.opts = Options{StateDir: f.state, Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1,
		// Called once per client (the engine's and each notification
		// stream's): every call makes its own counting transport.
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				switch {
				case r.URL.Query().Has("events"):
					f.streams.Add(1)
				case r.Method == http.MethodGet && (r.URL.Query().Has("list-type") || r.URL.Query().Has("prefix")):
					f.lists.Add(1)
				}
				return rt.RoundTrip(r)
			})
		}}
	for _, o := range opts {
		o(&f.opts)
	}
	access, secret := srv.Credentials()
	f.ep = &Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: access, SecretKey: secret}
	eng, err := New(f.opts, zaptest.NewLogger(t))
	require.NoError(t, err)
	eng.hooks.settle = 0
	eng.hooks.notifyTune = func(c *s3wire.ListenConfig) {
		c.Ping, c.MinBackoff, c.MaxBackoff = time.Second, 100*time.Millisecond, 500*time.Millisecond
	}
	eng.hooks.onPass = func(_ string, _ PassOptions, partial bool) {
		if !partial {
			f.mu.Lock()
			f.full = append(f.full, time.Now())
			f.mu.Unlock()
		}
	}
	f.eng = eng
	f.configure(f.ingress("in", "in", "in"))
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() { defer close(f.done); _ = eng.Run(ctx) }()
	t.Cleanup(func() { f.stop(); _ = eng.Close() })
	return f
}

func (f *runFixture) stop() {
	f.cancel()
	<-f.done
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (fn roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

func (f *runFixture) fullPasses() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.full)
}

func (f *runFixture) notified() bool { return watched(f.eng, "in") }

// waitFile waits up to limit for rel (under root) to hold data and returns
// how long it took.
func (f *runFixture) waitFile(rel string, data []byte, limit time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if b, err := os.ReadFile(filepath.Join(f.root, rel)); err == nil && string(b) == string(data) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatalf("%s did not arrive within %s", rel, limit)
	return 0
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// On MinIO an object put under an ingress prefix reaches the device at
// once, long before the poll interval (an hour here); a removed object's
// row is pruned and its file kept; keys outside the prefix are not fetched.
func TestMinIOPushNotifiedIngressDownloadsAtOnce(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	f := newRunFixture(t, s3test.StartMinIOPush(t, s3test.WithBuckets(bucket)))
	waitFor(t, "stream up", 10*time.Second, f.notified)
	waitFor(t, "first passes", 10*time.Second, func() bool { return f.fullPasses() >= 2 }) // at start, and once the stream is up
	passes := f.fullPasses()
	var worst time.Duration
	for i, key := range []string{"in/a.txt", "in/deep/er/b.bin", "in/sp ace é.txt"} {
		f.put("other/"+key, []byte("not mine"))
		data := []byte(strings.Repeat("x", i+1))
		f.put(key, data)
		worst = max(worst, f.waitFile(key, data, 5*time.Second))
	}
	t.Logf("worst put -> file: %s", worst)
	// A new version replaces the file.
	f.put("in/a.txt", []byte("v2"))
	f.waitFile("in/a.txt", []byte("v2"), 5*time.Second)

	require.NoError(t, f.srv.Client().RemoveObject(context.Background(), bucket, "in/a.txt", minio.RemoveObjectOptions{}))
	waitFor(t, "row pruned", 5*time.Second, func() bool {
		n, err := f.eng.jr.Rows("in", 0)
		return err == nil && n == 2
	})
	assert.Equal(t, []byte("v2"), f.read("in/a.txt"), "ingress never deletes local files")
	_, err := os.Stat(filepath.Join(f.root, "in", "other"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Equal(t, passes, f.fullPasses(), "no full pass: events only")
	assert.Equal(t, int64(4), f.status("in").FilesTotal)
	if m := f.status("in").Ingress; assert.NotNil(t, m) {
		assert.Equal(t, ModePush, m.Mode)
		assert.Empty(t, m.Reason)
	}
}

// versitygw has no notifications: found at once with one request, logged,
// and the mapping polls, adaptively: idle passes grow to the cap, a new
// object arrives within it, and the base interval comes back.
func TestNoNotificationsFallsBackToAdaptivePolling(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	const interval, pollMax = 100 * time.Millisecond, 800 * time.Millisecond
	f := newRunFixture(t, s3test.Start(t, s3test.WithBuckets(bucket)), func(o *Options) { o.Interval, o.PollMax = interval, pollMax })
	time.Sleep(4 * time.Second)
	assert.Equal(t, int64(1), f.streams.Load(), "one attempt at a stream, no retry loop")
	assert.False(t, f.notified())
	assert.Equal(t, &IngressMode{Mode: ModePoll, Reason: ReasonUnsupported, Since: f.status("in").Ingress.Since}, f.status("in").Ingress)
	idle := f.lists.Load()
	t.Logf("4 s idle at a %s interval, cap %s: %d LIST requests (%d at a fixed interval)", interval, pollMax, idle, 4*time.Second/interval)
	assert.LessOrEqual(t, idle, int64(14)) // 0.2+0.4+0.8 s, then every 0.8 s: about 8
	assert.GreaterOrEqual(t, idle, int64(4))

	f.put("in/new.txt", []byte("new"))
	took := f.waitFile("in/new.txt", []byte("new"), 3*time.Second)
	t.Logf("put -> file while polling at the cap: %s", took)
	assert.LessOrEqual(t, took, pollMax*11/10+3*interval)
	// Back at the base interval the polls come 0.1, 0.3 and 0.7 s after the
	// change (it doubles after each empty one); at the cap, one at most in
	// 0.7 s. Two with 0.4 s to spare for a loaded machine.
	before := f.lists.Load()
	time.Sleep(700 * time.Millisecond)
	assert.GreaterOrEqual(t, f.lists.Load()-before, int64(2), "back to the base interval after a change")
	assert.Equal(t, int64(1), f.streams.Load())
}

// MinIO restarted mid-run: the stream drops, the mapping polls meanwhile,
// the stream comes back, a full pass catches up with what was put while it
// was down, and events flow again.
func TestMinIOPushRestartResyncsThenEventsAgain(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	m := s3test.StartMinIOPush(t, s3test.WithBuckets(bucket))
	f := newRunFixture(t, m)
	waitFor(t, "stream up", 10*time.Second, f.notified)
	f.put("in/before.txt", []byte("before"))
	f.waitFile("in/before.txt", []byte("before"), 5*time.Second)

	m.Stop()
	waitFor(t, "stream seen down", 10*time.Second, func() bool { return !f.notified() })
	waitFor(t, "mode poll", 5*time.Second, func() bool { return f.status("in").Ingress.Mode == ModePoll })
	if mode := f.status("in").Ingress; assert.Equal(t, ModePoll, mode.Mode) {
		assert.Equal(t, ReasonStreamDown, mode.Reason)
		assert.False(t, mode.Since.IsZero(), "down since when")
	}
	m.Restart()
	f.put("in/while-down.txt", []byte("missed?")) // likely before the stream is back
	waitFor(t, "stream back", 15*time.Second, f.notified)
	f.waitFile("in/while-down.txt", []byte("missed?"), 5*time.Second)
	passes := f.fullPasses()
	f.put("in/after.txt", []byte("after"))
	took := f.waitFile("in/after.txt", []byte("after"), 5*time.Second)
	t.Logf("after the restart, put -> file: %s", took)
	assert.Equal(t, passes, f.fullPasses(), "delivered by an event, not a pass")
	assert.GreaterOrEqual(t, f.streams.Load(), int64(2))
}

// FLOTTA_INGRESS_NOTIFY=off (Options.NoNotify): no stream is opened and
// ingress polls even on MinIO.
func TestNotifyOffOpensNoStream(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	f := newRunFixture(t, s3test.StartMinIO(t, s3test.WithBuckets(bucket)), func(o *Options) { o.NoNotify = true; o.Interval = 2 * time.Second; o.PollMax = 2 * time.Second })
	waitFor(t, "first pass", 10*time.Second, func() bool { return f.fullPasses() >= 1 })
	f.put("in/a.txt", []byte("a"))
	start := time.Now()
	f.waitFile("in/a.txt", []byte("a"), 5*time.Second)
	took := time.Since(start)
	t.Logf("put -> file by polling: %s", took)
	assert.Zero(t, f.streams.Load())
	assert.False(t, f.notified())
	assert.Equal(t, &IngressMode{Mode: ModePoll, Reason: ReasonNotifyOff}, f.status("in").Ingress)
}

// MinIO as released holds its notification stream back: the mapping says
// it polls and why, and once a poll has found an object the next ones come
// PollFast later, so the rest of a burst arrives quickly.
func TestMinIOAsReleasedPollsAndSaysWhy(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	const fast = 300 * time.Millisecond
	f := newRunFixture(t, s3test.StartMinIO(t, s3test.WithBuckets(bucket)), func(o *Options) {
		o.Interval, o.PollMax, o.PollFast = 5*time.Second, 10*time.Second, fast
	})
	waitFor(t, "stream found silent", 20*time.Second, func() bool { return f.status("in").Ingress.Reason == ReasonStreamSilent })
	assert.Equal(t, ModePoll, f.status("in").Ingress.Mode)
	assert.False(t, f.notified())
	f.put("in/0", []byte("0"))
	f.waitFile("in/0", []byte("0"), 20*time.Second) // polling at up to the 10 s cap
	var worst time.Duration
	for i := 1; i <= 5; i++ {
		time.Sleep(100 * time.Millisecond)
		key, data := fmt.Sprintf("in/%d", i), []byte(strconv.Itoa(i))
		f.put(key, data)
		worst = max(worst, f.waitFile(key, data, 5*time.Second))
	}
	t.Logf("burst after the first object, worst put -> file: %s (polls %s apart)", worst, fast)
	assert.Less(t, worst, 2*time.Second, "fast polls, not the 5 s interval (with room for a loaded machine)")
}
