package notify

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// MinIO as released (since upstream PR 21651) holds its notification
// stream back until 4 KiB pile up: not even the answer's headers come, so
// Listen fails with a timeout after three pings, not with ErrUnsupported
// (the caller may try again later) and not with a stream it would trust.
func TestMinIOAsReleasedSendsNothing(t *testing.T) {
	srv := s3test.StartMinIO(t, s3test.WithBuckets("data"))
	access, secret := srv.Credentials()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	l, err := Listen(ctx, Config{S3: s3config(srv.Host, srv.Port, access, secret, nil), Bucket: "data",
		Prefixes: []string{"in/"}, Ping: time.Second, Log: zaptest.NewLogger(t)})
	took := time.Since(start)
	t.Logf("Listen: %v after %s", err, took)
	if l != nil || err == nil {
		t.Fatal("Listen returned a stream")
	}
	if errors.Is(err, ErrUnsupported) {
		t.Errorf("%v: want a timeout, not ErrUnsupported", err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%v: want a timeout", err)
	}
}
