package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// testVersion is stamped into the binary the tests run, as the Makefile and
// the RPM stamp theirs.
const testVersion = "9.8.7-test"

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flotta-sync-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "flotta-sync")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build flotta-sync: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the built flotta-sync with args and returns its stdout, stderr
// and exit status.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run flotta-sync %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestBinaryHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out, errOut, code := cli(t, args...)
		assert.Equal(t, 0, code, "%v", args)
		assert.Empty(t, errOut, "%v", args)
		for _, want := range []string{"Usage:", "flotta-sync push DIR s3://BUCKET/PREFIX", "flotta-sync pull s3://BUCKET/PREFIX DIR",
			"version", "completion", "AWS_ACCESS_KEY_ID", "Exit status"} {
			assert.Contains(t, out, want, "%v", args)
		}
		assert.NotContains(t, out, "gen-man", "a build tool, hidden")
	}
	for _, args := range [][]string{{"push", "--help"}, {"push", "-h"}, {"help", "push"}, {"pull", "DIR", "--help"}} {
		out, errOut, code := cli(t, args...)
		assert.Equal(t, 0, code, "%v", args)
		assert.Empty(t, errOut, "%v", args)
		assert.Regexp(t, `Usage:\n  flotta-sync (push DIR s3://BUCKET/PREFIX|pull s3://BUCKET/PREFIX DIR) \[flags\]`, out, "%v", args)
		for _, flag := range []string{"--endpoint", "-P, --progress", "--stats duration", "-n, --dry-run", "--json", "--log-format", "--bwlimit"} {
			assert.Contains(t, out, flag, "%v", args)
		}
	}
	out, _, _ := cli(t, "pull", "--help")
	assert.Contains(t, out, "--min-free size")
	assert.Contains(t, out, "--restore")
	out, _, _ = cli(t, "push", "--help")
	assert.NotContains(t, out, "--min-free", "push has no disk guard")

	// Usage errors go to stderr with status 2, Go-style single-dash long
	// flags included.
	for _, args := range [][]string{{}, {"copy", "a", "s3://b/p"}, {"push", "onlyone"}, {"push", "--nope", "a", "s3://b/p"},
		{"push", "-endpoint", "http://x", "a", "s3://b/p"}, {"push", "a", "s3://b/p", "--stats", "soon"}} {
		out, errOut, code := cli(t, args...)
		assert.Equal(t, 2, code, "%v", args)
		assert.Empty(t, out, "%v", args)
		assert.Contains(t, errOut, "flotta-sync: ", "%v", args)
		assert.Contains(t, errOut, `Run "flotta-sync help"`, "%v", args)
	}
}

func TestBinaryVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		out, _, code := cli(t, arg)
		assert.Equal(t, 0, code)
		assert.Equal(t, "flotta-sync "+testVersion+"\n", out)
	}
}

func TestBinarySizes(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src, state := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "ten-k"), bytes.Repeat([]byte("z"), 10<<10), 0o644))
	time.Sleep(60 * time.Millisecond)
	_, errOut, code := cli(t, "push", src, "s3://bkt/p", "--endpoint", srv.URL(), "--state", state)
	require.Equal(t, 0, code, errOut)

	pull := func(extra ...string) (string, int) {
		dst := t.TempDir()
		_, errOut, code := cli(t, append([]string{"pull", "s3://bkt/p", dst, "--endpoint", srv.URL(), "--state", t.TempDir()}, extra...)...)
		return errOut, code
	}
	errOut, code = pull("--max-bytes", "9K", "--min-free", "-1")
	assert.Equal(t, 3, code, errOut)
	assert.Contains(t, errOut, "1 refused", "10 KiB does not fit in 9K")
	for _, quota := range []string{"10K", "10KiB", "10kb", "0.01M", "10240", "0", "-1"} {
		errOut, code = pull("--max-bytes", quota, "--min-free", "1M")
		assert.Equal(t, 0, code, "--max-bytes %s: %s", quota, errOut)
		assert.Contains(t, errOut, "downloaded 1 files", quota)
	}
	errOut, code = pull("--min-free", "1000T")
	assert.Equal(t, 3, code, errOut)
	assert.Contains(t, errOut, "1 refused", "nothing leaves 1000 TiB free")

	for _, bad := range []string{"1Q", "-2", "lots", "1.5"} {
		errOut, code = pull("--min-free", bad)
		assert.Equal(t, 2, code, bad)
		assert.Contains(t, errOut, `invalid argument "`+bad+`" for "--min-free" flag`)
		assert.Contains(t, errOut, bytesize.Forms)
		assert.False(t, strings.Contains(errOut, "downloaded"), bad)
	}
}

