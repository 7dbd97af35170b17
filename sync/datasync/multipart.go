package datasync

import (
	"cmp"
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 part ETags are
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// A big file goes up as a multipart upload the engine drives itself
// (minio-go's PutObject aborts the upload when a part fails, so every
// retry started from zero). A failed upload is left on the server; the next
// attempt lists the key's unfinished uploads, keeps the parts whose size and
// MD5 match the file at their offsets, sends the others and completes.

// minPartSize is the smallest part S3 accepts (but the last).
const minPartSize = 5 << 20

// putMultipart uploads size bytes of ra to key in parts of o.PartSize,
// resuming an unfinished upload of the same content, and returns the ETag.
func (b minioBackend) putMultipart(ctx context.Context, bucket, key string, ra io.ReaderAt, size int64, o PutOptions) (string, error) {
	core := minio.Core{Client: b.c}
	uploadID, partSize, parts, err := resumable(ctx, core, bucket, key, ra, size)
	if err != nil {
		return "", err
	}
	if uploadID == "" {
		partSize = o.PartSize
		uploadID, err = core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{UserMetadata: o.Meta, ContentType: "application/octet-stream"})
		if err != nil {
			return "", err
		}
		parts = make([]minio.CompletePart, (size+partSize-1)/partSize)
	}
	// A part that fails stops new parts from starting; those in flight
	// finish, so that the next attempt finds them stored.
	sem := make(chan struct{}, max(o.Threads, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for i := range parts {
		if parts[i].ETag != "" {
			continue
		}
		acquired := false
		select {
		case sem <- struct{}{}:
			acquired = true
		case <-ctx.Done():
		}
		mu.Lock()
		stop := failed != nil
		mu.Unlock()
		if !acquired || stop {
			if acquired {
				<-sem
			}
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			etag, err := putPart(ctx, core, bucket, key, uploadID, i+1, ra, int64(i)*partSize, min(partSize, size-int64(i)*partSize), o.OnStall)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = cmp.Or(failed, err)
				return
			}
			parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: etag}
		})
	}
	wg.Wait()
	if failed == nil {
		failed = ctx.Err()
	}
	if failed != nil {
		// Left for the next attempt to resume; a file that changed makes
		// it useless.
		if errors.Is(failed, errPartChanged) {
			_ = core.AbortMultipartUpload(context.WithoutCancel(ctx), bucket, key, uploadID)
		}
		return "", failed
	}
	info, err := core.CompleteMultipartUpload(ctx, bucket, key, uploadID, parts, minio.PutObjectOptions{})
	if err != nil {
		return "", err
	}
	return info.ETag, nil
}

var errPartChanged = errors.New("the file changed during the upload")

// putPart sends one part with its Content-MD5 (the server refuses a body
// that does not match), tried as retried says.
func putPart(ctx context.Context, core minio.Core, bucket, key, uploadID string, n int, ra io.ReaderAt, off, length int64, onStall func()) (string, error) {
	sum, err := md5Of(ra, off, length)
	if err != nil {
		return "", fmt.Errorf("part %d: %w: %w", n, errPartChanged, err)
	}
	md5b64 := base64.StdEncoding.EncodeToString(sum)
	var etag string
	err = retried(ctx, onStall, func(ctx context.Context) error {
		p, err := core.PutObjectPart(ctx, bucket, key, uploadID, n, io.NewSectionReader(ra, off, length), length,
			minio.PutObjectPartOptions{Md5Base64: md5b64, DisableContentSha256: true})
		if err != nil {
			return err
		}
		if got := strings.Trim(p.ETag, `"`); isMD5(got) && !strings.EqualFold(got, hex.EncodeToString(sum)) {
			return fmt.Errorf("server holds MD5 %s, local is %x: corrupted in transit", got, sum)
		}
		etag = p.ETag
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("part %d: %w", n, err)
	}
	return etag, nil
}

// putTries is how many times one upload request (a PUT, a part) is sent.
const putTries = 3

// smallAwaiting is the most request bytes a timeout may have waited for and
// still say the server is silent rather than the link slow: a few packets.
const smallAwaiting = 64 << 10

// retried runs send up to putTries times. The upload client does not retry
// by itself: a request that timed out on a slow link is not sent again the
// same way. After a timeout of a request that had a body to trickle
// through, it is sent once more with twice the patience (a longer wait for
// its answer, s3client.WithPatience) and onStall is told, so that fewer
// transfers run at once; a timeout of a small request means a silent server
// and ends at once (the pass stops; a later one tries again). After a reset
// or a server error it is sent again as it was. A file that changed, a
// refusal, or the end of ctx stops at once.
func retried(ctx context.Context, onStall func(), send func(ctx context.Context) error) error {
	patience := s3client.Patience(ctx)
	stalled := false
	for try := 1; ; try++ {
		err := send(s3client.WithPatience(ctx, patience))
		if err == nil || try == putTries || ctx.Err() != nil || !transient(err) {
			return err
		}
		var te *s3client.TimeoutError
		if errors.As(err, &te) {
			if stalled || te.Awaiting < smallAwaiting {
				return err
			}
			stalled = true
			patience *= 2
			if onStall != nil {
				onStall()
			}
		}
	}
}

// transient says an upload request may succeed when sent again: the
// connection failed (reset, timeout) or the server had an internal error.
func transient(err error) bool {
	if errors.Is(err, stablefile.ErrChanged) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.StatusCode >= 500 && er.StatusCode != 501
	}
	var ue *url.Error
	var oe *net.OpError
	return errors.Is(err, s3client.ErrServerSilent) || errors.As(err, &ue) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF)
}

