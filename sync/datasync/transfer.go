package datasync

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
)

// executeReleasing runs do for every job from jobs, as many at a time
// engine-wide as the flow allows (Options.Concurrency, or the adaptive
// limit), and returns when jobs is closed and all are done. do may call
// release once its transfer is over, to hand its slot to the next job while
// it finishes locally (ingress: fsync and rename). Callers bound that
// finishing work themselves (Engine.commits). do returns the bytes it moved
// and its error, which the adaptive limit learns from.
func executeReleasing[T any](ctx context.Context, e *Engine, jobs <-chan T, do func(j T, release func()) (int64, error)) {
	var wg sync.WaitGroup
	for j := range jobs {
		tok := e.flow.acquire(ctx)
		if tok == nil {
			continue // drain: the planner stops on ctx too
		}
		wg.Go(func() {
			n, err := do(j, tok.free)
			tok.done(n, err)
		})
	}
	wg.Wait()
}

// bufPool holds copy buffers: one per transfer would otherwise be allocated
// (io.Copy's 32 KiB) for every small file.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyBuffered is io.Copy with a pooled buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
}

// onlyWriter and onlyReader hide ReadFrom and WriteTo, so that CopyBuffer
// really uses the pooled buffer instead of allocating its own.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// serverWide reports whether err means the server cannot be used at all right
// now (unreachable, credentials refused, bucket missing), so the rest of the
// pass is pointless.
func serverWide(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch s3wire.Kind(err) {
	case s3wire.NoSuchBucket, s3wire.AccessDenied, s3wire.SlowDown, s3wire.Transient, s3wire.Timeout:
		return true
	case s3wire.NotFound, s3wire.Precondition:
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return false // refused for this object alone (a bad key, a part too small ...)
	}
	// The server is not answering in a way Kind names (TLS, DNS, a proxy).
	// Not any error with a Timeout method (nor net.Error): a local
	// *fs.PathError has one too, and one file the device cannot write (a
	// name too long, a permission) must not stop the whole pass.
	var ue *url.Error
	var de *net.DNSError
	return errors.As(err, &ue) || errors.As(err, &de)
}
