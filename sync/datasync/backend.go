package datasync

import (
	"context"
	"fmt"
	"io"
	"iter"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3errors"
	"github.com/project-flotta/flotta-device-worker/sync/s3get"
	"github.com/project-flotta/flotta-device-worker/sync/s3list"
)

// Object is what the engine knows of one object in the bucket.
type Object struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
	// Meta is the object's user metadata; only Stat fills it. Keys may come
	// back canonicalised: compare them case-insensitively.
	Meta map[string]string
}

// PutOptions are the few upload options the engine uses.
type PutOptions struct {
	Meta     map[string]string // user metadata
	PartSize int64             // 0: one PUT carrying Content-MD5; else a multipart upload in parts of this size
	Threads  int               // parts uploaded in parallel
	// OnStall, when set, is told when a request of the upload timed out
	// on the link (s3client.ErrServerSilent) and is sent again.
	OnStall func()
}

// Backend is the bucket as the engine sees it. Implementations must be safe
// for concurrent use. Their errors carry a kind of sync/s3errors where one
// applies (errors.Is(err, s3errors.NoSuchBucket), ...), with the server's
// minio.ErrorResponse or the network error still in the chain (serverWide
// reads it).
type Backend interface {
	// List yields the objects under prefix in key order (byte order, as S3
	// lists them), streaming: never the whole listing in memory.
	List(ctx context.Context, bucket, prefix string) iter.Seq2[Object, error]
	// Stat returns an object with its user metadata; ErrNotFound when absent.
	Stat(ctx context.Context, bucket, key string) (Object, error)
	// Put uploads size bytes from r and returns the object's new ETag.
	Put(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (etag string, err error)
	// Get opens the object's body. With matchETag set it fails unless the
	// object still has that ETag (the version the plan decided on). A body
	// may implement metaBody (its user metadata, once read).
	Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, error)
	// GetRange is Get of length bytes from off (big downloads fetch ranges
	// in parallel).
	GetRange(ctx context.Context, bucket, key, matchETag string, off, length int64) (io.ReadCloser, error)
}

// ErrNotFound is returned by Backend.Stat and Backend.Get for a missing
// object: s3errors.NotFound.
var ErrNotFound = s3errors.NotFound

// minioBackend is Backend over minio-go, with listings by sync/s3list and
// downloads by sync/s3get (the same requests for a fraction of the CPU).
type minioBackend struct {
	c *minio.Client
	// put sends uploads: it does not retry by itself (see retried).
	put *minio.Client
	l   *s3list.Lister
	g   *s3get.Getter
}

func newMinioBackend(c, put *minio.Client, rt http.RoundTripper, ep *Endpoint) minioBackend {
	// The region the client was given, or the bucket's (asked once, cached).
	region := c.GetBucketLocation
	return minioBackend{c: c, put: put,
		l: &s3list.Lister{Endpoint: c.EndpointURL(), Transport: rt, AccessKey: ep.AccessKey, SecretKey: ep.SecretKey,
			Region: region},
		g: &s3get.Getter{Endpoint: c.EndpointURL(), Transport: rt, AccessKey: ep.AccessKey, SecretKey: ep.SecretKey,
			Region: region, Tries: s3client.MaxRetries},
	}
}

func (b minioBackend) List(ctx context.Context, bucket, prefix string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		for o, err := range b.l.List(ctx, bucket, prefix) {
			if !yield(Object{Key: o.Key, Size: o.Size, ETag: o.ETag, LastModified: o.LastModified}, s3errors.Classify(err)) || err != nil {
				return
			}
		}
	}
}

func notFound(err error) bool { return s3errors.Kind(err) == s3errors.NotFound }

func (b minioBackend) Stat(ctx context.Context, bucket, key string) (Object, error) {
	info, err := b.c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if notFound(err) {
			return Object{}, fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		return Object{}, s3errors.Classify(err)
	}
	return Object{Key: info.Key, Size: info.Size, ETag: info.ETag, LastModified: info.LastModified, Meta: info.UserMetadata}, nil
}

// Put uploads r. With a reader that can be read again (io.ReaderAt: the
// engine's files), requests are sent by the client that does not retry and
// tried as retried says, and a multipart upload resumes an unfinished one
// (multipart.go); otherwise minio-go uploads it, with its own retries.
func (b minioBackend) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	etag, err := b.upload(ctx, bucket, key, r, size, o)
	if err != nil {
		return "", s3errors.Classify(err)
	}
	if etag == "" {
		// Ceph RGW answers CompleteMultipartUpload with an empty <ETag>:
		// the object's own ETag is asked for, or every later pass would see
		// the object as changed.
		st, err := b.c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			return "", s3errors.Classify(fmt.Errorf("%s: ETag of the completed upload: %w", key, err))
		}
		return st.ETag, nil
	}
	return etag, nil
}

// upload sends the object: a multipart upload the engine drives, or one
// PUT retried as the link allows.
func (b minioBackend) upload(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	ra, rereadable := r.(io.ReaderAt)
	if rereadable && o.PartSize > 0 && b.put != nil {
		return minioBackend{c: b.put}.putMultipart(ctx, bucket, key, ra, size, o)
	}
	opts := minio.PutObjectOptions{
		UserMetadata: o.Meta,
		ContentType:  "application/octet-stream",
		// A single PUT carries Content-MD5: a server that would commit a
		// truncated body (versitygw does, when the reader holds back its last
		// bytes) rejects it instead. Multipart parts carry theirs too
		// (multipart.go). The payload is not signed (that would hash it
		// once more), and the client is built without TrailingHeaders
		// (versitygw rejects trailing checksums).
		SendContentMd5:       o.PartSize == 0,
		DisableContentSha256: true,
		NumThreads:           uint(max(o.Threads, 1)),
		PartSize:             uint64(o.PartSize),
	}
	if !rereadable || b.put == nil {
		info, err := b.c.PutObject(ctx, bucket, key, r, size, opts)
		if err != nil {
			return "", err
		}
		return info.ETag, nil
	}
	var etag string
	err := retried(ctx, o.OnStall, func(ctx context.Context) error {
		info, err := b.put.PutObject(ctx, bucket, key, io.NewSectionReader(ra, 0, size), size, opts)
		etag = info.ETag
		return err
	})
	return etag, err
}

func (b minioBackend) Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, error) {
	return b.GetRange(ctx, bucket, key, matchETag, 0, -1)
}

func (b minioBackend) GetRange(ctx context.Context, bucket, key, matchETag string, off, length int64) (io.ReadCloser, error) {
	body, err := b.g.GetRange(ctx, bucket, key, matchETag, off, length)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		return nil, s3errors.Classify(err)
	}
	return body, nil // its UserMeta makes it a metaBody
}
