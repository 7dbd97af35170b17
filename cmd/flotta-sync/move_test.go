package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// move is push, then remove what is confirmed: objects hold the content,
// the source keeps only what was written after.
func TestMove(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src, state := t.TempDir(), t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	files := map[string][]byte{"d/a": []byte("hello"), "b": bytes.Repeat([]byte("x"), 2048)}
	for rel, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(src, rel), b, 0o644))
	}
	time.Sleep(60 * time.Millisecond)

	var out bytes.Buffer
	code := run([]string{"move", src, "s3://bkt/m", "--endpoint", srv.URL(), "--state", state, "--order-by", "modtime,descending"}, &out, &out)
	require.Equal(t, 0, code, out.String())
	assert.Contains(t, out.String(), "uploaded 2 files")
	assert.Contains(t, out.String(), "removed 2 files, 2.0 KiB")
	for rel, b := range files {
		_, err := os.Lstat(filepath.Join(src, rel))
		assert.True(t, os.IsNotExist(err), rel)
		o, err := srv.Client().GetObject(context.Background(), "bkt", "m/"+rel, minio.GetObjectOptions{})
		require.NoError(t, err)
		var got bytes.Buffer
		_, err = got.ReadFrom(o)
		require.NoError(t, err)
		assert.Equal(t, b, got.Bytes(), rel)
	}
	assert.DirExists(t, filepath.Join(src, "d"), "directories stay")
}

func TestOrderBy(t *testing.T) {
	for v, want := range map[string]string{"": "", "modtime": "oldest-first", "modtime,ascending": "oldest-first",
		"modtime,asc": "oldest-first", "modtime,descending": "newest-first", "modtime,desc": "newest-first"} {
		got, err := parseOrderBy(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, string(got), v)
	}
	for _, v := range []string{"size", "modtime,sideways", "name,ascending"} {
		_, err := parseOrderBy(v)
		assert.ErrorContains(t, err, fmt.Sprintf("--order-by %q", v))
	}
	var out bytes.Buffer
	assert.Equal(t, 2, run([]string{"pull", "s3://b/p", t.TempDir(), "--endpoint", "http://x", "--order-by", "modtime"}, &out, &out),
		"pull has no --order-by")
}
