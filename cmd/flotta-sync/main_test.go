package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

func TestPushPull(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src, dst, state := t.TempDir(), filepath.Join(t.TempDir(), "not", "yet"), t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d", "a"), []byte("hello"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "b"), bytes.Repeat([]byte("x"), 2048), 0o644))
	time.Sleep(60 * time.Millisecond)

	var out bytes.Buffer
	code := run([]string{"push", src, "s3://bkt/some/prefix", "--endpoint", srv.URL(), "--state", state}, &out, &out)
	require.Equal(t, 0, code, out.String())
	assert.Regexp(t, `uploaded 2 files, 2\.0 KiB; \d+ S3 requests`, out.String())

	out.Reset()
	code = run([]string{"push", "--endpoint", srv.URL(), "--state", state, src, "s3://bkt/some/prefix"}, &out, &out)
	require.Equal(t, 0, code, out.String())
	assert.Contains(t, out.String(), "uploaded 0 files, 0 B; 0 S3 requests")

	out.Reset()
	code = run([]string{"pull", "s3://bkt/some/prefix", dst, "--endpoint", srv.URL(), "--state", state, "--concurrency", "2", "--min-free", "-1"}, &out, &out)
	require.Equal(t, 0, code, out.String())
	got, err := os.ReadFile(filepath.Join(dst, "d", "a"))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	assert.Contains(t, out.String(), "downloaded 2 files")

	// Quota: nothing new fits, yet nothing new is needed.
	out.Reset()
	require.NoError(t, os.WriteFile(filepath.Join(src, "big"), bytes.Repeat([]byte("y"), 10000), 0o644))
	time.Sleep(60 * time.Millisecond)
	require.Equal(t, 0, run([]string{"push", src, "s3://bkt/some/prefix", "--endpoint", srv.URL(), "--state", state}, &out, &out))
	out.Reset()
	code = run([]string{"pull", "s3://bkt/some/prefix", dst, "--endpoint", srv.URL(), "--state", state, "--max-bytes", "5000"}, &out, &out)
	assert.Equal(t, 3, code, "a refused download: done, but incomplete")
	assert.Contains(t, out.String(), "1 refused")
}

func TestFailures(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	src, state := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644))
	var out bytes.Buffer

	t.Setenv("AWS_ACCESS_KEY_ID", "")
	assert.Equal(t, 2, run([]string{"push", src, "s3://bkt/p", "--endpoint", srv.URL()}, &out, &out))
	assert.Contains(t, out.String(), "AWS_ACCESS_KEY_ID")

	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	out.Reset()
	assert.Equal(t, 1, run([]string{"push", src, "s3://bkt/p", "--endpoint", srv.URL(), "--state", state}, &out, &out))
	assert.NotContains(t, out.String(), "not-the-secret")

	for _, args := range [][]string{
		{"push", src},
		{"copy", src, "s3://bkt/p"},
		{"push", src, "http://b/p", "--endpoint", srv.URL()},
		{"push", src, "s3://bkt/p", "--endpoint", "ftp://x"},
	} {
		out.Reset()
		assert.Equal(t, 2, run(args, &out, &out), "%v", args)
	}
}

func TestTLSCAFile(t *testing.T) {
	srv := s3test.Start(t, s3test.WithTLS(), s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src, state := t.TempDir(), t.TempDir()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, srv.CAPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(src, "a"), []byte("tls"), 0o644))
	time.Sleep(60 * time.Millisecond)
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"push", src, "s3://bkt/p", "--endpoint", srv.URL(), "--ca-file", ca, "--state", state}, &out, &out), out.String())
	_, err := srv.Client().StatObject(context.Background(), "bkt", "p/a", minio.StatObjectOptions{})
	require.NoError(t, err)
	assert.Regexp(t, regexp.MustCompile(`uploaded 1 files`), out.String())
}

func TestPushMissingSourceIsAnError(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	missing := filepath.Join(t.TempDir(), "nope")
	var out bytes.Buffer
	assert.Equal(t, 2, run([]string{"push", missing, "s3://bkt/p", "--endpoint", "http://127.0.0.1:1", "--state", t.TempDir()}, &out, &out))
	assert.Contains(t, out.String(), "source "+missing+": no such file or directory")
}

func TestDryRunAndReconcile(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src, dst, state := t.TempDir(), filepath.Join(t.TempDir(), "dst"), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "big"), bytes.Repeat([]byte("y"), 10000), 0o644))
	time.Sleep(60 * time.Millisecond)
	flags := []string{"--endpoint", srv.URL(), "--state", state}
	cli := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(append(args, flags...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	keys := func() []string {
		var out []string
		for o := range srv.Client().ListObjects(context.Background(), "bkt", minio.ListObjectsOptions{Recursive: true}) {
			out = append(out, o.Key)
		}
		return out
	}

	code, list, summary := cli("push", "--dry-run", src, "s3://bkt/p")
	require.Equal(t, 0, code, summary)
	assert.Contains(t, list, "upload     p/a (5 B): new file")
	assert.Contains(t, summary, "dry run: would upload 2 files")
	assert.Empty(t, keys(), "a dry run uploads nothing")
	assert.NoFileExists(t, filepath.Join(state, "sync-journal.db"), "nor writes a journal")

	code, _, summary = cli("push", src, "s3://bkt/p")
	require.Equal(t, 0, code, summary)

	code, list, summary = cli("pull", "--dry-run", "s3://bkt/p", dst, "--max-bytes", "5000")
	require.Equal(t, 0, code, summary)
	assert.Contains(t, list, "download   p/a -> "+filepath.Join(dst, "a"))
	assert.Contains(t, list, "disk-guard p/big")
	assert.Contains(t, summary, "would download 1 files, 5 B; 0 refused; 1 skipped for the disk guard")
	assert.NoDirExists(t, dst, "a dry run writes no local file")

	// An object deleted behind the device's back: only a reconcile sees it.
	require.NoError(t, srv.Client().RemoveObject(context.Background(), "bkt", "p/a", minio.RemoveObjectOptions{}))
	code, _, summary = cli("push", src, "s3://bkt/p")
	require.Equal(t, 0, code, summary)
	assert.Contains(t, summary, "uploaded 0 files")
	code, list, summary = cli("push", "--dry-run", "--reconcile", src, "s3://bkt/p")
	require.Equal(t, 0, code, summary)
	assert.Contains(t, list, "object missing from the bucket")
	code, _, summary = cli("push", "--reconcile", src, "s3://bkt/p")
	require.Equal(t, 0, code, summary)
	assert.Contains(t, summary, "uploaded 1 files")
	assert.Equal(t, []string{"p/a", "p/big"}, keys())
}
