package datasync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// Retention and catch-up order: the decision tables (pure), then the
// engine on the in-memory bucket (under -short), then versitygw.

func TestDecideRetention(t *testing.T) {
	file := &stablefile.Stat{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7}
	touched := &stablefile.Stat{Size: 5, MtimeNs: 20, CtimeNs: 21, Inode: 7}
	replaced := &stablefile.Stat{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 8}
	confirmed := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "e", Confirmed: true}
	unconfirmed := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "e"}
	all := retentionCut{all: true}
	before := func(t int64) retentionCut { return retentionCut{before: t} }
	none := retentionCut{before: math.MinInt64}
	for _, tc := range []struct {
		name string
		it   item
		cut  retentionCut
		want action
	}{
		{"never uploaded: never removed", item{local: file}, all, actSkip},
		{"row of a file gone", item{row: confirmed}, all, actSkip},
		{"upload not confirmed: kept", item{local: file, row: unconfirmed}, all, actSkip},
		{"rewritten since the upload: kept", item{local: touched, row: confirmed}, all, actSkip},
		{"another file under the name: kept", item{local: replaced, row: confirmed}, all, actSkip},
		{"confirmed, remove after upload", item{local: file, row: confirmed}, all, actRemove},
		{"confirmed, older than the cut", item{local: file, row: confirmed}, before(11), actRemove},
		{"confirmed, at the cut: kept", item{local: file, row: confirmed}, before(10), actSkip},
		{"confirmed, no limit", item{local: file, row: confirmed}, none, actSkip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.it.name = "a"
			assert.Equal(t, tc.want, decideRetention(tc.it, tc.cut).act)
		})
	}
}

func TestDecideEgressConfirm(t *testing.T) {
	file := &stablefile.Stat{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7}
	row := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "e1"}
	conf := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "e1", Confirmed: true}
	never := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "x", Unconfirmable: true}
	obj := &Object{Key: "p/a", Size: 5, ETag: "e1"}
	walked := scope{localWalked: true, confirm: true}
	listed := scope{localWalked: true, remoteListed: true, confirm: true}
	for _, tc := range []struct {
		name string
		it   item
		sc   scope
		want action
	}{
		{"unconfirmed row, retention: confirm", item{local: file, row: row}, walked, actConfirm},
		{"unconfirmed row, reconcile: confirm", item{local: file, row: row, remote: obj}, listed, actConfirm},
		{"unconfirmed row, no retention", item{local: file, row: row}, scope{localWalked: true}, actSkip},
		{"confirmed row", item{local: file, row: conf}, walked, actSkip},
		{"unconfirmable row: not asked again", item{local: file, row: never}, walked, actSkip},
		{"new file: uploaded, confirmed on the way", item{local: file}, walked, actUpload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.it.name = "a"
			assert.Equal(t, tc.want, decideEgress(tc.it, tc.sc).act)
		})
	}
}

func TestMtimeHistogramBoundedAndOldestFirst(t *testing.T) {
	var h mtimeHistogram
	sec := int64(time.Second)
	for i := range int64(10 * maxBins) {
		h.add(i*sec, 100)
	}
	assert.LessOrEqual(t, len(h.bins), maxBins, "bins are bounded")
	// Removing 250 bytes: every file before the cut-off goes; at most one
	// bin more than needed.
	cut := h.cutoff(250)
	assert.GreaterOrEqual(t, cut, 3*sec)
	assert.LessOrEqual(t, cut, h.width+3*sec)
	assert.Equal(t, int64(0), h.oldest())
}

// recordingBackend records the order of uploads.
func recordPuts(be *memBackend) func() []string {
	var mu sync.Mutex
	var keys []string
	be.failPut = func(key string) error {
		mu.Lock()
		keys = append(keys, key)
		mu.Unlock()
		return nil
	}
	return func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), keys...) }
}

func (f *memFixture) exists(rel string) bool {
	_, err := os.Lstat(filepath.Join(f.root, rel))
	return err == nil
}

func (f *memFixture) setMtime(rel string, t time.Time) {
	f.t.Helper()
	require.NoError(f.t, os.Chtimes(filepath.Join(f.root, rel), t, t))
}

