package stablefile

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeOld(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	// Let the coarse file-system clock move on, so a rewrite gets a new mtime.
	time.Sleep(30 * time.Millisecond)
	return p
}

func TestUnchangedFileReadsWhole(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefgh"), 10000)
	r, err := Open(writeOld(t, data), 0)
	require.NoError(t, err)
	defer r.Close()
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, data, got)
}

func TestChangeHoldsBackFinalBytes(t *testing.T) {
	for name, change := range map[string]func(string) error{
		"append": func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("more")
			return errors.Join(err, f.Close())
		},
		"same size rewrite": func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteAt([]byte("XXXX"), 0)
			return errors.Join(err, f.Close())
		},
		"replaced": func(p string) error {
			tmp := p + ".new"
			if err := os.WriteFile(tmp, bytes.Repeat([]byte("z"), 8000), 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, p)
		},
		"truncated": func(p string) error { return os.Truncate(p, 10) },
	} {
		t.Run(name, func(t *testing.T) {
			p := writeOld(t, bytes.Repeat([]byte("a"), 8000))
			r, err := Open(p, 0)
			require.NoError(t, err)
			defer r.Close()
			buf := make([]byte, 4000)
			n, err := r.Read(buf)
			require.NoError(t, err)
			require.Equal(t, 4000, n)
			require.NoError(t, change(p))
			n, err = r.Read(buf)
			assert.ErrorIs(t, err, ErrChanged)
			assert.Zero(t, n, "final bytes must not be handed out")
		})
	}
}

func TestPartCheckpoints(t *testing.T) {
	p := writeOld(t, bytes.Repeat([]byte("a"), 300))
	r, err := Open(p, 100)
	require.NoError(t, err)
	defer r.Close()
	buf := make([]byte, 60)
	_, err = r.ReadAt(buf, 0) // 0..60: no checkpoint
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("b"), 300), 0o644))
	_, err = r.ReadAt(buf[:40], 60) // ends part 1 at 100
	assert.ErrorIs(t, err, ErrChanged)
}

// TestHTTPRequestFailsBeforeCommit shows the point of it all: a server reading
// the body with Content-Length never receives a complete body from a file that
// changed during the upload.
func TestHTTPRequestFailsBeforeCommit(t *testing.T) {
	var complete atomic.Int32
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		received.Store(n)
		if err == nil && n == r.ContentLength {
			complete.Add(1)
		}
	}))
	defer srv.Close()

	const size = 1 << 20
	p := writeOld(t, bytes.Repeat([]byte("a"), size))
	r, err := Open(p, 0)
	require.NoError(t, err)
	defer r.Close()
	body := &changeAfterFirstRead{r: r, change: func() { require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("b"), size), 0o644)) }}
	req, err := http.NewRequest(http.MethodPut, srv.URL, body)
	require.NoError(t, err)
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, ErrChanged)
	time.Sleep(50 * time.Millisecond) // let the handler finish reading
	assert.Zero(t, complete.Load(), "server received a complete body (%d bytes)", received.Load())

	// The same file, unchanged, goes through.
	r2, err := Open(p, 0)
	require.NoError(t, err)
	defer r2.Close()
	req, err = http.NewRequest(http.MethodPut, srv.URL, r2)
	require.NoError(t, err)
	req.ContentLength = size
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, int32(1), complete.Load())
}

type changeAfterFirstRead struct {
	r      *Reader
	change func()
	done   bool
}

func (c *changeAfterFirstRead) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !c.done {
		c.done = true
		c.change()
	}
	return n, err
}

func TestPrefixReaderToleratesGrowthNotShrinking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(path, []byte("line 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.AsPrefix()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("line 2\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "line 1\n" {
		t.Fatalf("prefix of a growing file: %q, %v", got, err)
	}
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrChanged) {
		t.Fatalf("a file that shrank below the prefix: %v", err)
	}
}