func md5Of(ra io.ReaderAt, off, length int64) ([]byte, error) {
	h := md5.New() //nolint:gosec
	if _, err := copyBuffered(h, io.NewSectionReader(ra, off, length)); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// resumable finds an unfinished upload of key whose stored parts hold the
// file's bytes: its id, part size and parts (those to send again have no
// ETag). Other unfinished uploads of key are aborted. "" when there is none
// to resume; a server that cannot list them has none.
func resumable(ctx context.Context, core minio.Core, bucket, key string, ra io.ReaderAt, size int64) (string, int64, []minio.CompletePart, error) {
	res, err := core.ListMultipartUploads(ctx, bucket, key, "", "", "", 1000)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, nil, ctx.Err()
		}
		return "", 0, nil, nil
	}
	ups := slices.DeleteFunc(res.Uploads, func(u minio.ObjectMultipartInfo) bool { return u.Key != key })
	slices.SortFunc(ups, func(a, b minio.ObjectMultipartInfo) int { return b.Initiated.Compare(a.Initiated) })
	var id string
	var partSize int64
	var parts []minio.CompletePart
	for _, u := range ups {
		if id == "" {
			ps, ok, err := matchingParts(ctx, core, bucket, key, u.UploadID, ra, size)
			if err != nil {
				return "", 0, nil, err
			}
			if ps > 0 && slices.ContainsFunc(ok, func(p minio.CompletePart) bool { return p.ETag != "" }) {
				id, partSize, parts = u.UploadID, ps, ok
				continue
			}
		}
		_ = core.AbortMultipartUpload(ctx, bucket, key, u.UploadID) // stale: another version, or nothing kept
	}
	return id, partSize, parts, nil
}

// matchingParts lists the parts of an upload and keeps those that hold the
// file's bytes at their offsets; the part size is the first part's. It
// returns 0 when the parts do not fit the file (another size, parts of
// unequal sizes).
func matchingParts(ctx context.Context, core minio.Core, bucket, key, id string, ra io.ReaderAt, size int64) (int64, []minio.CompletePart, error) {
	var stored []minio.ObjectPart
	marker := 0
	for {
		r, err := core.ListObjectParts(ctx, bucket, key, id, marker, 1000)
		if err != nil {
			return 0, nil, ctx.Err() // not resumable, unless the pass is over
		}
		stored = append(stored, r.ObjectParts...)
		if !r.IsTruncated || r.NextPartNumberMarker <= marker {
			break
		}
		marker = r.NextPartNumberMarker
	}
	if len(stored) == 0 {
		return 0, nil, nil
	}
	slices.SortFunc(stored, func(a, b minio.ObjectPart) int { return a.PartNumber - b.PartNumber })
	ps := stored[0].Size
	if stored[0].PartNumber != 1 {
		ps = max(stored[0].Size, minPartSize)
		for _, p := range stored {
			ps = max(ps, p.Size)
		}
	}
	if ps < minPartSize && ps < size {
		return 0, nil, nil
	}
	parts := make([]minio.CompletePart, (size+ps-1)/ps)
	for _, p := range stored {
		off := int64(p.PartNumber-1) * ps
		if p.PartNumber < 1 || p.PartNumber > len(parts) || p.Size != min(ps, size-off) {
			return 0, nil, nil
		}
		sum, err := md5Of(ra, off, p.Size)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %w", errPartChanged, err)
		}
		if strings.EqualFold(strings.Trim(p.ETag, `"`), hex.EncodeToString(sum)) {
			parts[p.PartNumber-1] = minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag}
		}
	}
	return ps, parts, nil
}
