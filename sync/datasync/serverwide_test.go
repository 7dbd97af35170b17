package datasync

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
)

// A local file error must not end the pass as if the server were down: a
// single object whose name the file system refuses (ENAMETOOLONG) used to
// cancel every ingress pass at the same point, so later objects never came.
func TestServerWideIsNotALocalFileError(t *testing.T) {
	local := fmt.Errorf("download p/x: %w", &fs.PathError{Op: "statat", Path: "x", Err: syscall.ENAMETOOLONG})
	if serverWide(local) {
		t.Errorf("a local *fs.PathError counts as server-wide: %v", local)
	}
	refused := &url.Error{Op: "Put", URL: "http://127.0.0.1:1/b/k", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	if !serverWide(fmt.Errorf("upload k: %w", refused)) {
		t.Errorf("connection refused is not server-wide")
	}
	if !serverWide(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("reset")}) {
		t.Errorf("a net.Error is not server-wide")
	}
}

// serverWide decides by the error kinds of s3wire, whatever the server's
// code: the whole pass stops for the bucket, the credentials, throttling and
// a server that fails; one object's refusal stops only that object.
func TestServerWideFollowsTheErrorKinds(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"}, true},
		{minio.ErrorResponse{StatusCode: 400, Code: "InvalidBucketName"}, true},
		{minio.ErrorResponse{StatusCode: 403, Code: "SignatureDoesNotMatch"}, true},
		{minio.ErrorResponse{StatusCode: 400, Code: "AuthorizationHeaderMalformed"}, true},
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, true},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, true},
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey"}, false},
		{minio.ErrorResponse{StatusCode: 412, Code: "PreconditionFailed"}, false},
		{minio.ErrorResponse{StatusCode: 400, Code: "EntityTooSmall"}, false},
		{minio.ErrorResponse{StatusCode: 400, Code: "KeyTooLongError"}, false},
		{fmt.Errorf("list: %w", os.ErrDeadlineExceeded), true},
	} {
		if got := serverWide(fmt.Errorf("upload k: %w", s3wire.Classify(c.err))); got != c.want {
			t.Errorf("serverWide(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
