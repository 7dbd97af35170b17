package datasync

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
)

// PutParts makes the in-memory twin assemble objects as S3 does: every part
// but the last at least 5 MiB, a copied part taken from a byte range of the
// source only while its ETag matches (412 otherwise), the ETag the MD5 of
// the part MD5s and "-N". refuseCopy models a server without UploadPartCopy.
func (b *memBackend) PutParts(_ context.Context, bucket, key string, parts []Part, meta map[string]string) (string, error) {
	b.puts.Add(1)
	if err := b.unavailable("Put", key); err != nil {
		return "", err
	}
	if b.beforeParts != nil {
		b.beforeParts()
	}
	var data []byte
	var sums [][16]byte
	for i, pt := range parts {
		if i < len(parts)-1 && pt.Size < 5<<20 {
			return "", minio.ErrorResponse{StatusCode: http.StatusBadRequest, Code: "EntityTooSmall"}
		}
		var chunk []byte
		if pt.CopyKey != "" {
			if b.refuseCopy {
				return "", copyPartError(minio.ErrorResponse{StatusCode: http.StatusNotImplemented, Code: "NotImplemented"})
			}
			b.mu.Lock()
			src, ok := b.objs[bucket+"\x00"+pt.CopyKey]
			b.mu.Unlock()
			if !ok || src.etag != pt.CopyETag {
				return "", copyPartError(minio.ErrorResponse{StatusCode: http.StatusPreconditionFailed, Code: "PreconditionFailed"})
			}
			if pt.CopyOff+pt.Size > int64(len(src.data)) {
				return "", minio.ErrorResponse{StatusCode: http.StatusBadRequest, Code: "InvalidRange"}
			}
			chunk = src.data[pt.CopyOff : pt.CopyOff+pt.Size]
			b.copied.Add(pt.Size)
		} else {
			var err error
			if chunk, err = io.ReadAll(pt.Body); err != nil {
				return "", err
			}
			if int64(len(chunk)) != pt.Size || md5.Sum(chunk) != pt.MD5 { //nolint:gosec
				return "", minio.ErrorResponse{StatusCode: http.StatusBadRequest, Code: "BadDigest"}
			}
			b.sent.Add(pt.Size)
		}
		data = append(data, chunk...)
		sums = append(sums, md5.Sum(chunk)) //nolint:gosec
	}
	etag := composedETag(sums)
	b.set(bucket, key, data, etag, meta)
	return etag, nil
}

// growFixture is a mapping of one directory on the twin.
func growFixture(t *testing.T) *memFixture {
	f := newMemFixture(t)
	f.configure(f.egress("logs", "logs", "remote/log"))
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "logs"), 0o755))
	return f
}

func (f *memFixture) appendTo(rel string, data []byte) {
	f.t.Helper()
	fh, err := os.OpenFile(filepath.Join(f.root, rel), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(f.t, err)
	_, err = fh.Write(data)
	require.NoError(f.t, err)
	require.NoError(f.t, fh.Close())
}

func (f *memFixture) row(id, name string) journal.Record {
	f.t.Helper()
	recs, found := make([]journal.Record, 1), make([]bool, 1)
	require.NoError(f.t, f.eng.jr.Lookup(id, journal.Files, []string{name}, recs, found))
	require.True(f.t, found[0], "no row for %s", name)
	return recs[0]
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/4096) ^ seed
	}
	return b
}

// makeGrowing runs a pass during which the file grows while it is read: the
// normal upload refuses it, and it becomes a growing file.
func makeGrowing(t *testing.T, f *memFixture, rel string) {
	var once atomic.Bool
	f.eng.hooks.beforeUpload = func(string) {
		if once.CompareAndSwap(false, true) {
			f.appendTo(rel, []byte("written while read\n"))
		}
	}
	require.NoError(t, f.sync(PassOptions{}))
	f.eng.hooks.beforeUpload = nil
	require.Equal(t, int64(1), f.status("logs").Pending, "refused as changed, pending")
	list, err := f.eng.mappings([]string{"logs"})
	require.NoError(t, err)
	mp := list[0]
	_, growing := (&pass{mp: mp}).growState("app.log")
	require.True(t, growing, "a file that changed while read is growing")
	// It goes up as snapshots once it has kept changing for the bound.
	mp.memo.mu.Lock()
	mp.memo.growing["app.log"].due = time.Now()
	mp.memo.mu.Unlock()
}

