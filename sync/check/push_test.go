package check

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// check and a push agree: after the engine uploads a tree holding what a
// sync skips (a symlink, a FIFO, the engine's temp file, a conflict copy),
// awkward names, and a directory marker object in the bucket, check finds
// the trees equal, and the files it matches are exactly the objects the
// push wrote.
func TestCheckAgreesWithPush(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	cl := srv.Client()
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	names := []string{"a b.txt", "a.txt", "a/b", "a-b/x", "a0", "é/ü 1", "100%/x+y=z", "q?&#.bin", "Z", "big/f"}
	for _, n := range names {
		data := []byte(n)
		if n == "big/f" {
			data = bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: the engine may upload it in parts
		}
		writeFile(t, dir, n, data)
	}
	writeFile(t, dir, "a/.flotta-tmp-x", []byte("download in progress"))
	writeFile(t, dir, "a/b.flotta-conflict-20260101T000000Z.txt", []byte("a kept copy"))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	// A directory marker, as consoles create for an empty "folder".
	_, err := cl.PutObject(ctx, "bkt", "p/folder/", bytes.NewReader(nil), 0, minio.PutObjectOptions{})
	require.NoError(t, err)

	eng, err := datasync.New(datasync.Options{StateDir: t.TempDir(), Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	access, secret := srv.Credentials()
	ep := &datasync.Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: access, SecretKey: secret}
	require.NoError(t, eng.Configure(ep, []datasync.Mapping{{ID: "m", Direction: datasync.Egress, Root: root, LocalDir: dir, Bucket: "bkt", Prefix: "p"}}))
	require.NoError(t, eng.SyncNow(ctx, "m"))

	var pushed []string
	for obj := range cl.ListObjectsIter(ctx, "bkt", minio.ListObjectsOptions{Prefix: "p/", Recursive: true}) {
		require.NoError(t, obj.Err)
		if !strings.HasSuffix(obj.Key, "/") {
			pushed = append(pushed, strings.TrimPrefix(obj.Key, "p/"))
		}
	}
	var matched []string
	sum, err := Run(ctx, cl, Options{Dir: dir, Bucket: "bkt", Prefix: "p"}, func(r Result) {
		assert.Equal(t, Match, r.Kind, "%s %s", r.Path, r.Detail)
		matched = append(matched, r.Path)
	})
	require.NoError(t, err)
	assert.True(t, sum.Equal(), "%+v", sum)
	assert.Zero(t, sum.SizeOnly, "compared by content")
	assert.Equal(t, int64(4), sum.Skipped, "the symlink, the FIFO, the temp file, the conflict copy")
	sort.Strings(matched)
	sort.Strings(names)
	assert.Equal(t, names, pushed, "the push uploaded every file and nothing else")
	assert.Equal(t, pushed, matched, "check matches exactly what the push uploaded")
}

// An empty key ending in "/" is a directory marker, not an object, whether
// or not the directory exists. (A marker with content, which a sync refuses
// and check reports as extra, cannot be written to versitygw.)
func TestDirectoryMarkers(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	cl := srv.Client()
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, dir, "d/f", []byte("f"))
	for key, data := range map[string]string{"p/d/": "", "p/d/f": "f", "p/e/": ""} {
		_, err := cl.PutObject(ctx, "bkt", key, strings.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
		require.NoError(t, err)
	}
	got := map[string]Result{}
	sum, err := Run(ctx, cl, Options{Dir: dir, Bucket: "bkt", Prefix: "p"}, func(r Result) { got[r.Path] = r })
	require.NoError(t, err)
	assert.Equal(t, Summary{Matching: 1}, sum)
	assert.Equal(t, map[string]Result{"d/f": {Kind: Match, Path: "d/f"}}, got)
}
