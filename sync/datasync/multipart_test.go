package datasync

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// partCutter fails the requests that send a given part number while armed
// (a connection reset half way, as far as the engine can tell), and counts
// the part requests that reach the server.
type partCutter struct {
	next  http.RoundTripper
	part  string
	fails atomic.Int64 // requests still to fail
	mu    sync.Mutex
	sent  []string // partNumber of every part request let through
}

func (c *partCutter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut {
		if n := r.URL.Query().Get("partNumber"); n != "" {
			if n == c.part && c.fails.Add(-1) >= 0 {
				if r.Body != nil {
					_, _ = io.CopyN(io.Discard, r.Body, 1<<20)
					r.Body.Close()
				}
				return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
			}
			c.mu.Lock()
			c.sent = append(c.sent, n)
			c.mu.Unlock()
		}
	}
	return c.next.RoundTrip(r)
}

// TestMultipartUploadResumes: a big file's upload whose second part fails
// on every try is left unfinished; the next pass keeps the stored first part
// (ListParts, its MD5 checked against the file), sends only the second and
// completes. The object is the file, with the multipart ETag adoption
// recognises.
func TestMultipartUploadResumes(t *testing.T) {
	cut := &partCutter{part: "2"}
	f := newFixture(t, func(o *Options) {
		prev := o.WrapTransport
		o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { cut.next = rt; return prev(cut) }
	})
	data := make([]byte, singlePutMax+5<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f.write("big/file", data)
	f.configure(f.egress("e", "big", "big"))
	cut.fails.Store(putTries)
	err := f.syncNow()
	require.Error(t, err, "the second part fails on every try")
	assert.Equal(t, []string{"1"}, cut.sent, "part 1 stored, part 2 cut")
	assert.Equal(t, int64(1), f.status("e").Pending)

	core := minio.Core{Client: f.srv.Client()}
	ups, err := core.ListMultipartUploads(context.Background(), bucket, "big/file", "", "", "", 100)
	require.NoError(t, err)
	require.Len(t, ups.Uploads, 1, "the failed upload is left to resume")
	stored, err := core.ListObjectParts(context.Background(), bucket, "big/file", ups.Uploads[0].UploadID, 0, 100)
	require.NoError(t, err)
	require.Len(t, stored.ObjectParts, 1, "part 1, in flight when part 2 failed, is finished and stored")

	cut.sent = nil
	require.NoError(t, f.syncNow())
	assert.Equal(t, []string{"2"}, cut.sent, "only the missing part is sent again")
	obj, err := f.srv.Client().GetObject(context.Background(), bucket, "big/file", minio.GetObjectOptions{})
	require.NoError(t, err)
	got, err := io.ReadAll(obj)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "the object is the file")
	info, err := obj.Stat()
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(info.ETag, "-2"), "multipart ETag %s", info.ETag)
	ups, err = core.ListMultipartUploads(context.Background(), bucket, "big/file", "", "", "", 100)
	require.NoError(t, err)
	assert.Empty(t, ups.Uploads)
	assert.Zero(t, f.status("e").Pending)
}

// TestMultipartResumeSkipsChangedParts: an unfinished upload whose stored
// part holds other bytes (the file changed since) is not used for them: the
// part is sent again, and the object is the file as it is now.
func TestMultipartResumeSkipsChangedParts(t *testing.T) {
	cut := &partCutter{part: "2"}
	f := newFixture(t, func(o *Options) {
		prev := o.WrapTransport
		o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { cut.next = rt; return prev(cut) }
	})
	data := bytes.Repeat([]byte("a"), singlePutMax+1<<20)
	f.write("big/file", data)
	f.configure(f.egress("e", "big", "big"))
	cut.fails.Store(putTries)
	require.Error(t, f.syncNow())
	data = bytes.Repeat([]byte("b"), len(data)) // same size, other bytes
	f.write("big/file", data)
	cut.sent = nil
	require.NoError(t, f.syncNow())
	assert.ElementsMatch(t, []string{"1", "2"}, cut.sent, "the stale part is sent again")
	obj, err := f.srv.Client().GetObject(context.Background(), bucket, "big/file", minio.GetObjectOptions{})
	require.NoError(t, err)
	got, err := io.ReadAll(obj)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "the object is the file as it is now")
}

// TestRetriedLearns: a timeout with a body in flight is sent once more,
// twice as patient, and tells onStall; a small request's timeout (a silent
// server) and a changed file are not sent again; a reset is, as it was.
func TestRetriedLearns(t *testing.T) {
	big := fmt.Errorf("put: %w", &s3client.TimeoutError{Op: "read", Awaiting: 1 << 20})
	small := fmt.Errorf("put: %w", &s3client.TimeoutError{Op: "read", Awaiting: 500})
	reset := &url.Error{Op: "Put", URL: "http://x", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}
	for _, tc := range []struct {
		name      string
		errs      []error
		tries     int
		patiences []float64
		stalls    int
	}{
		{"slow link", []error{big, big, nil}, 2, []float64{1, 2}, 1},
		{"slow link, then answered", []error{big, nil}, 2, []float64{1, 2}, 1},
		{"silent server", []error{small, nil}, 1, []float64{1}, 0},
		{"resets", []error{reset, reset, nil}, 3, []float64{1, 1, 1}, 0},
		{"changed", []error{fmt.Errorf("read: %w", stablefile.ErrChanged), nil}, 1, []float64{1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pats []float64
			stalls := 0
			err := retried(context.Background(), func() { stalls++ }, func(ctx context.Context) error {
				pats = append(pats, s3client.Patience(ctx))
				return tc.errs[len(pats)-1]
			})
			assert.Equal(t, tc.tries, len(pats), "tries")
			assert.Equal(t, tc.patiences, pats)
			assert.Equal(t, tc.stalls, stalls)
			assert.Equal(t, tc.errs[len(pats)-1], err)
		})
	}
}
