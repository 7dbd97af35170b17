package datasync

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"syscall"
	"testing"
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
