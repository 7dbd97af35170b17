package datasync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
)

// The Backend contract: each behaviour the engine relies on, as a table run
// against the in-memory twin (memory_test.go) and the minio-go Backend on
// every server of the matrix (versitygw, MinIO as released, Ceph RGW). A
// behaviour the twin passes and a server fails is a bug in the twin (or a
// server quirk the Backend must absorb), never a reason to skip a server.

// contractKeys are keys whose encoding a listing, a signature or a parser
// could get wrong.
var contractKeys = []string{
	"c/plain", "c/with space", "c/plus+sign", "c/percent%20literal", "c/percent%zz", "c/amp&er<less>",
	"c/ctrl\x01char", "c/tab\tin", "c/été/ñ", "c/emoji😀", "c/q?x=1#frag", "c/deep/a/b", longKey(),
}

// longKey is a key of 1,024 bytes (S3's limit) in components of at most
// 200 bytes (the file-backed servers map components to file names).
func longKey() string {
	k := "c/long"
	for len(k) < 1024 {
		k += "/" + strings.Repeat("k", min(200, 1024-len(k)-1))
	}
	return k[:1024]
}

// lossyKeys are keys as versitygw 1.8 lists them: its XML encoder turns a
// control character into U+FFFD whatever the encoding-type asked for, so
// such a key cannot be fetched by its listed name (docs/s3-servers.md). The
// test maps it back on that server only: on every other one it must list
// as it was put.
var lossyKeys = map[string]string{"c/ctrl\uFFFDchar": "c/ctrl\x01char"}

// lossyServer are the servers whose listings lose control characters.
var lossyServer = map[string]bool{"TestBackendContract/versitygw": true}

type contractCase struct {
	name string
	run  func(t *testing.T, be Backend, bkt string)
	// on says which Backend the case runs with: a working one, one of the
	// same bucket whose credentials the server refuses, or one whose
	// server does not answer (the twin's down switch).
	on contractBackend
}

type contractBackend int

const (
	working contractBackend = iota
	denied
	unreachable
)

