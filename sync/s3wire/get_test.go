package s3wire

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// getterFor is a Getter of srv through a transport that counts requests.
func getterFor(t *testing.T, srv *s3test.Server, requests *s3client.Counter) *Getter {
	t.Helper()
	c := srv.Client()
	access, secret := srv.Credentials()
	return &Getter{
		Endpoint:  c.EndpointURL(),
		Transport: requests.Wrap(http.DefaultTransport),
		AccessKey: access, SecretKey: secret,
		Region: func(ctx context.Context, bucket string) (string, error) { return c.GetBucketLocation(ctx, bucket) },
	}
}

// awkwardGetKeys are keys whose path encoding a hand-written signer could get
// wrong.
var awkwardGetKeys = []string{
	"plain", "with space", "plus+sign", "amp&er", "less<more>", `quote"apos'`, "percent%20literal",
	"été/ñ", "emoji😀", "semi;colon", "q?x=1#frag", "star*paren()!", "tilde~dash-under_dot.",
	"comma,colon:at@dollar$eq=", "deep/a/b/c", "double//slash", "back\\slash", "caret^pipe|brace{}",
}

// serverMayRefuse are keys MinIO refuses to store (it maps keys to paths).
var serverMayRefuse = map[string]bool{"double//slash": true, "back\\slash": true}

// TestGetMatchesMinioGo: on both servers the project supports, every key
// comes back with its content and its user metadata, as minio-go gets it.
func TestGetMatchesMinioGo(t *testing.T) {
	t.Parallel() // mostly waits for its servers to start; nothing here is shared
	for _, server := range s3test.Matrix() {
		name := server.Name
		t.Run(name, func(t *testing.T) {
			srv := server.Start(t, s3test.WithBuckets("data"))
			c := srv.Client()
			ctx := context.Background()
			var requests s3client.Counter
			g := getterFor(t, srv, &requests)
			for i, k := range awkwardGetKeys {
				body := strings.Repeat(k, i+1)
				info, err := c.PutObject(ctx, "data", k, strings.NewReader(body), int64(len(body)),
					minio.PutObjectOptions{UserMetadata: map[string]string{"Mtime": "1700000000.5"}})
				if err != nil && serverMayRefuse[k] {
					t.Logf("%s refuses key %q: %v", name, k, err)
					continue
				}
				require.NoError(t, err, k)

				requests.Reset()
				o, err := g.Get(ctx, "data", k, info.ETag)
				require.NoError(t, err, k)
				got, err := io.ReadAll(o)
				require.NoError(t, err, k)
				require.NoError(t, o.Close())
				assert.Equal(t, body, string(got), k)
				assert.Equal(t, int64(1), requests.Requests(), k)

				mo, err := c.GetObject(ctx, "data", k, minio.GetObjectOptions{})
				require.NoError(t, err, k)
				_, _ = io.Copy(io.Discard, mo)
				st, err := mo.Stat()
				require.NoError(t, err, k)
				mo.Close()
				assert.Equal(t, map[string]string(st.UserMetadata), o.UserMeta(), k)
				assert.Equal(t, "1700000000.5", o.UserMeta()["Mtime"], k)
			}
		})
	}
}

func TestGetErrors(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("data"))
	ctx := context.Background()
	c := srv.Client()
	_, err := c.PutObject(ctx, "data", "k", strings.NewReader("v1"), 2, minio.PutObjectOptions{})
	require.NoError(t, err)
	var requests s3client.Counter
	g := getterFor(t, srv, &requests)

	var er minio.ErrorResponse
	_, err = g.Get(ctx, "data", "missing", "")
	require.ErrorAs(t, err, &er)
	assert.Equal(t, "NoSuchKey", er.Code)
	assert.Equal(t, http.StatusNotFound, er.StatusCode)

	// The version the caller saw is gone.
	_, err = g.Get(ctx, "data", "k", "0123456789abcdef0123456789abcdef")
	require.ErrorAs(t, err, &er)
	assert.Equal(t, http.StatusPreconditionFailed, er.StatusCode)
	assert.Equal(t, "PreconditionFailed", er.Code)

	bad := &Getter{Endpoint: g.Endpoint, Transport: g.Transport, AccessKey: g.AccessKey, SecretKey: "wrong-secret", Region: g.Region}
	requests.Reset()
	_, err = bad.Get(ctx, "data", "k", "")
	require.ErrorAs(t, err, &er)
	assert.Equal(t, "SignatureDoesNotMatch", er.Code)
	assert.Equal(t, int64(1), requests.Requests(), "a refusal is not tried again")
	assert.NotContains(t, err.Error(), "wrong-secret")

	// A server that is not there: tried three times, then a *url.Error.
	down := &Getter{Endpoint: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, Transport: g.Transport,
		AccessKey: g.AccessKey, SecretKey: g.SecretKey, Region: g.Region}
	requests.Reset()
	var ue *url.Error
	_, err = down.Get(ctx, "data", "k", "")
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, int64(3), requests.Requests())
}

