// Package s3client builds minio-go clients for the sync engine: TLS with extra
// CA certificates, a connection pool sized for parallel transfers, bounded
// retries, bounded request time (deadlines on progress, not on total time:
// see Timeouts), an optional engine-wide bandwidth limit, and no trailing
// checksum headers (versitygw rejects them).
package s3client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

// Config says how to reach the server.
type Config struct {
	Host      string
	Port      int
	Secure    bool
	Region    string // "" or "ignore": discovered
	AccessKey string
	SecretKey string
	CAPEM     []byte // added to the system roots
	// Transport replaces the one built here (TLS settings then are the caller's).
	Transport http.RoundTripper
	// Wrap, when set, wraps the transport (for counting requests).
	Wrap func(http.RoundTripper) http.RoundTripper
	// Conns is the number of connections kept per host; default 16.
	Conns int
	// Timeouts bound dial, TLS handshake and progress; zero fields take
	// DefaultTimeouts. Not used with Transport.
	Timeouts Timeouts
	// Limiter, when set, paces every connection: writes as uploads, reads
	// as downloads. Not used with Transport.
	Limiter *bwlimit.Limiter
}

// MaxRetries bounds minio-go's own retries of one request; the engine retries
// files on later passes.
const MaxRetries = 3

// New returns a client for c.
func New(c Config) (*minio.Client, error) {
	cl, _, err := NewWithTransport(c)
	return cl, err
}

// NewWithTransport is New, and the transport the client sends through, for
// requests made beside minio-go (sync/s3list) that must be paced, bounded
// and counted alike.
func NewWithTransport(c Config) (*minio.Client, http.RoundTripper, error) {
	if c.Host == "" {
		return nil, nil, errors.New("s3 endpoint: no host")
	}
	rt, err := RoundTripper(c)
	if err != nil {
		return nil, nil, err
	}
	cl, err := onTransport(c, rt, MaxRetries)
	if err != nil {
		return nil, nil, err
	}
	return cl, rt, nil
}

// NewSingleTry is a client for c over rt (the transport NewWithTransport
// returned for the same c) that sends each request once: for a caller that
// retries by itself, and not the same way (a longer wait after a timeout,
// see WithPatience).
func NewSingleTry(c Config, rt http.RoundTripper) (*minio.Client, error) {
	if c.Host == "" {
		return nil, errors.New("s3 endpoint: no host")
	}
	return onTransport(c, rt, 1)
}

func onTransport(c Config, rt http.RoundTripper, retries int) (*minio.Client, error) {
	endpoint := c.Host
	if c.Port != 0 {
		endpoint = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	region := c.Region
	if region == "ignore" {
		region = ""
	}
	cl, err := minio.New(endpoint, &minio.Options{
		Creds:           credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure:          c.Secure,
		Transport:       rt,
		Region:          region,
		BucketLookup:    minio.BucketLookupPath,
		TrailingHeaders: false, // versitygw rejects trailing checksums
		MaxRetries:      retries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", endpoint, err)
	}
	return cl, nil
}

// RoundTripper is what New gives minio-go for c: c.Transport or a transport
// built from c, with the progress deadline of c.Timeouts on the connections
// built here, wrapped by c.Wrap. For requests minio-go does not make (the
// notification stream).
func RoundTripper(c Config) (http.RoundTripper, error) {
	rt := c.Transport
	if rt == nil {
		t, err := newTransport(c.Secure, c.CAPEM, c.Conns, c.Timeouts, c.Limiter)
		if err != nil {
			return nil, err
		}
		rt = t
	}
	rt = tracked{next: rt} // the progress deadline, on connections made here
	if c.Wrap != nil {
		rt = c.Wrap(rt)
	}
	return rt, nil
}

// NewTransport is an HTTP transport trusting the system roots plus caPEM,
// with DefaultTimeouts and no bandwidth limit. Its progress deadline applies
// only to requests sent through a client made by New.
func NewTransport(secure bool, caPEM []byte, conns int) (*http.Transport, error) {
	return newTransport(secure, caPEM, conns, Timeouts{}, nil)
}

func newTransport(secure bool, caPEM []byte, conns int, to Timeouts, lim *bwlimit.Limiter) (*http.Transport, error) {
	if conns <= 0 {
		conns = 16
	}
	to = to.withDefaults()
	dial := (&net.Dialer{Timeout: to.Dial, KeepAlive: 30 * time.Second}).DialContext
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           progressDial(lim.DialContext(dial), to),
		MaxIdleConns:          conns * 2,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   to.TLSHandshake,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	if secure {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if len(caPEM) > 0 && !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("s3 endpoint: CA bundle holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// Counter counts the requests of every transport it wraps. One Counter may
// wrap the transports of several clients (an engine's and its notification
// listeners'), each created concurrently, so it holds no transport itself.
type Counter struct {
	n    atomic.Int64
	puts atomic.Int64
	// sent and received count object data on the wire: the bodies of PUT
	// requests (objects and parts) and of GET responses without a query
	// (objects and ranges; a listing has a query).
	sent, received atomic.Int64
}

// Wrap returns next counted by c; it suits s3client.Config.Wrap and
// datasync.Options.WrapTransport.
func (c *Counter) Wrap(next http.RoundTripper) http.RoundTripper {
	return countedTransport{c: c, next: next}
}

type countedTransport struct {
	c    *Counter
	next http.RoundTripper
}

// RoundTrip counts and forwards the request.
func (t countedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.n.Add(1)
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		t.c.puts.Add(1)
	}
	if r.Method == http.MethodPut && r.Body != nil && r.Body != http.NoBody {
		r = r.Clone(r.Context())
		r.Body = &countedReader{ReadCloser: r.Body, n: &t.c.sent}
	}
	resp, err := t.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && r.URL.RawQuery == "" && resp.Body != nil {
		resp.Body = &countedReader{ReadCloser: resp.Body, n: &t.c.received}
	}
	return resp, err
}

// countedReader adds what is read through it to n.
type countedReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countedReader) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// Sent is the number of object bytes uploaded so far (PUT bodies, retries
// included).
func (c *Counter) Sent() int64 { return c.sent.Load() }

// Received is the number of object bytes downloaded so far.
func (c *Counter) Received() int64 { return c.received.Load() }

// Requests is the number of requests so far.
func (c *Counter) Requests() int64 { return c.n.Load() }

// Writes is the number of PUT and POST requests so far.
func (c *Counter) Writes() int64 { return c.puts.Load() }

// Reset sets the counts to zero.
func (c *Counter) Reset() { c.n.Store(0); c.puts.Store(0); c.sent.Store(0); c.received.Store(0) }
