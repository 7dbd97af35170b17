package datasync

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

// limitDirection is the limiter's direction of a mapping's transfers.
func limitDirection(d Direction) bwlimit.Direction {
	if d == Ingress {
		return bwlimit.Down
	}
	return bwlimit.Up
}

// throttled reports whether mp has a transfer in flight while the engine's
// bandwidth limit holds its direction back (a transfer waited for the
// limiter within the last second). The limit is engine-wide: every transfer
// in that direction shares it.
func (e *Engine) throttled(mp *mapping, d Direction) bool {
	return e.opts.Limiter != nil && mp.transfers.Load() > 0 && e.opts.Limiter.Throttling(limitDirection(d))
}

// countTransfers wraps be so that mp.transfers counts the uploads and
// downloads of mp in flight (a download until its body is closed).
func countTransfers(be Backend, n *atomic.Int32) Backend {
	return countingBackend{be, n}
}

type countingBackend struct {
	Backend
	n *atomic.Int32
}

func (b countingBackend) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (string, error) {
	b.n.Add(1)
	defer b.n.Add(-1)
	return b.Backend.Put(ctx, bucket, key, r, size, o)
}

func (b countingBackend) Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, error) {
	return b.GetRange(ctx, bucket, key, matchETag, 0, -1)
}

func (b countingBackend) GetRange(ctx context.Context, bucket, key, matchETag string, off, length int64) (io.ReadCloser, error) {
	b.n.Add(1)
	body, err := b.Backend.GetRange(ctx, bucket, key, matchETag, off, length)
	if err != nil {
		b.n.Add(-1)
		return nil, err
	}
	return &countedBody{ReadCloser: body, n: b.n}, nil
}

// countedBody ends its download's count when closed, once.
type countedBody struct {
	io.ReadCloser
	n    *atomic.Int32
	once sync.Once
}

func (c *countedBody) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.ReadCloser.Close()
}

// UserMeta passes the wrapped body's user metadata through (mtime.go), so
// counting does not hide the object's recorded mtime.
func (c *countedBody) UserMeta() map[string]string {
	if mb, ok := c.ReadCloser.(metaBody); ok {
		return mb.UserMeta()
	}
	return nil
}
