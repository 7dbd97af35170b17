package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// These tests run the built binary (binary_test.go's TestMain) against
// versitygw on loopback.

func TestBinaryCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_flotta-sync",
		"zsh":  "#compdef flotta-sync",
		"fish": "complete -c flotta-sync",
	} {
		out, errOut, code := cli(t, "completion", shell)
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, want, shell)
	}
	// The bash script is valid bash.
	script := filepath.Join(t.TempDir(), "flotta-sync.bash")
	out, _, _ := cli(t, "completion", "bash")
	require.NoError(t, os.WriteFile(script, []byte(out), 0o644))
	if bash, err := exec.LookPath("bash"); err == nil {
		msg, err := exec.Command(bash, "-n", script).CombinedOutput()
		assert.NoError(t, err, "%s", msg)
	}
	// What the scripts ask the binary: commands, flags, flag values.
	out, _, code := cli(t, "__complete", "pu")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "push\t")
	assert.Contains(t, out, "pull\t")
	out, _, _ = cli(t, "__complete", "push", "--pro")
	assert.Contains(t, out, "--progress\t")
	out, _, _ = cli(t, "__complete", "pull", "--log-format", "")
	assert.Equal(t, []string{"text", "json"}, strings.Split(out, "\n")[:2])
}

func TestBinaryManPages(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	_, errOut, code := cli(t, "gen-man", dir)
	require.Equal(t, 0, code, errOut)
	for _, page := range []string{"flotta-sync.1", "flotta-sync-push.1", "flotta-sync-pull.1", "flotta-sync-check.1", "flotta-sync-completion-bash.1"} {
		data, err := os.ReadFile(filepath.Join(dir, page))
		require.NoError(t, err, page)
		assert.Contains(t, string(data), `.TH "FLOTTA-SYNC" "1" "Nov 2023"`, page)
	}
	push, _ := os.ReadFile(filepath.Join(dir, "flotta-sync-push.1"))
	assert.Contains(t, string(push), `\fB--bwlimit\fP`)
	assert.Contains(t, string(push), `\fB-P\fP, \fB--progress\fP`)
	assert.NoFileExists(t, filepath.Join(dir, "flotta-sync-gen-man.1"), "the generator has no page")
}

// s3env starts versitygw with a bucket and sets the credentials.
func s3env(t *testing.T) *s3test.Server {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	return srv
}

// tree writes files (relative path -> size) under a new directory.
func tree(t *testing.T, files map[string]int) string {
	dir := t.TempDir()
	for rel, size := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{byte(len(rel))}, size), 0o644))
	}
	time.Sleep(60 * time.Millisecond) // older than the stable-file window
	return dir
}

// runJSON runs flotta-sync with --json and decodes its one object.
func runJSON(t *testing.T, args ...string) (summary map[string]any, stderr string, code int) {
	t.Helper()
	out, errOut, code := cli(t, append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	require.NoError(t, dec.Decode(&summary), "stdout: %q, stderr: %s", out, errOut)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "one object only: %q", out)
	return summary, errOut, code
}

func TestBinaryJSON(t *testing.T) {
	srv := s3env(t)
	src := tree(t, map[string]int{"a": 100, "d/b": 3000, "d/e/c": 70000})
	state := t.TempDir()
	s, errOut, code := runJSON(t, "push", src, "s3://bkt/j", "--endpoint", srv.URL(), "--state", state)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "push", s["command"])
	assert.EqualValues(t, 3, s["files"])
	assert.EqualValues(t, 73100, s["bytes"])
	assert.GreaterOrEqual(t, s["bytes_on_wire"], float64(73100))
	assert.GreaterOrEqual(t, s["requests"], float64(3))
	for _, k := range []string{"skipped", "unreadable", "refused", "vanished", "changed", "pending", "conflicts", "errors", "exit_code"} {
		assert.EqualValues(t, 0, s[k], k)
	}
	assert.Greater(t, s["took"], float64(0))
	assert.NotContains(t, s, "error")
	assert.NotContains(t, errOut, "uploaded", "the JSON object replaces the summary line")

	// Nothing new: no transfer, no request.
	s, _, code = runJSON(t, "push", src, "s3://bkt/j", "--endpoint", srv.URL(), "--state", state)
	require.Equal(t, 0, code)
	assert.EqualValues(t, 0, s["files"])
	assert.EqualValues(t, 0, s["requests"])

	dst := t.TempDir()
	s, errOut, code = runJSON(t, "pull", "s3://bkt/j", dst, "--endpoint", srv.URL(), "--state", state, "--min-free", "-1")
	require.Equal(t, 0, code, errOut)
	assert.EqualValues(t, 3, s["files"])
	assert.EqualValues(t, 73100, s["bytes"])
	assert.GreaterOrEqual(t, s["bytes_on_wire"], float64(73100))

	// JSON logs: every line of stderr is a JSON object.
	require.NoError(t, os.WriteFile(filepath.Join(src, "new"), []byte("n"), 0o644))
	time.Sleep(60 * time.Millisecond)
	_, errOut, code = cli(t, "push", src, "s3://bkt/j", "--endpoint", srv.URL(), "--state", state, "-v", "--log-format", "json")
	require.Equal(t, 0, code, errOut)
	var logged int
	for _, line := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.HasPrefix(line, "uploaded ") {
			continue // the summary line
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		assert.Contains(t, rec, "level")
		logged++
	}
	assert.Positive(t, logged)
	_, errOut, code = cli(t, "push", src, "s3://bkt/j", "--endpoint", srv.URL(), "--log-format", "xml")
	assert.Equal(t, 2, code, errOut)
}

