package s3errors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKinds(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind error
	}{
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey"}, NotFound},
		{minio.ErrorResponse{StatusCode: 404}, NotFound},
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"}, NoSuchBucket},
		{minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}, AccessDenied},
		{minio.ErrorResponse{StatusCode: 403, Code: "SignatureDoesNotMatch"}, AccessDenied},
		{minio.ErrorResponse{StatusCode: 403, Code: "InvalidAccessKeyId"}, AccessDenied},
		{minio.ErrorResponse{StatusCode: 403}, AccessDenied},
		{minio.ErrorResponse{StatusCode: 412, Code: "PreconditionFailed"}, Precondition},
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, SlowDown},
		{minio.ErrorResponse{StatusCode: 429}, SlowDown},
		{minio.ErrorResponse{StatusCode: 400, Code: "RequestTimeout"}, Timeout},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, Transient},
		{minio.ErrorResponse{StatusCode: 400, Code: "InvalidArgument"}, nil},
		{fmt.Errorf("get k: %w", context.DeadlineExceeded), Timeout},
		{fmt.Errorf("get k: %w", context.Canceled), nil},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, Transient},
		{errors.New("malformed answer"), nil},
	} {
		assert.Equal(t, c.kind, Kind(c.err), "%#v", c.err)
		got := Classify(c.err)
		if c.kind != nil {
			assert.ErrorIs(t, got, c.kind, "%v", c.err)
			assert.Equal(t, c.err.Error(), got.Error(), "the message is the original's")
			assert.ErrorIs(t, got, c.err, "the original stays in the chain")
		} else {
			assert.Equal(t, c.err, got)
		}
	}
	assert.NoError(t, Classify(nil))
	var er minio.ErrorResponse
	require.ErrorAs(t, Classify(fmt.Errorf("list: %w", minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"})), &er)
	assert.Equal(t, "NoSuchBucket", er.Code)
}

// A server that accepts and never answers: the client's deadline is a
// Timeout, like the progress deadlines of sync/s3client (os.ErrDeadlineExceeded).
func TestSilentServerIsATimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	client := &http.Client{Timeout: 200 * time.Millisecond}
	_, err = client.Get("http://" + l.Addr().String() + "/b/k")
	require.Error(t, err)
	assert.ErrorIs(t, Classify(err), Timeout, "%v", err)

	conn, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = conn.Read(make([]byte, 1))
	assert.ErrorIs(t, Classify(fmt.Errorf("s3 connection: no progress: %w", err)), Timeout)
}