func TestUnitRemoveAfterUpload(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention.RemoveAfterUpload = true
	f.configure(m)
	f.write("out/a", []byte("alpha"))
	f.write("out/sub/b", []byte("bravo"))
	f.write("out/big", bytes.Repeat([]byte("x"), singlePutMax+1)) // multipart: confirmed by its part ETags
	require.NoError(t, f.sync(PassOptions{}))

	for _, k := range []string{"dev/a", "dev/sub/b", "dev/big"} {
		_, ok := f.be.data(k)
		assert.True(t, ok, "%s uploaded", k)
	}
	for _, rel := range []string{"out/a", "out/sub/b", "out/big"} {
		assert.False(t, f.exists(rel), "%s removed once confirmed", rel)
	}
	st := f.status("e")
	assert.Equal(t, int64(3), st.RemovedFiles)
	assert.Equal(t, int64(10+singlePutMax+1), st.RemovedBytes)
	assert.Zero(t, st.KeptBytes)
	assert.Equal(t, 0, f.rows("e"), "the journal keeps no row of a removed file")

	// A reconcile does not upload removed files again nor mind their objects.
	puts := f.be.puts.Load()
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	assert.Equal(t, puts, f.be.puts.Load())
	assert.Equal(t, 3, len(f.be.keys()), "egress never deletes")
}

func TestUnitRemovalKeepsAFileRewrittenMeanwhile(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention.RemoveAfterUpload = true
	f.configure(m)
	f.write("out/a", []byte("version 1"))
	f.write("out/b", []byte("bravo"))
	// The workload rewrites a after its upload was confirmed, just before
	// its removal: the last stat sees it and keeps it.
	f.eng.hooks.beforeRemove = func(rel string) {
		if rel == "a" {
			time.Sleep(5 * time.Millisecond)
			f.write("out/a", []byte("version 2!"))
		}
	}
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, "version 2!", string(f.read("out/a")), "a rewritten file is never removed")
	assert.False(t, f.exists("out/b"))
	assert.Equal(t, int64(1), f.status("e").RemovedFiles)

	// Its next pass uploads the new version, then removes it.
	f.eng.hooks.beforeRemove = nil
	require.NoError(t, f.sync(PassOptions{}))
	got, _ := f.be.data("dev/a")
	assert.Equal(t, "version 2!", string(got))
	assert.False(t, f.exists("out/a"))
}

func TestUnitUnuploadedFilesAreNeverRemoved(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention = Retention{RemoveAfterUpload: true, KeepBytes: 1, KeepAge: time.Nanosecond}
	f.configure(m)
	f.write("out/ok", []byte("fine"))
	f.write("out/fails", []byte("refused by the server"))
	f.be.failPut = func(key string) error {
		if key == "dev/fails" {
			return errors.New("injected failure")
		}
		return nil
	}
	require.Error(t, f.sync(PassOptions{}))
	assert.True(t, f.exists("out/fails"), "a file whose upload failed stays")
	assert.False(t, f.exists("out/ok"))
}

// A confirmed upload whose removal a crash prevented (or a mapping that
// gets a retention later) is removed by the next pass; a multipart upload
// made without retention is confirmed first (one HEAD, a local hash).
func TestUnitConfirmedLeftoversRemovedNextPass(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	f.configure(m)
	f.write("out/small", []byte("small"))
	f.write("out/big", bytes.Repeat([]byte("y"), singlePutMax+5))
	require.NoError(t, f.sync(PassOptions{}))
	assert.True(t, f.exists("out/small"))
	st := f.status("e")
	assert.Equal(t, int64(2), st.KeptFiles, "uploaded and kept, confirmed or not")
	assert.Equal(t, int64(5+singlePutMax+5), st.KeptBytes)
	puts, stats := f.be.puts.Load(), f.be.stats.Load()

	m.Retention.RemoveAfterUpload = true
	f.configure(m)
	require.NoError(t, f.sync(PassOptions{}))
	assert.False(t, f.exists("out/small"), "confirmed at upload: removed")
	assert.False(t, f.exists("out/big"), "confirmed by a HEAD and its part ETags: removed")
	assert.Equal(t, puts, f.be.puts.Load(), "nothing uploaded again")
	assert.Equal(t, stats+1, f.be.stats.Load(), "one HEAD for the multipart file")
}

// sseBackend answers uploads with ETags that are no MD5 (as with
// server-side encryption): nothing can be confirmed, nothing is removed.
type sseBackend struct{ *memBackend }

func (b sseBackend) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	etag := fmt.Sprintf("sse%029d", len(data))
	b.set(bucket, key, data, etag, o.Meta)
	return etag, nil
}