// TestBinaryExitCodes: each outcome has its own status, with --json too.
func TestBinaryExitCodes(t *testing.T) {
	srv := s3env(t)
	src := tree(t, map[string]int{"fine": 10, "also/fine": 20})
	// A name that is not UTF-8 cannot become a key: the entry is skipped
	// as unreadable (as a file without read permission is for a user
	// other than root), every other file still goes up.
	require.NoError(t, os.WriteFile(filepath.Join(src, "bad-\xff-name"), []byte("x"), 0o644))
	time.Sleep(60 * time.Millisecond)
	state := t.TempDir()
	s, errOut, code := runJSON(t, "push", src, "s3://bkt/x", "--endpoint", srv.URL(), "--state", state)
	assert.Equal(t, 3, code, errOut)
	assert.EqualValues(t, 3, s["exit_code"])
	assert.EqualValues(t, 2, s["files"], "the rest went up")
	assert.EqualValues(t, 1, s["unreadable"])
	assert.EqualValues(t, 1, s["skipped"])
	assert.Contains(t, s["error"], "incomplete")
	_, errOut, code = cli(t, "push", src, "s3://bkt/x", "--endpoint", srv.URL(), "--state", state)
	assert.Equal(t, 3, code, "still skipped on the next run")
	assert.Contains(t, errOut, "1 unreadable")
	assert.Contains(t, errOut, "flotta-sync: incomplete: 1 entries could not be read")
	require.NoError(t, os.Remove(filepath.Join(src, "bad-\xff-name")))
	_, errOut, code = cli(t, "push", src, "s3://bkt/x", "--endpoint", srv.URL(), "--state", state)
	assert.Equal(t, 0, code, errOut)

	// Refused by the disk guard: 3 as well.
	s, errOut, code = runJSON(t, "pull", "s3://bkt/x", t.TempDir(), "--endpoint", srv.URL(), "--state", t.TempDir(), "--max-bytes", "15")
	assert.Equal(t, 3, code, errOut)
	assert.EqualValues(t, 1, s["refused"])
	assert.EqualValues(t, 1, s["files"])

	// A run that fails: 1.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	s, errOut, code = runJSON(t, "push", src, "s3://bkt/y", "--endpoint", srv.URL(), "--state", t.TempDir())
	assert.Equal(t, 1, code, errOut)
	assert.EqualValues(t, 1, s["exit_code"])
	assert.Positive(t, s["errors"])
	assert.NotContains(t, errOut, "wrong", "no secret in the output")
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)

	// A usage error: 2, before anything is tried.
	_, _, code = cli(t, "push", src, "s3://bkt/x", "--endpoint", srv.URL(), "--bwlimit", "fast")
	assert.Equal(t, 2, code)
	// check: the two sides differ: 4.
	require.NoError(t, os.WriteFile(filepath.Join(src, "more"), []byte("m"), 0o644))
	cs, _, code := runJSON(t, "check", src, "s3://bkt/x", "--endpoint", srv.URL())
	assert.Equal(t, 4, code)
	assert.EqualValues(t, 1, cs["missing"])
	assert.EqualValues(t, 4, cs["exit_code"])
}

