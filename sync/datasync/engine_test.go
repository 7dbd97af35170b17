package datasync

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

func TestCredentialRotation(t *testing.T) {
	f := newFixture(t)
	f.write("out/a", []byte("a"))
	good := *f.ep
	f.ep.SecretKey = "wrong-secret"
	f.configure(f.egress("e1", "out", "p"))
	err := f.syncNow()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "wrong-secret", "secrets never appear in errors")
	st := f.status("e1")
	assert.NotEmpty(t, st.LastError)
	assert.True(t, st.LastSuccess.IsZero())

	f.ep = &good
	f.configure(f.egress("e1", "out", "p")) // new keys, no restart
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("a"), f.mustGet("p/a"))
	assert.Empty(t, f.status("e1").LastError)
	assert.False(t, f.status("e1").LastSuccess.IsZero())
}

// TestServerDownThenBack: a pass against a server that does not answer
// fails as a whole for every mapping and says so; once the server is back
// the next pass moves everything. (That a real server's refused connection
// is the same error as the twin's: the "server down" contract case.)
func TestServerDownThenBack(t *testing.T) {
	f := newMemFixture(t)
	f.be.put("in/obj", []byte("from the server"))
	f.write("out/a", []byte("a"))
	f.write("out/b", []byte("b"))
	f.configure(f.egress("e1", "out", "p"), f.ingress("i1", "dl", "in"))
	f.be.down.Store(true)

	require.Error(t, f.syncNow())
	for _, id := range []string{"e1", "i1"} {
		st := f.status(id)
		assert.NotEmpty(t, st.LastError, id)
		assert.True(t, st.LastSuccess.IsZero(), id)
	}
	assert.Equal(t, []string{"in/obj"}, f.be.keys(), "nothing uploaded")

	f.be.down.Store(false)
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("a"), f.mustGet("p/a"))
	assert.Equal(t, []byte("b"), f.mustGet("p/b"))
	assert.Equal(t, []byte("from the server"), f.read("dl/obj"))
	for _, id := range []string{"e1", "i1"} {
		assert.Empty(t, f.status(id).LastError, id)
		assert.Zero(t, f.status(id).Pending, id)
	}
}

func TestTLSWithPrivateCA(t *testing.T) {
	srv := s3test.Start(t, s3test.WithTLS(), s3test.WithBuckets(bucket))
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "out"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "out", "a"), []byte("secure"), 0o644))
	time.Sleep(60 * time.Millisecond)
	m := Mapping{ID: "e1", Direction: Egress, Root: root, LocalDir: filepath.Join(root, "out"), Bucket: bucket, Prefix: "p"}
	ep := Endpoint{Host: srv.Host, Port: srv.Port, Secure: true, Region: s3test.Region,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}

	eng, err := New(Options{StateDir: t.TempDir()}, nil)
	require.NoError(t, err)
	defer eng.Close()
	require.NoError(t, eng.Configure(&ep, []Mapping{m}))
	err = eng.SyncNow(context.Background())
	require.Error(t, err, "an unknown CA must be refused")
	assert.Contains(t, eng.Status()[0].LastError, "certificate")

	ep.CAPEM = srv.CAPEM
	require.NoError(t, eng.Configure(&ep, []Mapping{m}))
	require.NoError(t, eng.SyncNow(context.Background()))
	o, err := srv.Client().StatObject(context.Background(), bucket, "p/a", minioStat())
	require.NoError(t, err)
	assert.Equal(t, int64(6), o.Size)
}

