package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
	"github.com/project-flotta/flotta-device-worker/sync/syncstatus"
)

// TestBinaryStatus runs "device-worker status" on the snapshot the worker's
// publisher writes for a real engine that synced against versitygw (the
// end-to-end test in cmd/ does the same under yggd's dispatcher).
func TestBinaryStatus(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt")) // first: under -short the test stops here
	bin := filepath.Join(t.TempDir(), "device-worker")
	build := exec.Command("go", "build", "-tags", buildTags, "-ldflags", "-X main.version=1.2.3-4.test", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	built, err := build.CombinedOutput()
	require.NoError(t, err, "%s", built)
	dataDir := t.TempDir()
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"status"}, args...)...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		require.NoError(t, err)
		return string(out), 0
	}

	out, code := run(nil, "--data-dir", dataDir)

	assert.Equal(t, 1, code, "no worker ran here")
	assert.Contains(t, out, "the worker has not run with this data directory")

	vol := filepath.Join(dataDir, "volumes", "w")
	require.NoError(t, os.MkdirAll(filepath.Join(vol, "stats"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(vol, "stats", "s1"), []byte("sample"), 0o644))
	time.Sleep(100 * time.Millisecond)
	eng, err := datasync.New(datasync.Options{StateDir: filepath.Join(dataDir, "sync"), Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1},
		zaptest.NewLogger(t))
	require.NoError(t, err)
	defer eng.Close()
	ep := &datasync.Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}
	require.NoError(t, eng.Configure(ep, []datasync.Mapping{
		{ID: "w/egress/stats", Direction: datasync.Egress, Root: vol, LocalDir: filepath.Join(vol, "stats"), Bucket: "bkt", Prefix: "statistics"},
	}))
	require.NoError(t, eng.SyncNow(t.Context(), "w/egress/stats"))
	p := &syncstatus.Publisher{Path: filepath.Join(dataDir, "sync", syncstatus.FileName), Worker: "1.2.3-4.test", Status: eng.Status}
	require.NoError(t, p.Publish(time.Now()))

	out, code = run([]string{"FLOTTA_DATA_DIR=" + dataDir})
	require.Equal(t, 0, code, out)
	for _, want := range []string{"by device-worker 1.2.3-4.test", "DATA PATH", "LAST SUCCESS", "BACKLOG", "ERRORS",
		"w/egress/stats", "egress", "0 files", "none", "1 files, 6 B"} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, `w/egress/stats\s+egress\s+\d+s ago`, out)

	out, code = run(nil, "--data-dir", dataDir, "--json")
	require.Equal(t, 0, code, out)
	var snap syncstatus.Snapshot
	require.NoError(t, json.Unmarshal([]byte(out), &snap))
	require.Len(t, snap.Mappings, 1)
	assert.Equal(t, int64(1), snap.Mappings[0].FilesTotal)

	out, code = run(nil, "--data-dir", dataDir, "--all")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "prefix: statistics")

	_, code = run(nil, "--nope")
	assert.Equal(t, 2, code)
}
