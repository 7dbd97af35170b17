package datasync

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/directio"
)

type rangeRecorder struct {
	next     http.RoundTripper
	mu       sync.Mutex
	ranges   []string
	afterOne func() // runs once, after the first ranged response
	once     sync.Once
}

func (r *rangeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rg := req.Header.Get("Range")
	resp, err := r.next.RoundTrip(req)
	if rg != "" && req.Method == http.MethodGet {
		r.mu.Lock()
		r.ranges = append(r.ranges, rg)
		r.mu.Unlock()
		if r.afterOne != nil && err == nil {
			r.once.Do(r.afterOne)
		}
	}
	return resp, err
}

// putMultipart uploads data in 16 MiB parts: its ETag is not its MD5.
func putMultipart(t *testing.T, f *fixture, key string, data []byte) {
	t.Helper()
	info, err := f.srv.Client().PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{PartSize: 16 << 20, DisableContentSha256: true})
	require.NoError(t, err)
	require.Contains(t, info.ETag, "-", "a multipart ETag")
}

// TestBigObjectInParallelRanges: a big multipart object is fetched in
// parallelStreams ranges, each of the version the plan saw, and lands whole.
func TestBigObjectInParallelRanges(t *testing.T) {
	f := newFixture(t)
	data := make([]byte, parallelMin+12345)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)
	putMultipart(t, f, "in/big.bin", data)
	rec := &rangeRecorder{}
	f.configure(f.ingress("in", "in", "in"))
	f.interpose(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
	require.NoError(t, f.syncNow())
	require.True(t, bytes.Equal(data, f.read("in/big.bin")), "content differs")
	assert.Len(t, rec.ranges, parallelStreams)
	for _, r := range directio.Split(int64(len(data)), parallelStreams) {
		assert.Contains(t, rec.ranges, "bytes="+strconv.FormatInt(r.Off, 10)+"-"+strconv.FormatInt(r.Off+r.Len-1, 10))
	}
}

// TestBigObjectReplacedBetweenRanges: the object replaced while its ranges
// are fetched fails the download (If-Match on every range): no mix of two
// versions, nothing under the final name, and the next pass fetches the new
// version whole.
func TestBigObjectReplacedBetweenRanges(t *testing.T) {
	f := newFixture(t)
	v1 := bytes.Repeat([]byte("1"), parallelMin+5)
	v2 := bytes.Repeat([]byte("2"), parallelMin+5)
	putMultipart(t, f, "in/big.bin", v1)
	var replaced atomic.Bool
	rec := &rangeRecorder{afterOne: func() {
		putMultipart(t, f, "in/big.bin", v2)
		replaced.Store(true)
	}}
	f.configure(f.ingress("in", "in", "in"))
	f.interpose(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
	require.NoError(t, f.syncNow()) // the pass goes on; the file waits for the next
	require.True(t, replaced.Load())
	require.EqualValues(t, 0, f.status("in").FilesLastPass)
	_, statErr := os.Stat(filepath.Join(f.root, "in/big.bin"))
	require.True(t, os.IsNotExist(statErr), "a file of mixed versions in place: %v", statErr)
	entries, _ := os.ReadDir(filepath.Join(f.root, "in"))
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), ".flotta-tmp-"), "temporary file left: %s", e.Name())
	}

	rec.afterOne = nil
	require.NoError(t, f.syncNow())
	require.True(t, bytes.Equal(v2, f.read("in/big.bin")), "the new version, whole")
}