var contract = []contractCase{
	{"list order and pagination", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		keys := slices.Clone(contractKeys)
		for i := range 1003 { // past a page of 1,000
			keys = append(keys, fmt.Sprintf("c/many/%04d", i))
		}
		want := map[string]Object{}
		for i, k := range keys {
			body := strings.Repeat("x", i%5+1)
			etag, err := be.Put(ctx, bkt, k, strings.NewReader(body), int64(len(body)), PutOptions{})
			require.NoError(t, err, "%q", k)
			want[k] = Object{Key: k, Size: int64(len(body)), ETag: etag}
		}
		slices.Sort(keys) // byte order, as S3 lists
		for _, prefix := range []string{"c/", "c/many/", "c/with", "none/"} {
			var got []string
			for o, err := range be.List(ctx, bkt, prefix) {
				require.NoError(t, err)
				if k, ok := lossyKeys[o.Key]; ok && lossyServer[t.Name()[:strings.LastIndex(t.Name(), "/")]] {
					o.Key = k // a server quirk no client can undo (lossyKeys)
				}
				w := want[o.Key]
				assert.Equal(t, w.Size, o.Size, "%q", o.Key)
				assert.Equal(t, w.ETag, o.ETag, "%q: the listing's ETag is Put's", o.Key)
				assert.False(t, o.LastModified.IsZero(), "%q", o.Key)
				got = append(got, o.Key)
			}
			var exp []string
			for _, k := range keys {
				if strings.HasPrefix(k, prefix) {
					exp = append(exp, k)
				}
			}
			assert.Equal(t, exp, got, "prefix %q", prefix)
		}
	}, working},
	{"user metadata", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		_, err := be.Put(ctx, bkt, "m/k", strings.NewReader("v"), 1, PutOptions{Meta: map[string]string{"Mtime": "1700000000.5"}})
		require.NoError(t, err)
		o, err := be.Stat(ctx, bkt, "m/k")
		require.NoError(t, err)
		assert.Equal(t, "1700000000.5", metaValue(o.Meta, "mtime"))
		body, err := be.Get(ctx, bkt, "m/k", "")
		require.NoError(t, err)
		defer body.Close()
		_, _ = io.Copy(io.Discard, body)
		mb, ok := body.(metaBody)
		require.True(t, ok, "a body carries its user metadata")
		assert.Equal(t, "1700000000.5", metaValue(mb.UserMeta(), "mtime"))
	}, working},
	{"conditional and ranged GET", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		etag, err := be.Put(ctx, bkt, "g/k", strings.NewReader("0123456789"), 10, PutOptions{})
		require.NoError(t, err)
		assert.Equal(t, "781e5e245d69b566979b86e28d23f2c7", etag, "a single PUT's ETag is the MD5 of the body")
		assert.Equal(t, "5678", readAll(t)(be.GetRange(ctx, bkt, "g/k", etag, 5, 4)))
		assert.Equal(t, "0123456789", readAll(t)(be.Get(ctx, bkt, "g/k", etag)))
		_, err = be.Get(ctx, bkt, "g/k", "00000000000000000000000000000000")
		require.Error(t, err)
		assert.ErrorIs(t, err, s3wire.Precondition)
		assert.ErrorIs(t, movedOr(err), errObjectMoved, "a changed object is 'moved', not a failure: %v", err)
	}, working},
	{"missing object", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		_, err := be.Stat(ctx, bkt, "none/k")
		assert.ErrorIs(t, err, ErrNotFound)
		_, err = be.Get(ctx, bkt, "none/k", "")
		assert.ErrorIs(t, err, ErrNotFound)
	}, working},
	{"missing bucket", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		for _, err := range be.List(ctx, "no-such-bucket-"+strings.ToLower(bkt), "") {
			require.Error(t, err, "a listing of a missing bucket is an error, not an empty bucket")
			assert.ErrorIs(t, err, s3wire.NoSuchBucket)
			assert.NotErrorIs(t, err, ErrNotFound)
			return
		}
		t.Fatal("a listing of a missing bucket yielded nothing")
	}, working},
	{"wrong credentials", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		for _, err := range be.List(ctx, bkt, "") {
			assert.ErrorIs(t, err, s3wire.AccessDenied)
			break
		}
		_, err := be.Stat(ctx, bkt, "k")
		assert.ErrorIs(t, err, s3wire.AccessDenied)
		assert.NotErrorIs(t, err, ErrNotFound)
		_, err = be.Get(ctx, bkt, "k", "")
		assert.ErrorIs(t, err, s3wire.AccessDenied)
		_, err = be.Put(ctx, bkt, "k", strings.NewReader("v"), 1, PutOptions{})
		assert.ErrorIs(t, err, s3wire.AccessDenied)
	}, denied},
	{"server down", func(t *testing.T, be Backend, bkt string) {
		// Every call fails at once, as a connection error: serverWide stops
		// the pass, and it is neither a missing object nor a refusal.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		check := func(op string, err error) {
			t.Helper()
			if !assert.Error(t, err, op) {
				return
			}
			var ue *url.Error
			assert.True(t, errors.As(err, &ue), "%s: a *url.Error in the chain: %#v", op, err)
			assert.True(t, serverWide(err), "%s: server-wide: %v", op, err)
			assert.NotErrorIs(t, err, ErrNotFound, op)
			assert.NotErrorIs(t, err, s3wire.AccessDenied, op)
		}
		// At once: each call's retries take a while.
		var wg sync.WaitGroup
		wg.Go(func() {
			n := 0
			for _, err := range be.List(ctx, bkt, "") {
				check("list", err)
				n++
				break
			}
			assert.Equal(t, 1, n, "a listing of a server that is down yields its error")
		})
		wg.Go(func() { _, err := be.Stat(ctx, bkt, "k"); check("stat", err) })
		wg.Go(func() { _, err := be.Get(ctx, bkt, "k", ""); check("get", err) })
		wg.Go(func() { _, err := be.Put(ctx, bkt, "k", strings.NewReader("v"), 1, PutOptions{}); check("put", err) })
		wg.Wait()
	}, unreachable},
	{"multipart ETag", func(t *testing.T, be Backend, bkt string) {
		ctx := context.Background()
		data := bytes.Repeat([]byte("0123456789abcdef"), (11<<20)/16) // 11 MiB: 3 parts of 5 MiB
		etag, err := be.Put(ctx, bkt, "mp/k", bytes.NewReader(data), int64(len(data)), PutOptions{PartSize: 5 << 20, Threads: 2})
		require.NoError(t, err)
		assert.Equal(t, memMultipartETag(data, 5<<20), etag, "Put returns the multipart ETag (MD5 of the part MD5s, -N)")
		o, err := be.Stat(ctx, bkt, "mp/k")
		require.NoError(t, err)
		assert.Equal(t, etag, o.ETag)
		for o, err := range be.List(ctx, bkt, "mp/") {
			require.NoError(t, err)
			assert.Equal(t, etag, o.ETag)
		}
		assert.Equal(t, len(data), len(readAll(t)(be.Get(ctx, bkt, "mp/k", etag))))
	}, working},
}

