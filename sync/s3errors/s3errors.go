// Package s3errors classifies the errors of S3 requests (minio-go's, and
// those of the requests built by hand in s3list, s3get and notify, which
// answer with minio.ErrorResponse too) into engine-level kinds, in one
// place: callers test a kind with errors.Is and never look at a server's
// error codes themselves.
package s3errors

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"

	"github.com/minio/minio-go/v7"
)

// The kinds. An error carries at most one.
var (
	NotFound     = errors.New("no such object")
	NoSuchBucket = errors.New("no such bucket")
	AccessDenied = errors.New("access denied")
	// Precondition: the object is no longer the version asked for
	// (If-Match failed).
	Precondition = errors.New("precondition failed")
	// SlowDown: the server asks for fewer requests (throttled).
	SlowDown = errors.New("slow down")
	// Timeout: no progress within the deadline (a dead or overloaded link
	// or server), or the caller's deadline.
	Timeout = errors.New("timeout")
	// Transient: worth sending again (a server error, a broken connection).
	Transient = errors.New("transient")
)

// kindError keeps the original error (errors.As finds the
// minio.ErrorResponse, errors.Is the network error) beside its kind.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Unwrap() error        { return e.err }
func (e *kindError) Is(target error) bool { return target == e.kind }

// Classify returns err with its kind attached (errors.Is(err, NoSuchBucket)
// ...), or err itself when it has none that callers act on (a malformed
// answer, a refused request of another kind) or is nil. A context canceled by
// the caller is no kind.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	if k := Kind(err); k != nil && !errors.Is(err, k) {
		return &kindError{kind: k, err: err}
	}
	return err
}

// Kind is the kind of err, nil for none.
func Kind(err error) error {
	for _, k := range []error{NotFound, NoSuchBucket, AccessDenied, Precondition, SlowDown, Timeout, Transient} {
		if errors.Is(err, k) {
			return k
		}
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchKey":
			return NotFound
		case "NoSuchBucket":
			return NoSuchBucket
		case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken":
			return AccessDenied
		case "PreconditionFailed":
			return Precondition
		case "SlowDown", "SlowDownRead", "SlowDownWrite", "TooManyRequests", "RequestLimitExceeded":
			return SlowDown
		case "RequestTimeout":
			return Timeout
		}
		switch {
		case er.StatusCode == http.StatusNotFound && er.Code == "":
			return NotFound // a HEAD's 404 has no body
		case er.StatusCode == http.StatusForbidden:
			return AccessDenied
		case er.StatusCode == http.StatusPreconditionFailed:
			return Precondition
		case er.StatusCode == http.StatusTooManyRequests || er.StatusCode == http.StatusServiceUnavailable:
			return SlowDown
		case er.StatusCode >= 500:
			return Transient
		}
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	var op *net.OpError
	if errors.As(err, &op) || errors.Is(err, net.ErrClosed) {
		return Transient
	}
	return nil
}
