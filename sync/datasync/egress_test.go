package datasync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEgressFirstChangedUnchanged(t *testing.T) {
	f := newMemFixture(t)
	f.write("stats/a.txt", []byte("alpha"))
	f.write("stats/sub/deep/b.bin", bytes.Repeat([]byte{7}, 100000))
	f.write("stats/empty", nil)
	f.write("outside/secret", []byte("never uploaded"))
	require.NoError(t, os.Symlink(filepath.Join(f.root, "outside"), filepath.Join(f.root, "stats/link")))
	require.NoError(t, os.Symlink(filepath.Join(f.root, "outside/secret"), filepath.Join(f.root, "stats/flink")))
	f.configure(f.egress("e1", "stats", "dev/statistics"))

	require.NoError(t, f.syncNow())
	assert.ElementsMatch(t, []string{"dev/statistics/a.txt", "dev/statistics/sub/deep/b.bin", "dev/statistics/empty"},
		f.be.keys())
	assert.Equal(t, []byte("alpha"), f.mustGet("dev/statistics/a.txt"))
	assert.Equal(t, bytes.Repeat([]byte{7}, 100000), f.mustGet("dev/statistics/sub/deep/b.bin"))
	info, err := f.be.Stat(context.Background(), bucket, "dev/statistics/a.txt")
	require.NoError(t, err)
	assert.Equal(t, "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8", lookup(info.Meta, metaSHA256))
	assert.NotEmpty(t, lookup(info.Meta, metaMtime))
	st := f.status("e1")
	assert.Equal(t, int64(3), st.FilesLastPass)
	assert.Equal(t, int64(100005), st.BytesLastPass)
	assert.Empty(t, st.LastError)
	assert.False(t, st.LastSuccess.IsZero())

	// Idle: nothing changed, not a single request.
	requests := f.be.requests()
	require.NoError(t, f.syncNow())
	assert.Equal(t, requests, f.be.requests(), "idle egress pass must make no S3 request")
	assert.Zero(t, f.status("e1").FilesLastPass)
	assert.Equal(t, int64(3), f.status("e1").FilesTotal)

	// One file changed (same size), one new: exactly two uploads.
	time.Sleep(20 * time.Millisecond)
	f.write("stats/a.txt", []byte("ALPHA"))
	f.write("stats/sub/c.txt", []byte("new"))
	requests, puts := f.be.requests(), f.be.puts.Load()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(2), f.be.requests()-requests)
	assert.Equal(t, int64(2), f.be.puts.Load()-puts)
	assert.Equal(t, []byte("ALPHA"), f.mustGet("dev/statistics/a.txt"))
	assert.Equal(t, []byte("new"), f.mustGet("dev/statistics/sub/c.txt"))

	// Egress never deletes objects.
	require.NoError(t, os.Remove(filepath.Join(f.root, "stats/a.txt")))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("ALPHA"), f.mustGet("dev/statistics/a.txt"))
}

func lookup(m map[string]string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// TestEgressFileRewrittenDuringUpload: the file changes after it was opened
// and hashed, before its body is sent. The upload must fail before the
// server commits anything, then succeed on the next pass with the new
// content. (While the body is being sent: TestEgressFileRewrittenMidBody.)
func TestEgressFileRewrittenDuringUpload(t *testing.T) {
	for _, size := range []int{300 << 10, 17 << 20} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			f := newMemFixture(t)
			f.write("out/f", bytes.Repeat([]byte("a"), size))
			f.configure(f.egress("e1", "out", "p"))
			time.Sleep(20 * time.Millisecond) // the rewrite below gets a new mtime
			var once sync.Once
			f.eng.hooks.beforeUpload = func(string) {
				once.Do(func() { f.write("out/f", bytes.Repeat([]byte("b"), size)) }) // same size
			}
			require.NoError(t, f.syncNow(), "a file still being written is pending, not an error")
			assert.False(t, f.has("p/f"), "no object may be committed from a changing file")
			st := f.status("e1")
			assert.Equal(t, int64(1), st.Pending)
			assert.False(t, st.OldestPending.IsZero())
			assert.Zero(t, st.FilesLastPass)

			f.eng.hooks.beforeUpload = nil
			require.NoError(t, f.syncNow())
			assert.Equal(t, bytes.Repeat([]byte("b"), size), f.mustGet("p/f"))
			assert.Zero(t, f.status("e1").Pending)
			assert.True(t, f.status("e1").OldestPending.IsZero())
		})
	}
}

// TestEgressFileRewrittenMidBody is the wire half of the test above: the
// file changes while its body is on its way to the server (a single PUT and
// a multipart upload). The server must commit nothing.
func TestEgressFileRewrittenMidBody(t *testing.T) {
	for _, size := range []int{300 << 10, 17 << 20} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			f := newFixture(t)
			f.write("out/f", bytes.Repeat([]byte("a"), size))
			f.configure(f.egress("e1", "out", "p"))
			time.Sleep(20 * time.Millisecond) // the rewrite below gets a new mtime
			var once sync.Once
			fn := func() { once.Do(func() { f.write("out/f", bytes.Repeat([]byte("b"), size)) }) } // same size
			f.midBody.Store(&fn)
			require.NoError(t, f.syncNow(), "a file still being written is pending, not an error")
			_, err := f.stat("p/f")
			assert.Error(t, err, "no object may be committed from a changing file")
			assert.Equal(t, int64(1), f.status("e1").Pending)

			f.midBody.Store(nil)
			require.NoError(t, f.syncNow())
			assert.Equal(t, bytes.Repeat([]byte("b"), size), f.mustGet("p/f"))
			assert.Zero(t, f.status("e1").Pending)
		})
	}
}

