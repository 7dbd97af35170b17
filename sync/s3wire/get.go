// Getter downloads objects with GetObject requests built and signed
// here.
//
// Why not minio-go's GetObject: for a small object its request building,
// per-request V4 signing key derivation, object bookkeeping (a goroutine and
// channels per object) and header decoding were about 45 µs of CPU per
// object on the test machine, an eighth of what a 10,000 x 4 KiB ingress
// spent. A Getter sends the request minio-go sends (addressed as it does,
// the path encoded as S3 canonicalises it, If-Match, signed by minio-go's
// V4 signer) through the same transport, and reports errors as
// minio.ErrorResponse so that callers classify both alike.

package s3wire

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Getter downloads objects from one server.
type Getter struct {
	// Endpoint is the server's base URL (scheme and host[:port]).
	Endpoint *url.URL
	// Transport sends the requests.
	Transport http.RoundTripper
	AccessKey string
	SecretKey string
	// Region returns the bucket's region, to sign with.
	Region func(ctx context.Context, bucket string) (string, error)
	// Tries is how many times a request is sent before its error is
	// returned; 0 means 3. Only failures that may pass are tried again.
	Tries int

	regions regions
	addr    addressing
}

// Object is an object's body and what the response said of it.
type Object struct {
	io.ReadCloser
	Header http.Header
}

// UserMeta is the object's user metadata (the X-Amz-Meta-* headers, with
// the prefix cut, names canonicalised as minio-go returns them).
func (o *Object) UserMeta() map[string]string {
	var m map[string]string
	for k, v := range o.Header {
		if name, ok := strings.CutPrefix(k, "X-Amz-Meta-"); ok && len(v) > 0 {
			if m == nil {
				m = map[string]string{}
			}
			m[name] = v[0]
		}
	}
	return m
}

// maxErrorBody bounds the bytes of an error response read.
const maxErrorBody = 64 << 10

// Get opens the object's body. With matchETag set the server refuses
// (PreconditionFailed) unless the object still has that ETag.
func (g *Getter) Get(ctx context.Context, bucket, key, matchETag string) (*Object, error) {
	return g.GetRange(ctx, bucket, key, matchETag, 0, -1)
}

// GetRange opens length bytes of the object from off (length < 0: to the
// end). A server that ignores the range for off > 0 is an error.
func (g *Getter) GetRange(ctx context.Context, bucket, key, matchETag string, off, length int64) (*Object, error) {
	region, err := g.regions.of(ctx, bucket, g.Region)
	if err != nil {
		return nil, err
	}
	tries := g.Tries
	if tries <= 0 {
		tries = 3
	}
	for try := 1; ; try++ {
		o, err := g.get(ctx, bucket, key, matchETag, region, off, length)
		if r, ok := g.regions.learn(bucket, region, err); ok && try < tries {
			region = r // sent again at once, signed for the bucket's region
			continue
		}
		if err == nil || try == tries || !Retryable(ctx, err) {
			return o, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(time.Duration(try*try)*200*time.Millisecond, time.Second)):
		}
	}
}

func (g *Getter) get(ctx context.Context, bucket, key, matchETag, region string, off, length int64) (*Object, error) {
	u, err := g.addr.url(g.Endpoint, bucket, key, region, "")
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "", nil)
	if err != nil {
		return nil, err
	}
	req.URL, req.Host = u, u.Host
	if matchETag != "" {
		req.Header.Set("If-Match", `"`+matchETag+`"`)
	}
	ranged := off > 0 || length >= 0
	if ranged {
		end := ""
		if length >= 0 {
			end = strconv.FormatInt(off+length-1, 10)
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+end)
	}
	req = signV4(req, g.AccessKey, g.SecretKey, region)
	resp, err := g.Transport.RoundTrip(req)
	if err != nil {
		return nil, &url.Error{Op: "Get", URL: u.Redacted(), Err: err}
	}
	switch {
	case matchETag != "" && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent) &&
		!strings.EqualFold(strings.Trim(resp.Header.Get("ETag"), `"`), matchETag):
		// A server that ignores If-Match: the version is checked here too,
		// so that the ranges of one download never mix two versions.
		resp.Body.Close()
		return nil, minio.ErrorResponse{StatusCode: http.StatusPreconditionFailed, Code: "PreconditionFailed",
			Message: "the object's ETag is " + resp.Header.Get("ETag") + ", not the one asked for", BucketName: bucket, Key: key}
	case resp.StatusCode == http.StatusOK && off == 0 || resp.StatusCode == http.StatusPartialContent && ranged:
		return &Object{ReadCloser: resp.Body, Header: resp.Header}, nil
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
		resp.Body.Close()
		return nil, fmt.Errorf("get %s: the server answered %s to a request for bytes from %d", key, resp.Status, off)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	er := ResponseError(resp, body, bucket)
	er.Key = key
	if len(body) == 0 { // a HEAD-like answer without a body
		switch resp.StatusCode {
		case http.StatusNotFound:
			er.Code = "NoSuchKey"
		case http.StatusPreconditionFailed:
			er.Code = "PreconditionFailed"
		}
	}
	return nil, er
}
