package datasync

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// memBackend is the in-memory twin of the minio-go Backend: a bucket as a
// map, listed in key order, with S3's ETags (MD5, or MD5 of part MD5s "-N").
type memBackend struct {
	mu      sync.Mutex
	objs    map[string]memObject // by bucket + "\x00" + key
	lists   atomic.Int64         // List calls
	pages   atomic.Int64         // LIST requests a server would have answered (1,000 keys each)
	stats   atomic.Int64
	puts    atomic.Int64
	gets    atomic.Int64
	failPut func(key string) error // when set, may fail a Put
	deny    error                  // when set, every call fails with it (wrong credentials)
	// down, while set, makes every call fail as a server that does not
	// answer does: a *url.Error wrapping a refused connection (the
	// conformance suite checks that the minio-go Backend says the same).
	down atomic.Bool
	// PutParts (growing_test.go): bytes uploaded and copied server-side,
	// and a server without UploadPartCopy.
	sent, copied atomic.Int64
	refuseCopy   bool
	beforeParts  func() // runs as PutParts starts (after the engine read ahead)
	onGet        func() // when set, runs as a GET starts (dryrun_test.go)
}

type memObject struct {
	data  []byte
	etag  string
	meta  map[string]string
	mtime time.Time
}

func newMemBackend() *memBackend { return &memBackend{objs: map[string]memObject{}} }