func TestUnitUnconfirmableUploadsAreKept(t *testing.T) {
	f := newMemFixture(t)
	f.eng.newBackend = func(*Endpoint) (Backend, error) { return sseBackend{f.be}, nil }
	m := f.egress("e", "out", "dev")
	m.Retention.RemoveAfterUpload = true
	f.configure(m)
	f.write("out/a", []byte("alpha"))
	require.NoError(t, f.sync(PassOptions{}))
	require.NoError(t, f.sync(PassOptions{}))
	assert.True(t, f.exists("out/a"), "an ETag that proves nothing removes nothing")
	assert.Zero(t, f.be.stats.Load(), "and it is not asked again every pass")
}

func TestUnitKeepBytesRemovesOldestUploadedFirst(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention.KeepBytes = 3500
	f.configure(m)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range 10 {
		rel := fmt.Sprintf("out/f%02d", 9-i) // key order is not time order
		f.write(rel, bytes.Repeat([]byte{byte('a' + i)}, 1000))
		f.setMtime(rel, base.Add(time.Duration(i)*time.Minute))
	}
	require.NoError(t, f.sync(PassOptions{}))
	// f09 is the oldest, f00 the newest: the three newest stay.
	for i := range 10 {
		rel := fmt.Sprintf("out/f%02d", i)
		assert.Equal(t, i <= 2, f.exists(rel), rel)
	}
	st := f.status("e")
	assert.Equal(t, int64(3000), st.KeptBytes)
	assert.Equal(t, int64(3), st.KeptFiles)
	assert.Equal(t, int64(3000), st.LocalBytes)
	assert.Equal(t, int64(7), st.RemovedFiles)
	assert.Equal(t, 3, f.rows("e"))

	// A new file not yet uploaded counts in local bytes, never as kept.
	f.write("out/new", bytes.Repeat([]byte("n"), 1000))
	f.be.failPut = func(string) error { return errors.New("link down") }
	require.Error(t, f.sync(PassOptions{}))
	assert.True(t, f.exists("out/new"))
	f.be.failPut = nil
	require.NoError(t, f.sync(PassOptions{}))
	assert.True(t, f.exists("out/new"), "the newest upload stays")
	assert.False(t, f.exists("out/f02"), "the oldest kept one goes")
	assert.LessOrEqual(t, f.status("e").KeptBytes, int64(3500))
}

