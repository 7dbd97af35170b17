package s3wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// TestAddressingAsMinioGo: the URLs are the ones minio-go's makeTargetURL
// builds with BucketLookupAuto.
func TestAddressingAsMinioGo(t *testing.T) {
	for _, c := range []struct{ endpoint, bucket, key, region, want string }{
		{"http://127.0.0.1:9000", "data", "in/a b+c", "us-east-1", "http://127.0.0.1:9000/data/in/a%20b%2Bc"},
		{"https://minio.example.com", "data.x", "k", "us-east-1", "https://minio.example.com/data.x/k"},
		{"https://s3.amazonaws.com", "data", "in/k", "eu-west-1", "https://data.s3.eu-west-1.amazonaws.com/in/k"},
		{"https://s3.amazonaws.com:443", "data", "", "", "https://data.s3.us-east-1.amazonaws.com/"},
		{"https://s3.eu-west-1.amazonaws.com", "data", "k", "eu-central-1", "https://data.s3.eu-central-1.amazonaws.com/k"},
		{"https://s3.cn-north-1.amazonaws.com.cn", "data", "k", "cn-north-1", "https://data.s3.cn-north-1.amazonaws.com.cn/k"},
		// A dotted bucket would not match the certificate: path-style.
		{"https://s3.amazonaws.com", "my.data", "k", "us-west-2", "https://s3.us-west-2.amazonaws.com/my.data/k"},
		{"http://s3.amazonaws.com", "my.data", "k", "us-west-2", "http://my.data.s3.us-west-2.amazonaws.com/k"},
	} {
		ep, err := url.Parse(c.endpoint)
		require.NoError(t, err)
		var a addressing
		u, err := a.url(ep, c.bucket, c.key, c.region, "")
		require.NoError(t, err)
		assert.Equal(t, c.want, u.String(), "%s %s", c.endpoint, c.bucket)
	}
}

// fakeAWS stands for AWS in front of a real server: it takes virtual-host
// requests for buckets that live in region, refuses those sent to or
// signed for another region as AWS does (AuthorizationHeaderMalformed with
// the region in the body, or PermanentRedirect with x-amz-bucket-region),
// and forwards the others path-style to the server, signed again for it.
type fakeAWS struct {
	region   string
	redirect bool // refuse with PermanentRedirect rather than AuthorizationHeaderMalformed
	backend  *url.URL
	access   string
	secret   string

	mu   sync.Mutex
	seen []string // "host path signing-region"
}

var credentialRegion = regexp.MustCompile(`Credential=[^/]+/[0-9]+/([^/]+)/s3/aws4_request`)

