package datasync

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

const bucket = "device-bucket"

// waitingTests: the tests that spend seconds waiting (a server starting, a
// deadline, a staleness bound, a notification stream judged silent) call
// t.Parallel(), so that they wait side by side once the others have run
// (two at a time on two cores). None of them reads process-wide state
// (inotify descriptors, package variables) that another test changes.

// fixture is an engine talking to a fresh versitygw through a counting transport.
type fixture struct {
	t     *testing.T
	srv   *s3test.Server
	eng   *Engine
	count *s3client.Counter
	root  string // the workload's /export
	state string
	opts  Options
	// midBody, when set, runs once a PUT request body has been partly sent.
	midBody atomic.Pointer[func()]
	// wrap, when set, sits between the engine's client and its transport
	// (interpose).
	wrap    atomic.Pointer[func(http.RoundTripper) http.RoundTripper]
	ep      *Endpoint
	mapping []Mapping
}

func newFixture(t *testing.T, opts ...func(*Options)) *fixture {
	t.Helper()
	srv := s3test.Start(t, s3test.WithBuckets(bucket))
	f := &fixture{t: t, srv: srv, root: t.TempDir(), state: t.TempDir(), count: &s3client.Counter{}}
	f.opts = Options{StateDir: f.state, Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			if w := f.wrap.Load(); w != nil {
				rt = (*w)(rt)
			}
			return f.count.Wrap(&bodyHook{next: rt, f: f})
		}}
	for _, o := range opts {
		o(&f.opts)
	}
	f.ep = &Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}
	f.start()
	return f
}

// start (re)creates the engine on the same state directory.
func (f *fixture) start() {
	f.t.Helper()
	eng, err := New(f.opts, zaptest.NewLogger(f.t))
	require.NoError(f.t, err)
	f.eng = eng
	f.eng.hooks.settle = 0
	f.t.Cleanup(func() { _ = eng.Close() })
	if f.mapping != nil {
		require.NoError(f.t, eng.Configure(f.ep, f.mapping))
	}
}

func (f *fixture) restartEngine() {
	f.t.Helper()
	require.NoError(f.t, f.eng.Close())
	f.start()
}

func (f *fixture) configure(ms ...Mapping) {
	f.t.Helper()
	f.mapping = ms
	require.NoError(f.t, f.eng.Configure(f.ep, ms))
}

func (f *fixture) egress(id, sub, prefix string) Mapping {
	return Mapping{ID: id, Direction: Egress, Root: f.root, LocalDir: filepath.Join(f.root, sub), Bucket: bucket, Prefix: prefix}
}

func (f *fixture) ingress(id, sub, prefix string) Mapping {
	return Mapping{ID: id, Direction: Ingress, Root: f.root, LocalDir: filepath.Join(f.root, sub), Bucket: bucket, Prefix: prefix}
}

func (f *fixture) syncNow() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.eng.SyncNow(ctx)
}

func (f *fixture) status(id string) MappingStatus {
	for _, s := range f.eng.Status() {
		if s.ID == id {
			return s
		}
	}
	f.t.Fatalf("no status for %s", id)
	return MappingStatus{}
}

func (f *fixture) write(rel string, data []byte) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	require.NoError(f.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(f.t, os.WriteFile(p, data, 0o644))
}

func (f *fixture) read(rel string) []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, rel))
	require.NoError(f.t, err)
	return b
}

func (f *fixture) put(key string, data []byte) minio.UploadInfo {
	f.t.Helper()
	info, err := f.srv.Client().PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{DisableContentSha256: true})
	require.NoError(f.t, err, key)
	return info
}

func (f *fixture) get(key string) ([]byte, error) {
	o, err := f.srv.Client().GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

func (f *fixture) mustGet(key string) []byte {
	f.t.Helper()
	b, err := f.get(key)
	require.NoError(f.t, err, key)
	return b
}

func (f *fixture) stat(key string) (minio.ObjectInfo, error) {
	return f.srv.Client().StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
}

// listKeys lists every key under prefix.
func (f *fixture) listKeys(prefix string) []string {
	var out []string
	for o := range f.srv.Client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		require.NoError(f.t, o.Err)
		out = append(out, o.Key)
	}
	return out
}

// bodyHook runs fixture.midBody after the first read of a PUT body.
type bodyHook struct {
	next http.RoundTripper
	f    *fixture
}

func (h *bodyHook) RoundTrip(r *http.Request) (*http.Response, error) {
	if fn := h.f.midBody.Load(); fn != nil && r.Method == http.MethodPut && r.Body != nil && r.ContentLength > 0 {
		r.Body = &hookedBody{ReadCloser: r.Body, fn: *fn}
	}
	return h.next.RoundTrip(r)
}

type hookedBody struct {
	io.ReadCloser
	fn   func()
	done bool
}

func (b *hookedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.done && n > 0 {
		b.done = true
		b.fn()
	}
	return n, err
}

// interpose puts w between the engine's client and its transport (under the
// request counter): the engine makes a new client for the endpoint, which
// the fixture names by another address of the same server.
func (f *fixture) interpose(w func(http.RoundTripper) http.RoundTripper) {
	f.t.Helper()
	f.wrap.Store(&w)
	ep := *f.ep
	if ep.Host == "localhost" {
		ep.Host = f.srv.Host
	} else {
		ep.Host = "localhost"
	}
	f.ep = &ep
	require.NoError(f.t, f.eng.Configure(f.ep, f.mapping))
}
