package s3server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartVersitygw(t *testing.T) {
	if testing.Short() {
		t.Skip("needs versitygw")
	}
	ctx := context.Background()
	srv, err := StartVersitygw(Options{Dir: filepath.Join(t.TempDir(), "data"), TLS: true, Buckets: []string{"bkt1"}})
	require.NoError(t, err)
	defer srv.Stop()
	assert.True(t, strings.HasPrefix(srv.URL(), "https://127.0.0.1:"))
	assert.NotZero(t, srv.Pid())
	c, err := srv.Client()
	require.NoError(t, err)
	_, err = c.PutObject(ctx, "bkt1", "k", strings.NewReader("v"), 1, minio.PutObjectOptions{})
	require.NoError(t, err)

	require.NoError(t, srv.Rotate("other", "other-secret"))
	c, err = srv.Client()
	require.NoError(t, err)
	_, err = c.StatObject(ctx, "bkt1", "k", minio.StatObjectOptions{})
	require.NoError(t, err, "same data, new credentials")

	srv.Stop()
	assert.Zero(t, srv.Pid())
	srv.Stop()
}

func TestMissingBinaryNamesTheFix(t *testing.T) {
	_, err := StartVersitygw(Options{Dir: t.TempDir(), Binary: "/nonexistent/versitygw"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make versitygw")
}