func TestGrowingFileOnlyNewBytesTravel(t *testing.T) {
	f := growFixture(t)
	f.write("logs/app.log", pattern(20<<20, 1))
	makeGrowing(t, f, "logs/app.log")

	// First snapshot: no part hashes yet, everything is sent, in parts.
	require.NoError(t, f.sync(PassOptions{}))
	local, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ := f.be.data("remote/log/app.log")
	require.Equal(t, local, obj)
	row := f.row("logs", "app.log")
	require.Len(t, row.PartMD5, 3)
	require.Equal(t, composedETag(row.PartMD5), row.ETag)

	// It grows by 1 KiB: the two full parts are copied, the tail is sent.
	sentBefore := f.be.sent.Load()
	f.appendTo("logs/app.log", pattern(1024, 2))
	require.NoError(t, f.sync(PassOptions{}))
	local, _ = os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ = f.be.data("remote/log/app.log")
	require.Equal(t, local, obj, "the object is the file")
	require.Equal(t, int64(len(local)-16<<20), f.be.sent.Load()-sentBefore, "only the tail travelled")
	require.Equal(t, int64(16<<20), f.be.copied.Load())
	row = f.row("logs", "app.log")
	require.Equal(t, md5Hex(local[16<<20:]), fmt.Sprintf("%x", row.PartMD5[2]))
	require.Equal(t, composedETag(row.PartMD5), row.ETag)
	st := f.status("logs")
	require.Equal(t, int64(16<<20), st.BytesSavedByPartCopy)

	// Rewritten in the middle: the changed part and the ones after are sent.
	fh, err := os.OpenFile(filepath.Join(f.root, "logs/app.log"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fh.WriteAt([]byte("REWRITTEN"), 9<<20)
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	f.appendTo("logs/app.log", []byte("more\n"))
	sentBefore = f.be.sent.Load()
	require.NoError(t, f.sync(PassOptions{}))
	local, _ = os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ = f.be.data("remote/log/app.log")
	require.Equal(t, local, obj)
	require.Equal(t, int64(len(local)-8<<20), f.be.sent.Load()-sentBefore, "part 0 copied, parts 1.. sent")
}

func TestGrowingFileWholeUploadWhenServerRefusesPartCopy(t *testing.T) {
	f := growFixture(t)
	f.be.refuseCopy = true
	f.write("logs/app.log", pattern(17<<20, 3))
	makeGrowing(t, f, "logs/app.log")
	require.NoError(t, f.sync(PassOptions{}))
	f.appendTo("logs/app.log", []byte("one more line\n"))
	sentBefore := f.be.sent.Load()
	require.NoError(t, f.sync(PassOptions{}))
	local, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ := f.be.data("remote/log/app.log")
	require.Equal(t, local, obj)
	require.Equal(t, int64(len(local)), f.be.sent.Load()-sentBefore, "sent whole")
	require.True(t, f.eng.partCopyRefused(), "the refusal is remembered")
	require.Equal(t, int64(0), f.be.copied.Load())
}

func TestRotatedLogIsCopiedServerSide(t *testing.T) {
	f := growFixture(t)
	f.write("logs/app.log", pattern(18<<20, 4))
	makeGrowing(t, f, "logs/app.log")
	require.NoError(t, f.sync(PassOptions{}))
	old, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))

	// logrotate: rename, then a new file under the old name.
	require.NoError(t, os.Rename(filepath.Join(f.root, "logs/app.log"), filepath.Join(f.root, "logs/app.log.1")))
	f.write("logs/app.log", []byte("fresh start\n"))
	sentBefore := f.be.sent.Load()
	require.NoError(t, f.sync(PassOptions{}))

	rotated, _ := f.be.data("remote/log/app.log.1")
	require.True(t, bytes.Equal(old, rotated), "the rotated object is the rotated file")
	cur, _ := f.be.data("remote/log/app.log")
	require.Equal(t, "fresh start\n", string(cur), "no mixed content")
	require.Less(t, f.be.sent.Load()-sentBefore, int64(8<<20), "the rotated file was not sent whole")
	require.GreaterOrEqual(t, f.be.copied.Load(), int64(16<<20))
	// The journal agrees: nothing left to do.
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	require.Equal(t, int64(0), f.status("logs").Pending)
}

func TestSmallGrowingFileIsSentAsAPrefixSnapshot(t *testing.T) {
	f := growFixture(t)
	f.write("logs/app.log", []byte("line 1\n"))
	makeGrowing(t, f, "logs/app.log")
	require.NoError(t, f.sync(PassOptions{}))
	obj, _ := f.be.data("remote/log/app.log")
	local, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	require.Equal(t, local, obj)
	st := f.status("logs")
	require.WithinDuration(t, time.Now(), st.OldestUnsent, 5*time.Second)
	require.False(t, errors.Is(nil, errTorn))
}

