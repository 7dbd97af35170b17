package datasync

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3server"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// Growing files, part copies with ranges and rotation on each real server:
// UploadPartCopy with x-amz-copy-source-range and -if-match is where servers
// differ. flotta-sync check's comparison (sync/check) must agree with the
// journal after each step.
func TestGrowingFilesOnServers(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	servers := []struct {
		name  string
		start func(t testing.TB, opts ...s3test.Option) *s3test.Server
	}{{"versitygw", s3test.Start}, {"minio", s3test.StartMinIO}, {"ceph-rgw", s3test.StartCephRGW}}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			s := sv.start(t, s3test.WithBuckets(bucket))
			access, secret := s.Credentials()
			growingOnServer(t, &Endpoint{Host: s.Host, Port: s.Port, Region: s3server.Region, AccessKey: access, SecretKey: secret}, s.Client())
		})
	}
}

func growingOnServer(t *testing.T, ep *Endpoint, client *minio.Client) {
	root, state := t.TempDir(), t.TempDir()
	eng, err := New(Options{StateDir: state, Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	eng.hooks.settle = 0
	dir := filepath.Join(root, "logs")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, eng.Configure(ep, []Mapping{{ID: "logs", Direction: Egress, Root: root, LocalDir: dir, Bucket: bucket, Prefix: "remote/log"}}))
	f := &memFixture{t: t, eng: eng, root: root}
	ctx := context.Background()

	agree := func(step string) {
		t.Helper()
		notMatching, sizeOnly, err := CheckDir(ctx, client, dir, bucket, "remote/log")
		require.NoError(t, err)
		require.Empty(t, notMatching, "%s: check", step)
		require.Zero(t, sizeOnly, "%s: compared by content", step)
		for _, name := range []string{"app.log", "app.log.1"} {
			local, err := os.ReadFile(filepath.Join(dir, name))
			if os.IsNotExist(err) {
				continue
			}
			obj, err := client.GetObject(ctx, bucket, "remote/log/"+name, minio.GetObjectOptions{})
			require.NoError(t, err)
			got, err := io.ReadAll(obj)
			require.NoError(t, err)
			require.True(t, bytes.Equal(local, got), "%s: object %s is the file", step, name)
			info, err := client.StatObject(ctx, bucket, "remote/log/"+name, minio.StatObjectOptions{})
			require.NoError(t, err)
			row := f.row("logs", name)
			require.Equal(t, info.ETag, row.ETag, "%s: the journal holds the server's ETag", step)
			if len(row.PartMD5) > 0 {
				require.Equal(t, composedETag(row.PartMD5), info.ETag, "%s: the part hashes compose the ETag", step)
			}
		}
	}

	f.write("logs/app.log", pattern(20<<20, 1))
	makeGrowing(t, f, "logs/app.log")
	require.NoError(t, f.sync(PassOptions{}))
	agree("first snapshot")

	f.appendTo("logs/app.log", pattern(1024, 2))
	require.NoError(t, f.sync(PassOptions{}))
	agree("grown by 1 KiB")
	require.Equal(t, int64(16<<20), f.status("logs").BytesSavedByPartCopy, "the two full parts were copied")

	old, err := os.ReadFile(filepath.Join(dir, "app.log"))
	require.NoError(t, err)
	require.NoError(t, os.Rename(filepath.Join(dir, "app.log"), filepath.Join(dir, "app.log.1")))
	f.write("logs/app.log", []byte("fresh start\n"))
	require.NoError(t, f.sync(PassOptions{}))
	agree("rotated")
	require.Equal(t, int64(32<<20), f.status("logs").BytesSavedByPartCopy, "the rotated file was copied, not sent")
	obj, err := client.GetObject(ctx, bucket, "remote/log/app.log.1", minio.GetObjectOptions{})
	require.NoError(t, err)
	got, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.True(t, bytes.Equal(old, got))
}