// hasBucket: the fixtures' bucket, and any other the twin holds objects in.
func (b *memBackend) hasBucket(name string) bool {
	if name == bucket {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.objs {
		if bk, _, _ := strings.Cut(k, "\x00"); bk == name {
			return true
		}
	}
	return false
}

// unavailable is the error of every call while the twin refuses them all:
// down (unreachable), or deny (wrong credentials).
func (b *memBackend) unavailable(method, key string) error {
	if b.down.Load() {
		return &url.Error{Op: method, URL: "http://memory:1/" + bucket + "/" + key,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	}
	return b.deny
}

func (b *memBackend) requests() int64 {
	return b.pages.Load() + b.stats.Load() + b.puts.Load() + b.gets.Load()
}

// errNoSuchBucket is what a server answers for a bucket that does not
// exist; the twin has the fixtures' bucket only.
var errNoSuchBucket = minio.ErrorResponse{StatusCode: http.StatusNotFound, Code: "NoSuchBucket", Message: "The specified bucket does not exist"}

func (b *memBackend) List(ctx context.Context, bucket, prefix string) iter.Seq2[Object, error] {
	b.lists.Add(1)
	return func(yield func(Object, error) bool) {
		if err := b.unavailable("Get", prefix); err != nil {
			yield(Object{}, err)
			return
		}
		if !b.hasBucket(bucket) {
			yield(Object{}, s3wire.Classify(errNoSuchBucket))
			return
		}
		b.mu.Lock()
		var ks []string
		for k := range b.objs {
			if bk, key, _ := strings.Cut(k, "\x00"); bk == bucket && strings.HasPrefix(key, prefix) {
				ks = append(ks, key)
			}
		}
		b.mu.Unlock()
		slices.Sort(ks)
		b.pages.Add(int64(len(ks)/1000 + 1))
		for _, k := range ks {
			b.mu.Lock()
			o, ok := b.objs[bucket+"\x00"+k]
			b.mu.Unlock()
			if !ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				yield(Object{}, err)
				return
			}
			if !yield(Object{Key: k, Size: int64(len(o.data)), ETag: o.etag, LastModified: o.mtime}, nil) {
				return
			}
		}
	}
}

func (b *memBackend) Stat(_ context.Context, bucket, key string) (Object, error) {
	b.stats.Add(1)
	if err := b.unavailable("Head", key); err != nil {
		return Object{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[bucket+"\x00"+key]
	if !ok {
		return Object{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return Object{Key: key, Size: int64(len(o.data)), ETag: o.etag, LastModified: o.mtime, Meta: maps.Clone(o.meta)}, nil
}

func (b *memBackend) Put(_ context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	b.puts.Add(1)
	if err := b.unavailable("Put", key); err != nil {
		return "", err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if int64(len(data)) != size {
		return "", fmt.Errorf("body of %d bytes, announced %d", len(data), size)
	}
	if b.failPut != nil {
		if err := b.failPut(key); err != nil {
			return "", err
		}
	}
	etag := md5Hex(data)
	if o.PartSize > 0 {
		etag = memMultipartETag(data, o.PartSize)
	}
	b.set(bucket, key, data, etag, o.Meta)
	return etag, nil
}

func (b *memBackend) set(bucket, key string, data []byte, etag string, meta map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objs[bucket+"\x00"+key] = memObject{data: slices.Clone(data), etag: etag, meta: maps.Clone(meta), mtime: time.Now()}
}

func (b *memBackend) Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, error) {
	return b.GetRange(ctx, bucket, key, matchETag, 0, -1)
}

func (b *memBackend) GetRange(_ context.Context, bucket, key, matchETag string, off, length int64) (io.ReadCloser, error) {
	b.gets.Add(1)
	if b.onGet != nil {
		b.onGet()
	}
	if err := b.unavailable("Get", key); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[bucket+"\x00"+key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if matchETag != "" && matchETag != o.etag {
		return nil, s3wire.Classify(minio.ErrorResponse{StatusCode: http.StatusPreconditionFailed, Code: "PreconditionFailed"})
	}
	data := o.data[min(off, int64(len(o.data))):]
	if length >= 0 {
		data = data[:min(length, int64(len(data)))]
	}
	return memBody{io.NopCloser(bytes.NewReader(data)), maps.Clone(o.meta)}, nil
}

// memBody is a body with its object's user metadata, as a GET response has.
type memBody struct {
	io.ReadCloser
	meta map[string]string
}

func (b memBody) UserMeta() map[string]string { return b.meta }

// test helpers
func (b *memBackend) put(key string, data []byte) string {
	etag := md5Hex(data)
	b.set(bucket, key, data, etag, nil)
	return etag
}

func (b *memBackend) remove(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.objs, bucket+"\x00"+key)
}

func (b *memBackend) data(key string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[bucket+"\x00"+key]
	return o.data, ok
}

func (b *memBackend) keys() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for k := range b.objs {
		_, key, _ := strings.Cut(k, "\x00")
		out = append(out, key)
	}
	slices.Sort(out)
	return out
}

func md5Hex(b []byte) string {
	s := md5.Sum(b) //nolint:gosec
	return hex.EncodeToString(s[:])
}

func memMultipartETag(data []byte, partSize int64) string {
	all := md5.New() //nolint:gosec
	n := 0
	for off := int64(0); off < int64(len(data)); off += partSize {
		s := md5.Sum(data[off:min(off+partSize, int64(len(data)))]) //nolint:gosec
		all.Write(s[:])
		n++
	}
	return hex.EncodeToString(all.Sum(nil)) + "-" + strconv.Itoa(n)
}

// memFixture is an engine on an in-memory bucket: no server, runs under -short.
// The twin has no notification stream (notify_test.go has them on MinIO):
// its engines only poll.
type memFixture struct {
	t     *testing.T
	be    *memBackend
	eng   *Engine
	root  string
	state string
	opts  Options
	maps  []Mapping
	ep    *Endpoint   // what configure passes (memEndpoint; a copy to change it)
	log   *zap.Logger // the engine's logger, when not the test's (set before restart)
}

func newMemFixture(t *testing.T, opts ...func(*Options)) *memFixture {
	t.Helper()
	f := &memFixture{t: t, be: newMemBackend(), root: t.TempDir(), state: t.TempDir(), ep: memEndpoint}
	f.opts = Options{StateDir: f.state, Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1, NoNotify: true}
	for _, o := range opts {
		o(&f.opts)
	}
	f.start()
	return f
}

var memEndpoint = &Endpoint{Host: "memory", Port: 1, AccessKey: "a", SecretKey: "s"}

func (f *memFixture) start() {
	f.t.Helper()
	log := f.log
	if log == nil {
		log = zaptest.NewLogger(f.t)
	}
	eng, err := New(f.opts, log)
	require.NoError(f.t, err)
	eng.hooks.settle = 0
	eng.newBackend = func(*Endpoint) (Backend, error) { return f.be, nil }
	f.eng = eng
	f.t.Cleanup(func() { _ = eng.Close() })
	if f.maps != nil {
		require.NoError(f.t, eng.Configure(f.ep, f.maps))
	}
}

// restart closes the engine and starts another on the same state directory.
func (f *memFixture) restart() {
	f.t.Helper()
	require.NoError(f.t, f.eng.Close())
	f.start()
}

func (f *memFixture) configure(ms ...Mapping) {
	f.t.Helper()
	f.maps = ms
	require.NoError(f.t, f.eng.Configure(f.ep, ms))
}

// newEndpoint makes the next configure name another endpoint (the same
// twin): what new credentials or a new address do to the engine.
func (f *memFixture) newEndpoint() {
	ep := *f.ep
	ep.Host += "'"
	f.ep = &ep
}

func (f *memFixture) egress(id, sub, prefix string) Mapping {
	return Mapping{ID: id, Direction: Egress, Root: f.root, LocalDir: filepath.Join(f.root, sub), Bucket: bucket, Prefix: prefix}
}

func (f *memFixture) ingress(id, sub, prefix string) Mapping {
	return Mapping{ID: id, Direction: Ingress, Root: f.root, LocalDir: filepath.Join(f.root, sub), Bucket: bucket, Prefix: prefix}
}

func (f *memFixture) syncNow() error { return f.sync(PassOptions{}) }

func (f *memFixture) sync(po PassOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.eng.Sync(ctx, po)
}

func (f *memFixture) status(id string) MappingStatus {
	for _, s := range f.eng.Status() {
		if s.ID == id {
			return s
		}
	}
	f.t.Fatalf("no status for %s", id)
	return MappingStatus{}
}

func (f *memFixture) write(rel string, data []byte) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	require.NoError(f.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(f.t, os.WriteFile(p, data, 0o644))
}

func (f *memFixture) read(rel string) []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, rel))
	require.NoError(f.t, err)
	return b
}

// has reports whether the bucket holds key.
func (f *memFixture) has(key string) bool {
	_, ok := f.be.data(key)
	return ok
}

func (f *memFixture) mustGet(key string) []byte {
	f.t.Helper()
	b, ok := f.be.data(key)
	require.True(f.t, ok, "no object %s", key)
	return b
}

func (f *memFixture) rows(id string) int {
	f.t.Helper()
	n, err := f.eng.jr.Rows(id, 0)
	require.NoError(f.t, err)
	return n
}
