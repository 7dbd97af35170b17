package check

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

func writeFile(t *testing.T, root, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, data, 0o644))
}

// The files are compared in key order, and what a sync never uploads is
// skipped, not reported.
func TestRunIsInKeyOrder(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	root := t.TempDir()
	names := []string{"a.txt", "a/b", "a/b.c/d", "a/b-c", "a0", "a-b/x", "b", "é/1", "Z", "a/.flotta-tmp-x"}
	for _, n := range names {
		writeFile(t, root, n, []byte(n))
	}
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(root, "link")))
	var got []string
	sum, err := Run(context.Background(), srv.Client(), Options{Dir: root, Bucket: "bkt", Prefix: "p"}, func(r Result) {
		assert.Equal(t, Missing, r.Kind, r.Path)
		got = append(got, r.Path)
	})
	require.NoError(t, err)
	want := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "a/.flotta-tmp-x" })
	sort.Strings(want)
	assert.Equal(t, want, got, "byte order of keys, as S3 lists them")
	assert.Equal(t, int64(2), sum.Skipped, "the symlink and the temp file")
}

func TestRun(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	cl := srv.Client()
	ctx := context.Background()
	dir := t.TempDir()
	put := func(key string, data []byte, opts minio.PutObjectOptions) {
		_, err := cl.PutObject(ctx, "bkt", key, bytes.NewReader(data), int64(len(data)), opts)
		require.NoError(t, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 6<<16) // 6 MiB: two parts of 5 MiB
	multipart := minio.PutObjectOptions{PartSize: 5 << 20}
	for rel, data := range map[string]string{"same": "same", "a.txt": "a", "a/b": "ab", "a0": "x", "size": "short"} {
		writeFile(t, dir, rel, []byte(data))
		put("p/"+rel, []byte(data), minio.PutObjectOptions{})
	}
	writeFile(t, dir, "content", []byte("local"))
	put("p/content", []byte("bucket"[:5]), minio.PutObjectOptions{})
	writeFile(t, dir, "size", []byte("longer"))
	writeFile(t, dir, "only/here", []byte("m"))
	put("p/only-there", []byte("e"), minio.PutObjectOptions{})
	put("p/dir-marker/", nil, minio.PutObjectOptions{})
	put("other/same", []byte("not under the prefix"), minio.PutObjectOptions{})
	writeFile(t, dir, "big/same", big)
	put("p/big/same", big, multipart)
	changed := slices.Clone(big)
	changed[1000] ^= 1
	writeFile(t, dir, "big/changed", changed)
	put("p/big/changed", big, multipart)
	// The engine records the part size: no download needed.
	recorded := minio.PutObjectOptions{PartSize: 5 << 20, UserMetadata: map[string]string{"Flotta-Part-Size": "5242880"}}
	writeFile(t, dir, "big/recorded", big)
	put("p/big/recorded", big, recorded)
	writeFile(t, dir, "big/recorded-changed", changed)
	put("p/big/recorded-changed", big, recorded)

	run := func(download bool) (Summary, map[string]Result) {
		got := map[string]Result{}
		sum, err := Run(ctx, cl, Options{Dir: dir, Bucket: "bkt", Prefix: "p", Download: download}, func(r Result) {
			_, dup := got[r.Path]
			assert.False(t, dup, "one result per path: %s", r.Path)
			got[r.Path] = r
		})
		require.NoError(t, err)
		return sum, got
	}
	sum, got := run(false)
	assert.Equal(t, Summary{Matching: 7, Missing: 1, Differing: 3, Extra: 1, SizeOnly: 2}, sum)
	assert.False(t, sum.Equal())
	for path, kind := range map[string]Kind{"same": Match, "a.txt": Match, "a/b": Match, "a0": Match, "size": Differ,
		"content": Differ, "only/here": Missing, "only-there": Extra, "big/same": Match, "big/changed": Match,
		"big/recorded": Match, "big/recorded-changed": Differ} {
		assert.Equal(t, kind, got[path].Kind, path)
	}
	assert.True(t, got["big/changed"].SizeOnly, "a multipart ETag is no MD5")
	assert.False(t, got["big/recorded"].SizeOnly, "compared by its multipart ETag")
	assert.Equal(t, "multipart ETag differs", got["big/recorded-changed"].Detail)
	assert.Contains(t, got["size"].Detail, "size 6 in the directory, 5 in the bucket")

	sum, got = run(true)
	assert.Equal(t, Summary{Matching: 6, Missing: 1, Differing: 4, Extra: 1}, sum)
	assert.Equal(t, Differ, got["big/changed"].Kind)
	assert.Equal(t, Match, got["big/same"].Kind)

	// The same trees are equal.
	require.NoError(t, os.Remove(filepath.Join(dir, "only", "here")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "size"), []byte("short"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "content"), []byte("bucke"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big", "changed"), big, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big", "recorded-changed"), big, 0o644))
	writeFile(t, dir, "only-there", []byte("e"))
	sum, _ = run(true)
	assert.True(t, sum.Equal(), "%+v", sum)
	assert.Equal(t, int64(11), sum.Matching)

	_, err := Run(ctx, cl, Options{Dir: filepath.Join(dir, "nope"), Bucket: "bkt", Prefix: "p"}, func(Result) {})
	assert.Error(t, err)
	_, err = Run(ctx, cl, Options{Dir: dir, Bucket: "no-such-bucket", Prefix: "p"}, func(Result) {})
	assert.Error(t, err)
}
