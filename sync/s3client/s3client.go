// Package s3client builds minio-go clients for the sync engine: TLS with extra
// CA certificates, a connection pool sized for parallel transfers, bounded
// retries, and no trailing checksum headers (versitygw rejects them).
package s3client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
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
}

// MaxRetries bounds minio-go's own retries of one request; the engine retries
// files on later passes.
const MaxRetries = 3

// New returns a client for c.
func New(c Config) (*minio.Client, error) {
	if c.Host == "" {
		return nil, errors.New("s3 endpoint: no host")
	}
	rt := c.Transport
	if rt == nil {
		t, err := NewTransport(c.Secure, c.CAPEM, c.Conns)
		if err != nil {
			return nil, err
		}
		rt = t
	}
	if c.Wrap != nil {
		rt = c.Wrap(rt)
	}
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
		MaxRetries:      MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", endpoint, err)
	}
	return cl, nil
}

// NewTransport is an HTTP transport trusting the system roots plus caPEM.
func NewTransport(secure bool, caPEM []byte, conns int) (*http.Transport, error) {
	if conns <= 0 {
		conns = 16
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns * 2,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
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

// Counter is an http.RoundTripper counting the requests it passes on.
type Counter struct {
	Next http.RoundTripper
	n    atomic.Int64
	puts atomic.Int64
}

// RoundTrip counts and forwards the request.
func (c *Counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		c.puts.Add(1)
	}
	return c.Next.RoundTrip(r)
}

// Requests is the number of requests so far.
func (c *Counter) Requests() int64 { return c.n.Load() }

// Writes is the number of PUT and POST requests so far.
func (c *Counter) Writes() int64 { return c.puts.Load() }

// Reset sets the counts to zero.
func (c *Counter) Reset() { c.n.Store(0); c.puts.Store(0) }
