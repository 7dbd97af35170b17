package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// TestPullDryRunPlansWhatPullDoes (issue 22): a target holding "same" (the
// object's content) and "mine" (a user's file), no journal, objects same,
// mine and new, on a real server: the dry run lists adopt same, conflict
// mine, download new, and the pull then does exactly that.
func TestPullDryRunPlansWhatPullDoes(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	dst, state := t.TempDir(), t.TempDir()
	for _, k := range []string{"same", "mine", "new"} {
		_, err := srv.Client().PutObject(context.Background(), "bkt", "cfg/"+k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dst, "same"), []byte("same"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dst, "mine"), []byte("a user's file"), 0o644))

	var dry bytes.Buffer
	require.Equal(t, 0, run([]string{"pull", "--dry-run", "s3://bkt/cfg", dst, "--endpoint", srv.URL(), "--state", state, "--min-free", "-1"}, &dry, &dry), dry.String())
	var planned []string
	for _, m := range regexp.MustCompile(`(?m)^(\S+) +cfg/(\S+) -> `).FindAllStringSubmatch(dry.String(), -1) {
		planned = append(planned, m[1]+" "+m[2])
	}
	slices.Sort(planned)
	assert.Equal(t, []string{"adopt same", "conflict mine", "download new"}, planned, dry.String())
	assert.Contains(t, dry.String(), "would download 2 files, 7 B (1 of them over a local edit, kept as a conflict copy); 1 local files already hold their object")

	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"pull", "s3://bkt/cfg", dst, "--endpoint", srv.URL(), "--state", state, "--min-free", "-1"}, &out, &out), out.String())
	assert.Contains(t, out.String(), "downloaded 2 files")
	assert.Contains(t, out.String(), "1 local edits kept as conflict copies")
	for name, want := range map[string]string{"same": "same", "mine": "mine", "new": "new"} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		require.NoError(t, err)
		assert.Equal(t, want, string(got))
	}
	copies, err := filepath.Glob(filepath.Join(dst, "mine.flotta-conflict-*"))
	require.NoError(t, err)
	require.Len(t, copies, 1)
	got, err := os.ReadFile(copies[0])
	require.NoError(t, err)
	assert.Equal(t, "a user's file", string(got))
}