func TestUnitKeepAge(t *testing.T) {
	f := newMemFixture(t)
	m := f.egress("e", "out", "dev")
	m.Retention.KeepAge = time.Hour
	f.configure(m)
	f.write("out/old", []byte("old"))
	f.setMtime("out/old", time.Now().Add(-2*time.Hour))
	f.write("out/fresh", []byte("fresh"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.False(t, f.exists("out/old"))
	assert.True(t, f.exists("out/fresh"))
	_, ok := f.be.data("dev/old")
	assert.True(t, ok)
}

func TestUnitShortOfSpace(t *testing.T) {
	var avail atomic64
	avail.set(500)
	f := newMemFixture(t, func(o *Options) { o.MinFreeBytes = 1000 })
	f.eng.hooks.free = func(string) (uint64, uint64, error) { return uint64(avail.get()), 1 << 30, nil }
	keep := f.egress("keep", "keep", "k")
	keep.Retention.KeepBytes = 1 << 30 // generous: space shedding removes anyway
	plain := f.egress("plain", "plain", "p")
	f.configure(keep, plain)
	f.write("keep/old", bytes.Repeat([]byte("o"), 600))
	f.setMtime("keep/old", time.Now().Add(-time.Hour))
	f.write("keep/new", bytes.Repeat([]byte("n"), 600))
	f.write("plain/a", bytes.Repeat([]byte("p"), 600))
	f.eng.hooks.beforeRemove = func(string) { avail.add(600) }
	ctx := context.Background()

	// 500 bytes lacking: the oldest uploaded file goes, and only it.
	require.NoError(t, f.eng.Sync(ctx, PassOptions{}, "keep"))
	assert.False(t, f.exists("keep/old"), "short of space: the oldest uploaded file goes first")
	assert.True(t, f.exists("keep/new"), "and only what is needed")
	assert.Empty(t, f.status("keep").ShortOfSpace)

	// A mapping without retention removes nothing and says so.
	avail.set(100)
	require.NoError(t, f.eng.Sync(ctx, PassOptions{}, "plain"))
	assert.True(t, f.exists("plain/a"))
	assert.Contains(t, f.status("plain").ShortOfSpace, "sets no retention")

	// Still short once everything uploaded is gone, while the link fails:
	// said too.
	f.eng.hooks.beforeRemove = nil
	f.write("keep/unsent", []byte("not uploaded"))
	f.be.failPut = func(string) error { return errors.New("link down") }
	require.Error(t, f.eng.Sync(ctx, PassOptions{}, "keep"))
	assert.False(t, f.exists("keep/new"), "every uploaded file went")
	assert.True(t, f.exists("keep/unsent"), "never one not uploaded")
	assert.Contains(t, f.status("keep").ShortOfSpace, "nothing uploaded is left to remove")
}

type atomic64 struct {
	mu sync.Mutex
	v  int64
}

func (a *atomic64) set(v int64) { a.mu.Lock(); a.v = v; a.mu.Unlock() }
func (a *atomic64) add(v int64) { a.mu.Lock(); a.v += v; a.mu.Unlock() }
func (a *atomic64) get() int64  { a.mu.Lock(); defer a.mu.Unlock(); return a.v }

func TestUnitCatchUpOrder(t *testing.T) {
	for _, tc := range []struct {
		order Order
		want  []string
	}{
		{NewestFirst, []string{"dev/f9", "dev/f8", "dev/f7", "dev/f6", "dev/f5", "dev/f4", "dev/f3", "dev/f2", "dev/f1", "dev/f0"}},
		{OldestFirst, []string{"dev/f0", "dev/f1", "dev/f2", "dev/f3", "dev/f4", "dev/f5", "dev/f6", "dev/f7", "dev/f8", "dev/f9"}},
	} {
		t.Run(string(tc.order), func(t *testing.T) {
			saved := orderBatch
			orderBatch = 3 // four rounds for ten files: the order holds across rounds
			t.Cleanup(func() { orderBatch = saved })
			f := newMemFixture(t, func(o *Options) { o.Concurrency = 1 })
			m := f.egress("e", "out", "dev")
			m.Order = tc.order
			f.configure(m)
			rounds := 0
			f.eng.hooks.onRound = func(string, int) { rounds++ }
			base := time.Now().Add(-time.Hour)
			// Names in an order that is neither time nor its reverse.
			for _, i := range []int{3, 7, 0, 9, 1, 5, 8, 2, 6, 4} {
				rel := fmt.Sprintf("out/f%d", i)
				f.write(rel, []byte(rel))
				f.setMtime(rel, base.Add(time.Duration(i)*time.Second))
			}
			puts := recordPuts(f.be)
			require.NoError(t, f.sync(PassOptions{}))
			assert.Equal(t, tc.want, puts())
			assert.Equal(t, 3, rounds, "ceil(10/3) = 4 walks: 3 rounds after the first")
			assert.Equal(t, 10, f.rows("e"))
		})
	}
}

// A backlog much bigger than a round: the order holds over all of it, in
// ceil(N/orderBatch) rounds, never more than orderBatch jobs held.
func TestUnitCatchUpOrderBoundedRounds(t *testing.T) {
	saved := orderBatch
	orderBatch = 64
	t.Cleanup(func() { orderBatch = saved })
	f := newMemFixture(t, func(o *Options) { o.Concurrency = 1 })
	m := f.egress("e", "out", "dev")
	m.Order = NewestFirst
	f.configure(m)
	rounds := 0
	f.eng.hooks.onRound = func(string, int) { rounds++ }
	const n = 1000
	base := time.Now().Add(-time.Hour)
	rng := func(i int) int { return (i * 7919) % n } // a permutation of 0..n-1
	for i := range n {
		rel := fmt.Sprintf("out/d%d/f%04d", i%7, i)
		f.write(rel, []byte(rel))
		f.setMtime(rel, base.Add(time.Duration(rng(i))*time.Millisecond))
	}
	puts := recordPuts(f.be)
	require.NoError(t, f.sync(PassOptions{}))
	got := puts()
	require.Len(t, got, n)
	prev := n
	for _, k := range got {
		var d, i int
		_, err := fmt.Sscanf(k, "dev/d%d/f%04d", &d, &i)
		require.NoError(t, err)
		require.Less(t, rng(i), prev, "newest first: %s after an older file", k)
		prev = rng(i)
	}
	assert.Equal(t, (n+63)/64-1, rounds, "one walk per 64 jobs: rounds after the first")
}