func TestBinaryCheck(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	dir := t.TempDir()
	for rel, data := range map[string]string{"a.txt": "a", "a/b": "b", "a/c/d": "d", "e": "eeee"} {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	time.Sleep(60 * time.Millisecond)
	_, errOut, code := cli(t, "push", dir, "s3://bkt/dev/1", "--endpoint", srv.URL(), "--state", t.TempDir())
	require.Equal(t, 0, code, errOut)

	check := func(args ...string) (string, string, int) {
		return cli(t, append([]string{"check", dir, "s3://bkt/dev/1", "--endpoint", srv.URL()}, args...)...)
	}
	out, errOut, code := check()
	assert.Equal(t, 0, code, errOut)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "4 matching, 0 missing from the bucket, 0 differing, 0 extra in the bucket, 0 errors")
	out, _, code = check("-v", "--download")
	assert.Equal(t, 0, code)
	assert.Equal(t, "match   a.txt\nmatch   a/b\nmatch   a/c/d\nmatch   e\n", sortLines(out))

	// A big file goes up in parts; the part size the engine records lets
	// check compare its content without downloading it.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("0123456789abcdef"), 17<<16), 0o644))
	time.Sleep(60 * time.Millisecond)
	_, errOut, code = cli(t, "push", dir, "s3://bkt/dev/1", "--endpoint", srv.URL(), "--state", t.TempDir())
	require.Equal(t, 0, code, errOut)
	info, err := srv.Client().StatObject(t.Context(), "bkt", "dev/1/big", minio.StatObjectOptions{})
	require.NoError(t, err)
	require.Contains(t, info.ETag, "-", "uploaded in parts")
	out, errOut, code = check("-v")
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "match   big\n")
	assert.NotContains(t, errOut, "size only")
	require.NoError(t, os.Remove(filepath.Join(dir, "big")))
	require.NoError(t, srv.Client().RemoveObject(t.Context(), "bkt", "dev/1/big", minio.RemoveObjectOptions{}))

	// Behind the device's back: a file added, an object removed, one
	// overwritten with the same size, one added.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "new"), []byte("n"), 0o644))
	cl := srv.Client()
	ctx := t.Context()
	require.NoError(t, cl.RemoveObject(ctx, "bkt", "dev/1/a/b", minio.RemoveObjectOptions{}))
	_, err = cl.PutObject(ctx, "bkt", "dev/1/e", strings.NewReader("EEEE"), 4, minio.PutObjectOptions{})
	require.NoError(t, err)
	_, err = cl.PutObject(ctx, "bkt", "dev/1/zz", strings.NewReader("z"), 1, minio.PutObjectOptions{})
	require.NoError(t, err)

	out, errOut, code = check()
	assert.Equal(t, 4, code, errOut)
	assert.Equal(t, "differs e: MD5 differs\nextra   zz\nmissing a/b\nmissing new\n", sortLines(out))
	assert.Contains(t, errOut, "2 matching, 2 missing from the bucket, 1 differing, 1 extra in the bucket, 0 errors")
	assert.Contains(t, errOut, "the directory and the bucket differ")

	_, errOut, code = check("--endpoint", "ftp://x")
	assert.Equal(t, 2, code, errOut)
	_, errOut, code = cli(t, "check", filepath.Join(dir, "nope"), "s3://bkt/dev/1", "--endpoint", srv.URL())
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, errOut, "no such file or directory")
}

// sortLines sorts the lines of s: check reports in no particular order.
func sortLines(s string) string {
	lines := strings.SplitAfter(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "")
}

// TestBinaryBandwidthLimit: --bwlimit holds a push and a pull to their own
// direction's rate. 256 KiB at 128 KiB/s takes 2 s (less the limiter's
// first tenth of a second): only a lower bound is asserted, which no slow
// machine can break.
func TestBinaryBandwidthLimit(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	src := t.TempDir()
	data := bytes.Repeat([]byte("b"), 256<<10)
	require.NoError(t, os.WriteFile(filepath.Join(src, "quarter-mib"), data, 0o644))
	time.Sleep(60 * time.Millisecond)

	// Upload limited, download not: the push is held back.
	start := time.Now()
	_, errOut, code := cli(t, "push", src, "s3://bkt/p", "--endpoint", srv.URL(), "--state", t.TempDir(), "--bwlimit", "128K:off")
	took := time.Since(start)
	require.Equal(t, 0, code, errOut)
	assert.GreaterOrEqual(t, took, 1500*time.Millisecond, "256 KiB uploaded at 128 KiB/s")

	// Download limited, upload not: the pull is held back.
	dst := t.TempDir()
	start = time.Now()
	_, errOut, code = cli(t, "pull", "s3://bkt/p", dst, "--endpoint", srv.URL(), "--state", t.TempDir(), "--min-free", "-1",
		"--bwlimit", "off:128K")
	took = time.Since(start)
	require.Equal(t, 0, code, errOut)
	assert.GreaterOrEqual(t, took, 1500*time.Millisecond, "256 KiB downloaded at 128 KiB/s")
	got, err := os.ReadFile(filepath.Join(dst, "quarter-mib"))
	require.NoError(t, err)
	assert.Equal(t, data, got)

	// A malformed limit is a usage error naming the flag, before any transfer.
	for _, bad := range []string{"fast", "25:00,1M", "1M:"} {
		_, errOut, code = cli(t, "pull", "s3://bkt/p", t.TempDir(), "--endpoint", srv.URL(), "--state", t.TempDir(), "--bwlimit", bad)
		assert.Equal(t, 2, code, bad)
		assert.Contains(t, errOut, `--bwlimit="`+bad+`"`)
		assert.NotContains(t, errOut, "downloaded", bad)
	}
	out, _, _ := cli(t, "help", "push")
	assert.Contains(t, out, "--bwlimit")
	out, _, _ = cli(t, "help", "pull")
	assert.Contains(t, out, "--bwlimit")
}