// readAll reads a body that Get returned with its error.
func readAll(t *testing.T) func(io.ReadCloser, error) string {
	return func(body io.ReadCloser, err error) string {
		t.Helper()
		require.NoError(t, err)
		defer body.Close()
		b, err := io.ReadAll(body)
		require.NoError(t, err)
		return string(b)
	}
}

func TestMain(m *testing.M) { s3test.Main(m) }

func TestBackendContract(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	// newBackend returns the Backends of contractBackend and the bucket;
	// run runs the cases on the Backends only wants.
	run := func(t *testing.T, only func(contractBackend) bool, newBackend func(t *testing.T) ([3]Backend, string)) {
		for _, c := range contract {
			if !only(c.on) {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				be, bkt := newBackend(t)
				c.run(t, be[c.on], bkt)
			})
		}
	}
	all := func(contractBackend) bool { return true }
	t.Run("memory", func(t *testing.T) {
		run(t, all, func(*testing.T) ([3]Backend, string) {
			denied := newMemBackend()
			denied.deny = s3wire.Classify(minio.ErrorResponse{StatusCode: http.StatusForbidden, Code: "AccessDenied"})
			down := newMemBackend()
			down.down.Store(true)
			return [3]Backend{newMemBackend(), denied, down}, bucket
		})
	})
	minioBackendOf := func(t *testing.T, ep *Endpoint) Backend {
		cfg := s3client.Config{Host: ep.Host, Port: ep.Port, Region: ep.Region, AccessKey: ep.AccessKey, SecretKey: ep.SecretKey}
		client, rt, err := s3client.NewWithTransport(cfg)
		require.NoError(t, err)
		put, err := s3client.NewSingleTry(cfg, rt)
		require.NoError(t, err)
		return newMinioBackend(client, put, rt, ep)
	}
	// A server that does not answer is the same whatever server it was:
	// the minio-go Backend on a port nothing listens on (its retries take
	// seconds, once).
	t.Run("unreachable", func(t *testing.T) {
		ep := &Endpoint{Host: "127.0.0.1", Port: closedPort(t), Region: s3test.Region, AccessKey: "a", SecretKey: "s"}
		down := minioBackendOf(t, ep)
		run(t, func(on contractBackend) bool { return on == unreachable }, func(*testing.T) ([3]Backend, string) {
			return [3]Backend{nil, nil, down}, bucket
		})
	})
	for _, server := range s3test.Matrix() {
		t.Run(server.Name, func(t *testing.T) {
			srv := server.Start(t, s3test.WithBuckets(bucket))
			access, secret := srv.Credentials()
			ep := &Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: access, SecretKey: secret}
			be := minioBackendOf(t, ep)
			wrong := *ep
			wrong.SecretKey += "-wrong"
			denied := minioBackendOf(t, &wrong)
			n := 0
			run(t, func(on contractBackend) bool { return on != unreachable }, func(t *testing.T) ([3]Backend, string) {
				n++
				b := fmt.Sprintf("contract-%d", n) // a bucket per behaviour
				require.NoError(t, srv.MakeBucket(context.Background(), b))
				return [3]Backend{be, denied, nil}, b
			})
		})
	}
}

// closedPort is a local port nothing listens on: connections are refused.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}