// TestBinaryPullRestores: a file deleted locally comes back with the next
// pull, found from the journal and a local stat: the same requests as a
// pull with nothing to do, plus its GET.
func TestBinaryPullRestores(t *testing.T) {
	srv := s3env(t)
	src := tree(t, map[string]int{"keep": 10, "sub/lost": 2000, "other": 5})
	_, errOut, code := cli(t, "push", src, "s3://bkt/r", "--endpoint", srv.URL(), "--state", t.TempDir())
	require.Equal(t, 0, code, errOut)
	dst, state := t.TempDir(), t.TempDir()
	pull := func(extra ...string) map[string]any {
		s, errOut, code := runJSON(t, append([]string{"pull", "s3://bkt/r", dst, "--endpoint", srv.URL(), "--state", state, "--min-free", "-1"}, extra...)...)
		require.Equal(t, 0, code, errOut)
		return s
	}
	assert.EqualValues(t, 3, pull()["files"])
	idle := pull()
	assert.EqualValues(t, 0, idle["files"])

	require.NoError(t, os.RemoveAll(filepath.Join(dst, "sub")))
	s := pull("--restore=false")
	assert.EqualValues(t, 0, s["files"], "--restore=false leaves it deleted")
	assert.NoFileExists(t, filepath.Join(dst, "sub", "lost"))

	s = pull()
	assert.EqualValues(t, 1, s["files"])
	assert.EqualValues(t, 2000, s["bytes"])
	assert.Equal(t, idle["requests"].(float64)+1, s["requests"], "one GET more than a pull with nothing to do")
	data, err := os.ReadFile(filepath.Join(dst, "sub", "lost"))
	require.NoError(t, err)
	assert.Len(t, data, 2000)
}

// onPTY runs flotta-sync with its stderr on a pseudo-terminal of cols
// columns (0: a terminal that does not know its size) and returns what the
// terminal received.
func onPTY(t *testing.T, cols uint16, args ...string) string {
	ptmx, tty, err := pty.Open()
	require.NoError(t, err)
	defer ptmx.Close()
	require.NoError(t, pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: cols}))
	cmd := exec.Command(binary, args...)
	var stdout bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &stdout, tty
	require.NoError(t, cmd.Start())
	tty.Close() // the child holds it
	var screen bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&screen, ptmx); close(copied) }() // ends with EIO once the child exits
	err = cmd.Wait()
	<-copied // screen is the copier's until then
	require.NoError(t, err, screen.String())
	assert.Empty(t, stdout.String())
	return screen.String()
}

// TestBinaryProgressOnATerminal runs a throttled push with -P on a
// pseudo-terminal: the bar shows the files and bytes done of the total, the
// rate, the ETA and the transfers in flight, redrawn in place.
func TestBinaryProgressOnATerminal(t *testing.T) {
	srv := s3env(t)
	src := tree(t, map[string]int{"a": 256 << 10, "b": 256 << 10, "c/d": 128 << 10})
	out := onPTY(t, 160, "push", "-P", src, "s3://bkt/p", "--endpoint", srv.URL(), "--state", t.TempDir(), "--bwlimit", "256K")
	assert.Contains(t, out, "3/3 files")
	assert.Contains(t, out, "640.0 KiB / 640.0 KiB")
	assert.Regexp(t, `\d+/3 files .*KiB / 640\.0 KiB, [\d.]+ KiB/s, ETA \S+, \d in flight`, out)
	assert.Contains(t, out, "\x1b[", "redrawn in place with terminal escapes")
	assert.Contains(t, out, "uploaded 3 files, 640.0 KiB")

	// A terminal that does not know its width (a serial console) gets the
	// plain lines: the bar could not redraw in place.
	src = tree(t, map[string]int{"e": 200 << 10, "f": 200 << 10})
	out = onPTY(t, 0, "push", "-P", src, "s3://bkt/q", "--endpoint", srv.URL(), "--state", t.TempDir(), "--bwlimit", "200K")
	assert.Regexp(t, `progress: \d/2 files, .*/400\.0 KiB`, out)
	assert.NotContains(t, out, "\x1b[")
	assert.Contains(t, out, "uploaded 2 files, 400.0 KiB")
}

// TestBinaryStatsLines: --stats prints plain lines without a terminal.
func TestBinaryStatsLines(t *testing.T) {
	srv := s3env(t)
	src := tree(t, map[string]int{"a": 200 << 10, "b": 100 << 10})
	_, errOut, code := cli(t, "push", src, "s3://bkt/s", "--endpoint", srv.URL(), "--state", t.TempDir(), "--bwlimit", "150K", "--stats", "300ms")
	require.Equal(t, 0, code, errOut)
	lines := 0
	for _, line := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(line, "progress: ") {
			lines++
			assert.Regexp(t, `^progress: \d/2 files, [\d.]+ (B|KiB)/300\.0 KiB, [\d.]+ (B|KiB)/s, ETA \S+, \d in flight, \d+ requests, \d+s$`, line)
		}
	}
	assert.GreaterOrEqual(t, lines, 2, errOut)
	assert.NotContains(t, errOut, "\x1b[", "no terminal, no escapes")
}