func TestRunSyncsEveryIntervalAndRemoveAll(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval = 50 * time.Millisecond })
	f.configure(f.egress("e1", "out", "p"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.eng.Run(ctx) }()
	f.write("out/late", []byte("written while running"))
	require.Eventually(t, func() bool { return f.has("p/late") }, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	ids, err := f.eng.jr.Mappings()
	require.NoError(t, err)
	assert.Equal(t, []string{"e1"}, ids)
	require.NoError(t, f.eng.RemoveAll())
	ids, err = f.eng.jr.Mappings()
	require.NoError(t, err)
	assert.Empty(t, ids)
	assert.Empty(t, f.eng.Status())
	// Still usable afterwards.
	f.configure(f.egress("e2", "out", "p2"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("written while running"), f.mustGet("p2/late"))
}

func TestConfigureDropsRemovedMappingsAndSyncOff(t *testing.T) {
	f := newMemFixture(t)
	f.write("out/a", []byte("a"))
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out", "q"))
	require.NoError(t, f.syncNow())
	f.configure(f.egress("e2", "out", "q"))
	ids, err := f.eng.jr.Mappings()
	require.NoError(t, err)
	assert.Equal(t, []string{"e2"}, ids)
	assert.ErrorIs(t, f.eng.SyncNow(context.Background(), "e1"), ErrUnknownMapping)

	// No endpoint: sync off, passes do nothing.
	require.NoError(t, f.eng.Configure(nil, f.maps))
	requests := f.be.requests()
	f.write("out/b", []byte("b"))
	require.NoError(t, f.syncNow())
	assert.False(t, f.has("q/b"))
	assert.Equal(t, requests, f.be.requests(), "sync off: no request")
}

// countAllPasses counts the passes (full or partial) that start from now on;
// set it before Run and Configure.
func countAllPasses(e *Engine) *atomic.Int64 {
	var n atomic.Int64
	e.hooks.onPass = func(string, PassOptions, bool) { n.Add(1) }
	return &n
}

func TestNeverTwoPassesOfOneMapping(t *testing.T) {
	f := newMemFixture(t)
	f.write("out/a", []byte("a"))
	f.configure(f.egress("e1", "out", "p"))
	passes := countAllPasses(f.eng)
	var active, most atomic.Int32
	release := make(chan struct{})
	f.eng.hooks.beforeUpload = func(string) {
		// only the first pass uploads; hold it while others queue up
		n := active.Add(1)
		if n > most.Load() {
			most.Store(n)
		}
		<-release
		active.Add(-1)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- f.syncNow() }()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	for range 3 {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, int32(1), most.Load())
	assert.Equal(t, int64(3), passes.Load(), "SyncNow waits for a running pass, then runs its own")
}

// TestConfigureStartsPromptPasses: with an hour between passes, a mapping
// added while Run runs, and every mapping after an endpoint change, gets a
// pass within seconds, not an interval later.
func TestConfigureStartsPromptPasses(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.NoWatch = true }) // Interval: 1h; only passes move files
	passes := countAllPasses(f.eng)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.eng.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	uploaded := func(key string) func() bool { return func() bool { return f.has(key) } }
	time.Sleep(100 * time.Millisecond) // Run's first round found nothing to do

	f.write("out/a", []byte("a"))
	f.configure(f.egress("e1", "out", "p"))
	require.Eventually(t, uploaded("p/a"), 5*time.Second, 20*time.Millisecond, "new mapping: prompt first pass")

	// A second mapping: its own prompt pass; the first one waits for its interval.
	f.write("out2/b", []byte("b"))
	f.write("out/c", []byte("c"))
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"))
	require.Eventually(t, uploaded("q/b"), 5*time.Second, 20*time.Millisecond, "added mapping: prompt first pass")
	time.Sleep(300 * time.Millisecond)
	assert.False(t, uploaded("p/c")(), "an unchanged mapping keeps its interval")

	// Same configuration again: nothing owed.
	runs := passes.Load()
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"))
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, runs, passes.Load(), "an unchanged configuration starts no pass")

	// New credentials (here: a new address for the same bucket): every mapping.
	f.newEndpoint()
	f.write("out2/d", []byte("d"))
	f.configure(f.egress("e1", "out", "p"), f.egress("e2", "out2", "q"))
	require.Eventually(t, uploaded("p/c"), 5*time.Second, 20*time.Millisecond, "changed endpoint: prompt pass of e1")
	require.Eventually(t, uploaded("q/d"), 5*time.Second, 20*time.Millisecond, "changed endpoint: prompt pass of e2")
}

// TestPromptPassWaitsForThePassInFlight: a mapping busy with a pass when its
// endpoint changes gets another pass right after it, never two at once.
func TestPromptPassWaitsForThePassInFlight(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.NoWatch = true }) // only passes move files
	f.write("out/a", []byte("a"))
	f.configure(f.egress("e1", "out", "p"))
	var active, most atomic.Int32
	release := make(chan struct{})
	var first atomic.Bool
	f.eng.hooks.beforeUpload = func(string) {
		n := active.Add(1)
		if n > most.Load() {
			most.Store(n)
		}
		if first.CompareAndSwap(false, true) {
			<-release
		}
		active.Add(-1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.eng.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, first.Load, 5*time.Second, 10*time.Millisecond, "Run's first round")

	f.write("out/b", []byte("b"))
	f.newEndpoint()
	f.configure(f.egress("e1", "out", "p")) // while the first pass is held
	time.Sleep(200 * time.Millisecond)
	close(release)
	require.Eventually(t, func() bool { return f.has("p/b") }, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, int32(1), most.Load())
}
