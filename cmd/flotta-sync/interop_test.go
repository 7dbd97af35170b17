package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// TestPullKeepsALocalEditAsAConflictCopy: a pulled file edited on the
// device, then its object replaced: the next pull writes the new object and
// keeps the edit beside it, says so, and exits 0.
func TestPullKeepsALocalEditAsAConflictCopy(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	dst, state := t.TempDir(), t.TempDir()
	put := func(data string) {
		_, err := srv.Client().PutObject(context.Background(), "bkt", "cfg/settings.json", strings.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
		require.NoError(t, err)
	}
	pull := func() (string, int) {
		var out bytes.Buffer
		code := run([]string{"pull", "s3://bkt/cfg", dst, "--endpoint", srv.URL(), "--state", state, "--min-free", "-1"}, &out, &out)
		return out.String(), code
	}
	put(`{"v":1}`)
	out, code := pull()
	require.Equal(t, 0, code, out)
	require.NoError(t, os.WriteFile(filepath.Join(dst, "settings.json"), []byte(`{"v":1,"mine":true}`), 0o644))
	out, code = pull()
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "downloaded 0 files", "object unchanged: the edit stays")

	put(`{"v":2}`)
	var dry bytes.Buffer
	require.Equal(t, 0, run([]string{"pull", "--dry-run", "s3://bkt/cfg", dst, "--endpoint", srv.URL(), "--state", state}, &dry, &dry))
	assert.Regexp(t, `(?m)^conflict +cfg/settings\.json `, dry.String())
	assert.Contains(t, dry.String(), "(1 of them over a local edit, kept as a conflict copy)")

	out, code = pull()
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "1 local edits kept as conflict copies")
	assert.Regexp(t, `file changed on the device and in the bucket.*settings\.flotta-conflict-\d{8}T\d{6}Z\.json`, out, "a warning names the copy")
	got, err := os.ReadFile(filepath.Join(dst, "settings.json"))
	require.NoError(t, err)
	assert.Equal(t, `{"v":2}`, string(got))
	copies, err := filepath.Glob(filepath.Join(dst, "settings.flotta-conflict-*.json"))
	require.NoError(t, err)
	require.Len(t, copies, 1)
	got, err = os.ReadFile(copies[0])
	require.NoError(t, err)
	assert.Equal(t, `{"v":1,"mine":true}`, string(got))
}

// TestPullFromASilentServer: a server that accepts the connection and never
// answers is given up on within 30 s with the default timeouts (each request
// tried 3 times), exit status 1. Skipped under -short: it waits about 25 s.
func TestPullFromASilentServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 25 s for the default timeouts")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secretsecret")
	var out bytes.Buffer
	start := time.Now()
	code := run([]string{"pull", "s3://bkt/p", t.TempDir(), "--endpoint", "http://" + l.Addr().String(), "--state", t.TempDir()}, &out, &out)
	took := time.Since(start)
	t.Logf("gave up after %s, %d connections:\n%s", took, accepted.Load(), out.String())
	assert.Equal(t, 1, code)
	assert.Less(t, took, 30*time.Second)
	assert.Contains(t, out.String(), "server not answering")
}

// rclone runs Debian's rclone (/usr/bin/rclone) against srv as the remote
// "x:" (configured through the environment, no config file).
func rclone(t *testing.T, srv *s3test.Server, args ...string) {
	t.Helper()
	bin := "/usr/bin/rclone"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("Debian's rclone is needed (apt-get install rclone): %v", err)
	}
	cmd := exec.Command(bin, args...)
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AWS_CA_BUNDLE=") && !strings.HasPrefix(e, "RCLONE_") {
			env = append(env, e) // rclone 1.60 fails on the environment's CA bundle
		}
	}
	cmd.Env = append(env, "RCLONE_CONFIG=/dev/null", "RCLONE_CONFIG_X_TYPE=s3", "RCLONE_CONFIG_X_PROVIDER=Other",
		"RCLONE_CONFIG_X_ACCESS_KEY_ID="+s3test.AccessKey, "RCLONE_CONFIG_X_SECRET_ACCESS_KEY="+s3test.SecretKey,
		"RCLONE_CONFIG_X_ENDPOINT="+srv.URL(), "RCLONE_CONFIG_X_REGION="+s3test.Region)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "rclone %v: %s", args, out)
}

// TestMtimeInteropWithRclone: a file pushed by flotta-sync and copied down
// by rclone keeps its mtime, and so does a file copied up by rclone and
// pulled by flotta-sync (both carry it as X-Amz-Meta-Mtime).
func TestMtimeInteropWithRclone(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	mt := time.Date(2024, 12, 2, 19, 28, 7, 123456789, time.UTC)
	write := func(dir, name string) {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte("content of "+name), 0o644))
		require.NoError(t, os.Chtimes(p, mt, mt))
	}
	mtimeOf := func(p string) time.Time {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		return fi.ModTime().UTC()
	}
	// Uploaded long after the file was written: LastModified is now.
	time.Sleep(1100 * time.Millisecond)

	// flotta-sync push -> rclone copy.
	src, down := t.TempDir(), t.TempDir()
	write(src, "a.txt")
	write(src, "d/b.bin")
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"push", src, "s3://bkt/from-flotta", "--endpoint", srv.URL(), "--state", t.TempDir()}, &out, &out), out.String())
	rclone(t, srv, "copy", "x:bkt/from-flotta", down)
	assert.Equal(t, mt, mtimeOf(filepath.Join(down, "a.txt")))
	assert.Equal(t, mt, mtimeOf(filepath.Join(down, "d/b.bin")))

	// rclone copy -> flotta-sync pull.
	src2, pulled := t.TempDir(), t.TempDir()
	write(src2, "c.txt")
	write(src2, "e/f.bin")
	rclone(t, srv, "copy", src2, "x:bkt/from-rclone")
	out.Reset()
	require.Equal(t, 0, run([]string{"pull", "s3://bkt/from-rclone", pulled, "--endpoint", srv.URL(), "--state", t.TempDir(), "--min-free", "-1"}, &out, &out), out.String())
	assert.Equal(t, mt, mtimeOf(filepath.Join(pulled, "c.txt")))
	assert.Equal(t, mt, mtimeOf(filepath.Join(pulled, "e/f.bin")))

}
