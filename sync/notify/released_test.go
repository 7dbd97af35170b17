package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// MinIO as released (since upstream PR 21651) holds its notification
// stream back until 4 KiB pile up: with nothing happening not even the
// answer's headers come, so Listen fails with a timeout after three pings,
// not with ErrUnsupported (the caller may try again later).
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

// With objects put all the time, MinIO as released flushes its stream
// each time 4 KiB have piled up: Listen succeeds and events come, late and
// in bursts, and the stream is never Timely. The stream of a MinIO that
// flushes is Timely within a few pings of quiet.
func TestTimelyTellsAHeldBackStream(t *testing.T) {
	for _, c := range []struct {
		name   string
		start  s3test.Starter
		busy   bool // objects put all along
		timely bool
	}{{"released", s3test.StartMinIO, true, false}, {"push", s3test.StartMinIOPush, false, true}} {
		t.Run(c.name, func(t *testing.T) {
			srv := c.start(t, s3test.WithBuckets("data"))
			access, secret := srv.Credentials()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			mc := srv.Client()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { // one object every 200 ms with a long key: 4 KiB of events in a second or two
				defer close(done)
				for i := 0; c.busy; i++ {
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
					key := fmt.Sprintf("in/%s-%04d", strings.Repeat("k", 200), i)
					if _, err := mc.PutObject(ctx, "data", key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil && ctx.Err() == nil {
						t.Errorf("put %s: %v", key, err)
						return
					}
				}
			}()
			defer func() {
				select {
				case <-done:
				default:
					close(stop)
					<-done
				}
			}()
			l, err := Listen(ctx, Config{S3: s3config(srv.Host, srv.Port, access, secret, nil), Bucket: "data",
				Prefixes: []string{"in/"}, Ping: time.Second, Log: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			go func() {
				for range l.Events() {
				}
			}()
			timely := false
			for end := time.Now().Add(6 * time.Second); time.Now().Before(end) && !timely; time.Sleep(50 * time.Millisecond) {
				timely = l.Timely()
			}
			if timely != c.timely {
				t.Errorf("Timely %v within 6 s of pings every 1 s, want %v (connected %v)", timely, c.timely, l.Connected())
			}
			if c.busy && !l.Connected() {
				t.Error("the stream of a busy bucket should be up, only late")
			}
			if !c.busy {
				return
			}
			// Once the bucket is quiet the held-back stream goes silent, is
			// dropped, and the reconnection the server does not answer stops
			// the listener (no request every MaxBackoff forever).
			close(stop)
			<-done
			stop = make(chan struct{})
			select {
			case <-l.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("the listener still runs 30 s after the bucket went quiet")
			}
			if !errors.Is(l.Err(), os.ErrDeadlineExceeded) {
				t.Errorf("Err() = %v, want the reconnection's timeout", l.Err())
			}
		})
	}
}