func TestFirstSnapshotCopiesThePartsOfTheWholeUpload(t *testing.T) {
	f := growFixture(t)
	f.write("logs/app.log", pattern(40<<20, 5))
	require.NoError(t, f.sync(PassOptions{})) // settled: today's upload, in 16 MiB parts, no part hashes kept
	require.Empty(t, f.row("logs", "app.log").PartMD5)
	f.appendTo("logs/app.log", []byte("appended\n"))
	makeGrowing(t, f, "logs/app.log")
	sentBefore := f.be.sent.Load()
	require.NoError(t, f.sync(PassOptions{}))
	local, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ := f.be.data("remote/log/app.log")
	require.Equal(t, local, obj)
	require.Equal(t, int64(32<<20), f.be.copied.Load(), "the two full 16 MiB parts of the whole upload were copied")
	require.Equal(t, int64(len(local)-32<<20), f.be.sent.Load()-sentBefore)
	row := f.row("logs", "app.log")
	require.Equal(t, int64(16<<20), row.PartSize)
	require.Equal(t, composedETag(row.PartMD5), row.ETag)
}

// A log held open and appended to (never closed, never settled) reaches
// the bucket at least every MaxStaleness while Run runs: the watcher hears
// its writes, and snapshots follow.
func TestLogHeldOpenReachesTheBucketWithinMaxStaleness(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	const staleness = 2 * time.Second
	f := newMemFixture(t, func(o *Options) { o.MaxStaleness = staleness; o.Interval = time.Hour })
	require.NoError(t, os.MkdirAll(filepath.Join(f.root, "logs"), 0o755))
	f.configure(f.egress("logs", "logs", "remote/log"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.eng.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond) // the first pass and the watcher

	fh, err := os.OpenFile(filepath.Join(f.root, "logs/app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer fh.Close()
	type mark struct {
		size int64
		at   time.Time
	}
	var marks []mark
	size := int64(0)
	worst := time.Duration(0)
	end := time.Now().Add(8 * staleness)
	for time.Now().Before(end) {
		n, err := fh.WriteString(fmt.Sprintf("%s line\n", time.Now().Format(time.RFC3339Nano)))
		require.NoError(t, err)
		size += int64(n)
		marks = append(marks, mark{size, time.Now()})
		time.Sleep(100 * time.Millisecond)
		obj, _ := f.be.data("remote/log/app.log")
		local, err := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
		require.NoError(t, err)
		require.True(t, bytes.HasPrefix(local, obj), "the object is always a prefix of the file (a snapshot that existed)")
		for _, m := range marks {
			if m.size > int64(len(obj)) {
				worst = max(worst, time.Since(m.at))
				break
			}
		}
	}
	// Margin for a loaded machine: the bound plus a few seconds.
	require.Less(t, worst, staleness+4*time.Second, "worst lag of the object behind the file")
	obj, _ := f.be.data("remote/log/app.log")
	require.NotEmpty(t, obj, "the log held open was uploaded")
	st := f.status("logs")
	require.Less(t, time.Since(st.OldestUnsent), staleness+4*time.Second)
	t.Logf("worst lag %s with MaxStaleness %s", worst, staleness)
}

// A file rewritten in the middle between the read that hashes a part and the
// read that sends it is never committed torn: the part's MD5 is refused, the
// upload aborted and retried; after growTries in a row it is reported.
func TestRewrittenMiddleIsNeverUploadedTorn(t *testing.T) {
	f := growFixture(t)
	f.write("logs/app.log", pattern(20<<20, 6))
	makeGrowing(t, f, "logs/app.log")
	require.NoError(t, f.sync(PassOptions{}))
	before, _ := f.be.data("remote/log/app.log")

	f.appendTo("logs/app.log", []byte("more\n"))
	flip := byte(0)
	f.be.beforeParts = func() {
		flip++
		fh, err := os.OpenFile(filepath.Join(f.root, "logs/app.log"), os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = fh.WriteAt([]byte{flip}, 17<<20) // in the tail part
		require.NoError(t, err)
		require.NoError(t, fh.Close())
	}
	for i := range growTries {
		err := f.sync(PassOptions{})
		obj, _ := f.be.data("remote/log/app.log")
		require.Equal(t, before, obj, "try %d: the object is still the last good snapshot", i+1)
		if i < growTries-1 {
			require.NoError(t, err, "retried, pending")
			require.Equal(t, int64(1), f.status("logs").Pending)
		} else {
			require.ErrorIs(t, err, errTorn, "reported after %d tries", growTries)
		}
	}
	f.be.beforeParts = nil
	f.eng.inspect(t, "logs", func(ls *loopState) { clear(ls.retry) }) // skip the backoff
	require.NoError(t, f.sync(PassOptions{}))
	local, _ := os.ReadFile(filepath.Join(f.root, "logs/app.log"))
	obj, _ := f.be.data("remote/log/app.log")
	require.Equal(t, local, obj, "once the writer stops rewriting, the file goes up")
}
