package datasync

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
)

// Part is one part of an object assembled by partAssembler.PutParts: Size
// bytes read from Body whose MD5 is MD5 (the server refuses other bytes), or,
// with CopyKey set, Size bytes from CopyOff of the object CopyKey, copied
// server-side (UploadPartCopy with x-amz-copy-source-range) and only while
// that object's ETag is still CopyETag (x-amz-copy-source-if-match).
type Part struct {
	Size int64
	MD5  [16]byte
	Body io.Reader

	CopyKey  string
	CopyETag string
	CopyOff  int64
}

// partAssembler is what a Backend offers when it can build an object part by
// part, copying parts of an existing object server-side. It is optional:
// without it, growing files are uploaded whole.
type partAssembler interface {
	// PutParts uploads an object made of parts (a multipart upload,
	// aborted on any error) and returns its ETag.
	PutParts(ctx context.Context, bucket, key string, parts []Part, meta map[string]string) (etag string, err error)
}

// assemblerOf returns the partAssembler behind be, if any.
func assemblerOf(be Backend) (partAssembler, bool) {
	if cb, ok := be.(countingBackend); ok {
		be = cb.Backend
	}
	pa, ok := be.(partAssembler)
	return pa, ok
}

// ErrPartCopyRefused says the server does not copy parts of objects: the
// engine remembers it per server and uploads whole objects there.
var ErrPartCopyRefused = errors.New("server refuses UploadPartCopy")

// errCopySourceMoved says the object whose parts were to be copied is no
// longer the version the journal knows (412 on x-amz-copy-source-if-match):
// the upload falls back to sending everything.
var errCopySourceMoved = errors.New("copy source changed")

// composedETag is the ETag S3 gives an object made of parts with these MD5s.
func composedETag(md5s [][16]byte) string {
	all := md5.New() //nolint:gosec
	for _, h := range md5s {
		all.Write(h[:])
	}
	return hex.EncodeToString(all.Sum(nil)) + "-" + strconv.Itoa(len(md5s))
}

func (b minioBackend) PutParts(ctx context.Context, bucket, key string, parts []Part, meta map[string]string) (string, error) {
	core := minio.Core{Client: b.c}
	id, err := core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{UserMetadata: meta, ContentType: "application/octet-stream"})
	if err != nil {
		return "", err
	}
	done := false
	defer func() {
		if !done {
			// Detached from ctx: a cancelled upload must not leave its parts
			// stored (and billed) on the server.
			_ = core.AbortMultipartUpload(context.WithoutCancel(ctx), bucket, key, id)
		}
	}()
	complete := make([]minio.CompletePart, len(parts))
	for i, pt := range parts {
		n := i + 1
		if pt.CopyKey != "" {
			cp, err := core.CopyObjectPart(ctx, bucket, pt.CopyKey, bucket, key, id, n, pt.CopyOff, pt.Size,
				map[string]string{"x-amz-copy-source-if-match": `"` + strings.Trim(pt.CopyETag, `"`) + `"`})
			if err != nil {
				return "", copyPartError(err)
			}
			complete[i] = minio.CompletePart{PartNumber: n, ETag: cp.ETag}
			continue
		}
		op, err := core.PutObjectPart(ctx, bucket, key, id, n, pt.Body, pt.Size, minio.PutObjectPartOptions{
			Md5Base64: base64.StdEncoding.EncodeToString(pt.MD5[:]), DisableContentSha256: true})
		if err != nil {
			return "", err
		}
		complete[i] = minio.CompletePart{PartNumber: n, ETag: op.ETag}
	}
	info, err := core.CompleteMultipartUpload(ctx, bucket, key, id, complete, minio.PutObjectOptions{})
	if err != nil {
		return "", err
	}
	done = true
	etag := strings.Trim(info.ETag, `"`)
	if etag == "" {
		// Ceph RGW may answer CompleteMultipartUpload without an ETag.
		st, err := b.Stat(ctx, bucket, key)
		if err != nil {
			return "", fmt.Errorf("ETag of %s after its upload: %w", key, err)
		}
		etag = st.ETag
	}
	return etag, nil
}

// copyPartError sorts the error of an UploadPartCopy: the source moved, the
// server does not do it, or anything else (passed on for serverWide).
func copyPartError(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err
	}
	switch {
	case er.StatusCode == http.StatusPreconditionFailed || er.Code == "PreconditionFailed":
		return fmt.Errorf("%w: %w", errCopySourceMoved, err)
	case er.StatusCode == http.StatusNotImplemented || er.Code == "NotImplemented" ||
		er.StatusCode == http.StatusMethodNotAllowed || er.Code == "InvalidRequest":
		return fmt.Errorf("%w: %w", ErrPartCopyRefused, err)
	}
	return err
}