// TestEgressAdoptsAfterLostJournal: a reinstall loses the journal; objects
// already uploaded are adopted, not uploaded again.
func TestEgressAdoptsAfterLostJournal(t *testing.T) {
	f := newMemFixture(t)
	for i := range 20 {
		f.write(filepath.Join("out", "d", string(rune('a'+i))), bytes.Repeat([]byte{byte(i)}, 1000+i))
	}
	f.configure(f.egress("e1", "out", "p"))
	require.NoError(t, f.syncNow())
	require.Len(t, f.be.keys(), 20)

	require.NoError(t, f.eng.Close())
	require.NoError(t, os.RemoveAll(f.state))
	time.Sleep(20 * time.Millisecond)
	f.write("out/d/a", []byte("changed while the journal was gone"))
	f.start()
	puts := f.be.puts.Load()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(1), f.be.puts.Load()-puts, "only the changed file is uploaded")
	assert.Equal(t, int64(1), f.status("e1").FilesLastPass)
	assert.Equal(t, []byte("changed while the journal was gone"), f.mustGet("p/d/a"))

	// From now on the journal knows everything: idle again.
	requests := f.be.requests()
	require.NoError(t, f.syncNow())
	assert.Equal(t, requests, f.be.requests())
}

// TestEgressAdoptsMultipartByETag: a multipart upload is not hashed ahead,
// so its object carries no SHA-256; a lost journal recognises it by the
// multipart ETag computed locally at the engine's part size, straight from
// the listing (no HEAD). A file of the same size but other content is
// uploaded again.
func TestEgressAdoptsMultipartByETag(t *testing.T) {
	f := newFixture(t)
	f.write("out/big", bytes.Repeat([]byte("z"), 17<<20))
	f.write("out/other", bytes.Repeat([]byte("y"), 17<<20))
	f.configure(f.egress("e1", "out", "p"))
	require.NoError(t, f.syncNow())
	info, err := f.stat("p/big")
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(info.ETag, "-2"), "expected a multipart ETag of 2 parts, got %s", info.ETag)
	assert.Equal(t, "16777216", metaValue(info.UserMetadata, metaPartSize))
	assert.Empty(t, metaValue(info.UserMetadata, metaSHA256), "multipart uploads are not hashed ahead")

	require.NoError(t, f.eng.Close())
	require.NoError(t, os.RemoveAll(f.state))
	time.Sleep(20 * time.Millisecond)
	changed := append(bytes.Repeat([]byte("y"), 17<<20-1), 'x') // same size, same part count
	f.write("out/other", changed)
	f.start()
	f.count.Reset()
	require.NoError(t, f.syncNow())
	// LIST; big adopted from the listing; other: a HEAD (its metadata might
	// name another part size), ListMultipartUploads (none to resume),
	// CreateMultipartUpload, 2 parts, CompleteMultipartUpload.
	assert.Equal(t, int64(4), f.count.Writes(), "only the changed file is uploaded")
	assert.Equal(t, int64(7), f.count.Requests(), "adoption by ETag needs no HEAD")
	assert.Equal(t, int64(1), f.status("e1").FilesLastPass)
	assert.Equal(t, changed, f.mustGet("p/other"))

	f.count.Reset()
	require.NoError(t, f.syncNow())
	assert.Zero(t, f.count.Requests())
}

// TestEgressAdoptsByMetadata: objects whose ETag does not match at the
// engine's part size are adopted by their metadata: the part size they were
// uploaded with, or the SHA-256 (objects from engines that stored it for
// multipart uploads too). Metadata that does not match is not adopted.
func TestEgressAdoptsByMetadata(t *testing.T) {
	f := newFixture(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 17<<16) // 17 MiB
	sum := sha256.Sum256(data)
	put := func(key string, partSize uint64, meta map[string]string) {
		_, err := f.srv.Client().PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{DisableContentSha256: true, PartSize: partSize, UserMetadata: meta})
		require.NoError(t, err, key)
	}
	put("p/by-part-size", 5<<20, map[string]string{metaPartSize: strconv.Itoa(5 << 20)})
	put("p/by-sha", 5<<20, map[string]string{metaSHA256: hex.EncodeToString(sum[:])})
	put("p/wrong-part-size", 5<<20, map[string]string{metaPartSize: strconv.Itoa(6 << 20)})
	put("p/no-metadata", 5<<20, nil)
	for _, name := range []string{"by-part-size", "by-sha", "wrong-part-size", "no-metadata"} {
		f.write("out/"+name, data)
	}
	f.configure(f.egress("e1", "out", "p"))
	f.count.Reset()
	require.NoError(t, f.syncNow())
	assert.Equal(t, int64(2), f.status("e1").FilesLastPass, "the two objects without usable metadata are uploaded again")
	assert.Equal(t, int64(2*4), f.count.Writes())
	for _, name := range []string{"wrong-part-size", "no-metadata"} {
		info, err := f.stat("p/" + name)
		require.NoError(t, err)
		assert.True(t, strings.HasSuffix(info.ETag, "-2"), "%s re-uploaded at the engine's part size: %s", name, info.ETag)
	}
}

func metaValue(m map[string]string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func TestEgressJournalFollowsMappingChanges(t *testing.T) {
	f := newMemFixture(t)
	f.write("out/x", []byte("x"))
	f.configure(f.egress("e1", "out", "p1"))
	require.NoError(t, f.syncNow())
	// Same id, new prefix: the old journal says nothing about p2.
	f.configure(f.egress("e1", "out", "p2"))
	require.NoError(t, f.syncNow())
	assert.Equal(t, []byte("x"), f.mustGet("p2/x"))
}
