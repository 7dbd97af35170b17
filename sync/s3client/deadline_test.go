package s3client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// bufferingServer plays a split-TCP proxy in front of a slow link: it reads
// each request's body at once (acknowledging it), then answers only after
// delay, as the server would once the body had trickled through.
func bufferingServer(t *testing.T, delay time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if req.Method == http.MethodGet {
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
						continue
					}
					time.Sleep(delay)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nETag: \"0123456789abcdef0123456789abcdef\"\r\nContent-Length: 0\r\n\r\n")
				}
			}()
		}
	}()
	return l.Addr().String()
}

func put(t *testing.T, to Timeouts, addr string, size int, ctx context.Context) (time.Duration, error) {
	t.Helper()
	tr, err := newTransport(false, nil, 1, to, nil)
	if err != nil {
		t.Fatal(err)
	}
	return putWith(&http.Client{Transport: tracked{next: tr}}, addr, size, ctx)
}

func putWith(hc *http.Client, addr string, size int, ctx context.Context) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/bucket/key", bytes.NewReader(make([]byte, size)))
	start := time.Now()
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return time.Since(start), err
}

// TestBufferedBodyAnswerIsAwaitedAtTheFloorRate: the body is acknowledged at
// once and the answer comes later than the silent-server limit but sooner
// than the body needs at the floor rate: the request is not cut.
func TestBufferedBodyAnswerIsAwaitedAtTheFloorRate(t *testing.T) {
	// 300 ms silent limit; 200 KiB at 100 KiB/s: the answer is awaited 2.3 s.
	to := Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: 300 * time.Millisecond, FloorRate: 100 << 10}
	addr := bufferingServer(t, 1200*time.Millisecond)
	took, err := put(t, to, addr, 200<<10, context.Background())
	if err != nil {
		t.Fatalf("answer after 1.2s for a body worth 2s at the floor rate: cut after %s: %v", took, err)
	}
	if took < 1200*time.Millisecond {
		t.Errorf("took %s: the test did not outlast the silent-server limit", took)
	}
}

// TestBufferedBodyWithoutAnswerIsCut: the same server, answering too late:
// given up at the silent-server limit plus the body at the floor rate, with
// a typed error.
func TestBufferedBodyWithoutAnswerIsCut(t *testing.T) {
	to := Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: 300 * time.Millisecond, FloorRate: 200 << 10}
	addr := bufferingServer(t, time.Minute)
	// 100 KiB at 200 KiB/s: 0.5 s, plus 0.3 s.
	took, err := put(t, to, addr, 100<<10, context.Background())
	var te *TimeoutError
	if err == nil || !errors.Is(err, ErrServerSilent) || !errors.As(err, &te) {
		t.Fatalf("after %s: %v, want a *TimeoutError", took, err)
	}
	if te.Awaiting < 100<<10 || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("error %q: awaiting %d bytes", err, te.Awaiting)
	}
	if took < 700*time.Millisecond || took > 3*time.Second {
		t.Errorf("given up after %s, want about 0.8s", took)
	}
	// Patience 3 waits three times as long.
	took, err = put(t, to, addr, 100<<10, WithPatience(context.Background(), 3))
	if !errors.Is(err, ErrServerSilent) || took < 2*time.Second {
		t.Errorf("with patience 3: %v after %s, want about 2.4s", err, took)
	}
}

// TestSilentServerAfterSmallPutIsStillQuick: the floor rate adds next to
// nothing for a small request.
func TestSilentServerAfterSmallPutIsStillQuick(t *testing.T) {
	addr, _ := silentServer(t)
	c := clientFor(t, addr, quick)
	start := time.Now()
	_, err := c.PutObject(context.Background(), "bucket", "key", strings.NewReader("hello"), 5, minio.PutObjectOptions{})
	if !errors.Is(err, ErrServerSilent) {
		t.Fatalf("put to a silent server: %v", err)
	}
	if took := time.Since(start); took > quick.WorstCase(MaxRetries) {
		t.Errorf("took %s, want at most %s", took, quick.WorstCase(MaxRetries))
	}
}

// lateEOF hands a response body's end (EOF) on only after a pause, when
// the connection is back in the pool already: what a busy scheduler does
// between http.Transport seeing the end of a body and its reader.
type lateEOF struct{ next http.RoundTripper }

func (l lateEOF) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil {
		resp.Body = lateEOFBody{resp.Body}
	}
	return resp, err
}

type lateEOFBody struct{ io.ReadCloser }

func (b lateEOFBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		time.Sleep(150 * time.Millisecond)
	}
	return n, err
}

// TestAnswerAwaitedWhileTheRequestBeforeEnds: the end of a response body
// reaches the reader only after the connection went back to the pool and
// the next request was sent on it: the end of the first request must not
// end the next one's wait for its answer.
func TestAnswerAwaitedWhileTheRequestBeforeEnds(t *testing.T) {
	to := Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: 300 * time.Millisecond, FloorRate: 100 << 10}
	addr := bufferingServer(t, 1200*time.Millisecond)
	tr, err := newTransport(false, nil, 1, to, nil)
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	inner := tr.DialContext
	tr.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) { dials.Add(1); return inner(ctx, n, a) }
	hc := &http.Client{Transport: tracked{next: lateEOF{tr}}}
	resp, err := hc.Get("http://" + addr + "/bucket?list-type=2")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(resp.Body); resp.Body.Close(); got <- string(b) }()
	time.Sleep(50 * time.Millisecond) // the body is read, its EOF held back
	took, err := putWith(hc, addr, 200<<10, context.Background())
	if err != nil {
		t.Fatalf("put while the listing before it ends: cut after %s: %v", took, err)
	}
	if b := <-got; b != "x" {
		t.Errorf("listing %q", b)
	}
	if dials.Load() != 1 {
		t.Errorf("%d connections: the test wants the PUT on the listing's connection", dials.Load())
	}
}