// TestGetRetriesServerErrors: a 503 (SlowDown) is tried again, a 403 is not.
func TestGetRetriesServerErrors(t *testing.T) {
	var calls int
	status, code := http.StatusServiceUnavailable, "SlowDown"
	g := &Getter{
		Endpoint: &url.URL{Scheme: "http", Host: "s3.test"}, AccessKey: "a", SecretKey: "s",
		Region: func(context.Context, string) (string, error) { return "us-east-1", nil },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls++
			if calls == 1 {
				return &http.Response{StatusCode: status, Header: http.Header{},
					Body: io.NopCloser(strings.NewReader("<Error><Code>" + code + "</Code></Error>"))}, nil
			}
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok"))}, nil
		}),
	}
	o, err := g.Get(context.Background(), "b", "k", "")
	require.NoError(t, err)
	b, _ := io.ReadAll(o)
	assert.Equal(t, "ok", string(b))
	assert.Equal(t, 2, calls)

	calls, status, code = 0, http.StatusForbidden, "AccessDenied"
	_, err = g.Get(context.Background(), "b", "k", "")
	var er minio.ErrorResponse
	require.True(t, errors.As(err, &er))
	assert.Equal(t, 1, calls)
}

// TestGetChecksTheETag: a server that ignores If-Match and answers with
// another version is refused as PreconditionFailed; ranges ask for their
// bytes, and a server that ignores Range for a later range is refused.
func TestGetChecksTheETag(t *testing.T) {
	var gotRange string
	status := http.StatusPartialContent
	g := &Getter{
		Endpoint: &url.URL{Scheme: "http", Host: "s3.test"}, AccessKey: "a", SecretKey: "s",
		Region: func(context.Context, string) (string, error) { return "us-east-1", nil },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			gotRange = r.Header.Get("Range")
			return &http.Response{StatusCode: status, Header: http.Header{"Etag": {`"v2"`}}, Body: io.NopCloser(strings.NewReader("x"))}, nil
		}),
	}
	ctx := context.Background()
	_, err := g.GetRange(ctx, "b", "k", "v1", 8, 4)
	var er minio.ErrorResponse
	require.ErrorAs(t, err, &er)
	assert.Equal(t, "PreconditionFailed", er.Code)
	assert.Equal(t, "bytes=8-11", gotRange)

	o, err := g.GetRange(ctx, "b", "k", "V2", 8, 4) // ETags compare without case
	require.NoError(t, err)
	o.Close()

	status = http.StatusOK // Range ignored
	_, err = g.GetRange(ctx, "b", "k", "v2", 8, 4)
	require.ErrorContains(t, err, "bytes from 8")
	_, err = g.GetRange(ctx, "b", "k", "v2", 0, -1)
	require.NoError(t, err)
	assert.Empty(t, gotRange, "a whole object asks for no range")
}

// BenchmarkGet is the CPU of one small GET without the network: building,
// signing, and handling the answer (an ingress of small objects is mostly
// this).
func BenchmarkGet(b *testing.B) {
	g := &Getter{
		Endpoint: &url.URL{Scheme: "http", Host: "127.0.0.1:9000"}, AccessKey: "access", SecretKey: "secret",
		Region: func(context.Context, string) (string, error) { return "us-east-1", nil },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Header.Get("Authorization") == "" {
				return nil, errors.New("unsigned")
			}
			return &http.Response{StatusCode: 200, Header: http.Header{"Etag": {`"v1"`}}, Body: http.NoBody}, nil
		}),
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		o, err := g.Get(ctx, "bucket", "in/some/dir/file-00042.dat", "v1")
		if err != nil {
			b.Fatal(err)
		}
		o.Close()
	}
}