func (f *fakeAWS) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() { f.seen = nil }()
	return f.seen
}

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var signedFor string
	if m := credentialRegion.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		signedFor = m[1]
	}
	f.mu.Lock()
	f.seen = append(f.seen, r.Host+" "+r.URL.Path+" "+signedFor)
	f.mu.Unlock()
	bucket, onRegionHost := strings.CutSuffix(r.Host, ".s3."+f.region+".amazonaws.com")
	switch {
	case f.redirect && !onRegionHost:
		w.Header().Set("X-Amz-Bucket-Region", f.region)
		w.WriteHeader(http.StatusMovedPermanently)
		fmt.Fprintf(w, "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>s3.%s.amazonaws.com</Endpoint></Error>", f.region)
		return
	case signedFor != f.region || !onRegionHost:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region '%s' is wrong; expecting '%s'</Message><Region>%s</Region></Error>", signedFor, f.region, f.region)
		return
	}
	u := *f.backend
	u.Path = "/" + bucket + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range []string{"If-Match", "Range"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req = signV4(req, f.access, f.secret, "us-east-1")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// awsDialer sends every connection to an AWS name to addr.
func awsDialer(addr string) http.RoundTripper {
	return &http.Transport{DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil || !strings.HasSuffix(host, ".amazonaws.com") {
			return nil, fmt.Errorf("test dialer: %s is not an AWS name", hostport)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
}

// TestAWSEndpointVirtualHostAndRegion: with an endpoint named like AWS,
// list, get and notify send virtual-host requests to the region's host;
// told the bucket is in another region (either way AWS says it), each sends
// the request again at once for that region and keeps it for the next.
func TestAWSEndpointVirtualHostAndRegion(t *testing.T) {
	srv := s3test.Start(t, s3test.WithBuckets("data"))
	c := srv.Client()
	access, secret := srv.Credentials()
	ctx := context.Background()
	const key = "p/with space+plus"
	_, err := c.PutObject(ctx, "data", key, strings.NewReader("hello"), 5, minio.PutObjectOptions{DisableContentSha256: true})
	require.NoError(t, err)

	for _, redirect := range []bool{false, true} {
		t.Run(fmt.Sprintf("redirect=%v", redirect), func(t *testing.T) {
			f := &fakeAWS{region: "eu-west-1", redirect: redirect, backend: c.EndpointURL(), access: access, secret: secret}
			proxy := httptest.NewServer(f)
			defer proxy.Close()
			rt := awsDialer(proxy.Listener.Addr().String())
			aws := &url.URL{Scheme: "http", Host: "s3.amazonaws.com"}
			guess := func(context.Context, string) (string, error) { return "us-east-1", nil }
			first := []string{"data.s3.us-east-1.amazonaws.com / us-east-1", "data.s3.eu-west-1.amazonaws.com / eu-west-1"}

			l := &Lister{Endpoint: aws, Transport: rt, AccessKey: access, SecretKey: secret, Region: guess}
			for range 2 {
				var keys []string
				for o, err := range l.List(ctx, "data", "p/") {
					require.NoError(t, err)
					keys = append(keys, o.Key)
				}
				assert.Equal(t, []string{key}, keys)
			}
			assert.Equal(t, append(first, first[1]), f.requests(), "list")

			g := &Getter{Endpoint: aws, Transport: rt, AccessKey: access, SecretKey: secret, Region: guess}
			for range 2 {
				o, err := g.Get(ctx, "data", key, "")
				require.NoError(t, err)
				b, err := io.ReadAll(o)
				o.Close()
				require.NoError(t, err)
				assert.Equal(t, "hello", string(b))
			}
			withKey := []string{"data.s3.us-east-1.amazonaws.com /" + key + " us-east-1", "data.s3.eu-west-1.amazonaws.com /" + key + " eu-west-1"}
			assert.Equal(t, append(withKey, withKey[1]), f.requests(), "get")

			// The fake forwards the stream's request to versitygw, which
			// answers with a listing: not supported, after the region's retry.
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := Listen(lctx, ListenConfig{S3: s3client.Config{Host: "s3.amazonaws.com", AccessKey: access, SecretKey: secret, Transport: rt},
				Bucket: "data", Prefixes: []string{"p/"}, Log: zaptest.NewLogger(t)})
			require.True(t, errors.Is(err, ErrUnsupported), "%v", err)
			assert.Equal(t, first, f.requests(), "notify")
		})
	}
}

// TestRegionErrorWithoutRegionIsReturned: a refusal that names no region
// is the caller's error, sent once.
func TestRegionErrorWithoutRegionIsReturned(t *testing.T) {
	var calls int
	g := &Getter{
		Endpoint: &url.URL{Scheme: "http", Host: "s3.test"}, AccessKey: "a", SecretKey: "s",
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls++
			return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{},
				Body: io.NopCloser(strings.NewReader("<Error><Code>AuthorizationHeaderMalformed</Code></Error>"))}, nil
		}),
	}
	_, err := g.Get(context.Background(), "b", "k", "")
	var er minio.ErrorResponse
	require.ErrorAs(t, err, &er)
	assert.Equal(t, "AuthorizationHeaderMalformed", er.Code)
	assert.Equal(t, 1, calls)
}
