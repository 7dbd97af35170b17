package s3client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

// quick are timeouts scaled down so that the tests take a second or two.
var quick = Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: 300 * time.Millisecond}

func TestDefaultsGiveUpOnASilentServerWithin30s(t *testing.T) {
	worst := DefaultTimeouts.WorstCase(MaxRetries)
	if worst > 30*time.Second {
		t.Fatalf("a small request against a silent server may take %s with the defaults, want at most 30s", worst)
	}
	// A server that accepts the connection: no dial or handshake wait.
	if silent := time.Duration(MaxRetries)*(DefaultTimeouts.Progress+smallRequestAllowance(DefaultTimeouts.FloorRate)) + (MaxRetries-1)*retryBackoffCap; silent > 30*time.Second {
		t.Fatalf("accept-and-never-answer: %s", silent)
	}
	tr, err := NewTransport(false, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tr.TLSHandshakeTimeout != DefaultTimeouts.TLSHandshake || tr.ResponseHeaderTimeout != 0 {
		t.Errorf("transport: TLS %s, response header %s", tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
	}
	if got := (Timeouts{}).withDefaults(); got != DefaultTimeouts {
		t.Errorf("zero Timeouts take %+v", got)
	}
}

// silentServer accepts connections, reads what it is sent and never answers.
func silentServer(t *testing.T) (addr string, accepted *atomic.Int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = &atomic.Int64{}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return l.Addr().String(), accepted
}

func clientFor(t *testing.T, addr string, to Timeouts) *minio.Client {
	host, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	c, err := New(Config{Host: host, Port: p, AccessKey: "a", SecretKey: "secretsecret", Region: "us-east-1", Timeouts: to})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSilentServerIsGivenUpOn(t *testing.T) {
	addr, accepted := silentServer(t)
	c := clientFor(t, addr, quick)
	start := time.Now()
	_, err := c.StatObject(context.Background(), "bucket", "key", minio.StatObjectOptions{})
	took := time.Since(start)
	if err == nil {
		t.Fatal("stat against a silent server succeeded")
	}
	limit := quick.WorstCase(MaxRetries)
	t.Logf("gave up after %s (%d connections): %v", took, accepted.Load(), err)
	if took > limit {
		t.Errorf("took %s, want at most %s", took, limit)
	}
	if took < quick.Progress {
		t.Errorf("gave up after %s, before the progress timeout", took)
	}
	// The same bound for a small upload (a request body, then silence).
	start = time.Now()
	_, err = c.PutObject(context.Background(), "bucket", "key", strings.NewReader("hello"), 5, minio.PutObjectOptions{})
	if err == nil || time.Since(start) > limit {
		t.Errorf("put: %v after %s", err, time.Since(start))
	}
}

// trickleServer answers every request with 200 and a body of n bytes sent
// one byte every gap.
func trickleServer(t *testing.T, n int, gap time.Duration) string {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.WriteHeader(http.StatusOK)
		for i := 0; i < n; i++ {
			if _, err := w.Write([]byte{'x'}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(gap)
		}
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestSlowButProgressingDownloadIsNotCut(t *testing.T) {
	// 20 bytes, one every 100 ms: 2 s in all, almost 7 progress timeouts.
	addr := trickleServer(t, 20, 100*time.Millisecond)
	c := clientFor(t, addr, quick)
	obj, err := c.GetObject(context.Background(), "bucket", "key", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	start := time.Now()
	data, err := io.ReadAll(obj)
	if err != nil || len(data) != 20 {
		t.Fatalf("slow download cut after %s: %d bytes, %v", time.Since(start), len(data), err)
	}
	if time.Since(start) < 1500*time.Millisecond {
		t.Errorf("the trickle took %s: the test did not outlast the timeout", time.Since(start))
	}
}

func TestStalledDownloadIsCut(t *testing.T) {
	// 5 bytes then silence: one byte every 10 s.
	addr := trickleServer(t, 5, 10*time.Second)
	c := clientFor(t, addr, quick)
	obj, err := c.GetObject(context.Background(), "bucket", "key", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	start := time.Now()
	_, err = io.ReadAll(obj)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("stalled download: %v after %s, want a timeout", err, time.Since(start))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stalled download cut after %s", took)
	}
}

// TestSlowUploadIsNotCut: a server that reads the request body slowly (one
// KiB every 10 ms, about 2 s in all) and then answers. The writes and the peer's
// acknowledgements are the progress.
func TestSlowUploadIsNotCut(t *testing.T) {
	// A small receive buffer on the server, so that the upload waits in
	// the client's send queue as on a slow link.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const size = 200 << 10
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 1<<10)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		buf := make([]byte, 1<<10)
		got := 0
		for got < size {
			n, err := req.Body.Read(buf)
			got += n
			if err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nETag: \"0123456789abcdef0123456789abcdef\"\r\nContent-Length: 0\r\n\r\n")
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	tr, err := newTransport(false, nil, 1, quick, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tracked{next: tr}}
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPut, "http://"+net.JoinHostPort(host, port)+"/bucket/key", bytes.NewReader(make([]byte, size)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("slow upload cut after %s: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if took := time.Since(start); took < time.Second {
		t.Errorf("upload took %s: the test did not outlast the timeout", took)
	}
}

func TestIdlePooledConnectionHasNoDeadline(t *testing.T) {
	addr := trickleServer(t, 1, 0)
	tr, err := newTransport(false, nil, 1, quick, nil)
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	inner := tr.DialContext
	tr.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) { dials.Add(1); return inner(ctx, n, a) }
	hc := &http.Client{Transport: tracked{next: tr}}
	get := func() {
		resp, err := hc.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	time.Sleep(3 * quick.Progress) // idle in the pool longer than the progress timeout
	get()
	if d := dials.Load(); d != 1 {
		t.Errorf("%d dials: the idle connection was closed by the progress deadline", d)
	}
}

func TestUnackedSeesThroughTheLimiter(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SIOCOUTQ is Linux only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	lim := bwlimit.New(bwlimit.Fixed(bwlimit.Limit{Up: 1 << 30, Down: 1 << 30}))
	dial := progressDial(lim.DialContext((&net.Dialer{}).DialContext), Timeouts{Progress: time.Second, FloorRate: 1 << 20})
	c, err := dial(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := unacked(c); n < 0 {
		t.Fatalf("unacked through progress and limiter wrappers: %d", n)
	}
}

// TestSilentTLSServerIsGivenUpOn: the progress wrapper sits beneath TLS and
// is found through tls.Conn.NetConn.
func TestSilentTLSServerIsGivenUpOn(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	c, err := New(Config{Host: host, Port: p, Secure: true, CAPEM: caPEM, AccessKey: "a", SecretKey: "secretsecret", Region: "us-east-1", Timeouts: quick})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.StatObject(context.Background(), "bucket", "key", minio.StatObjectOptions{})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "server not answering") || !errors.Is(err, ErrServerSilent) {
		t.Fatalf("stat over TLS against a silent server: %v after %s", err, took)
	}
	if took > quick.WorstCase(MaxRetries) {
		t.Errorf("took %s", took)
	}
}

// TestDefaultsAgainstASilentServer waits for real: with the default
// timeouts a small request to a server that accepts and never answers fails
// within 30 s (about 3 × 8 s). Skipped under -short: it sleeps most of that.
func TestDefaultsAgainstASilentServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 25 s")
	}
	t.Parallel()
	addr, accepted := silentServer(t)
	c := clientFor(t, addr, Timeouts{})
	start := time.Now()
	_, err := c.StatObject(context.Background(), "bucket", "key", minio.StatObjectOptions{})
	took := time.Since(start)
	t.Logf("default timeouts: gave up after %s, %d connections: %v", took, accepted.Load(), err)
	if err == nil || took > 30*time.Second {
		t.Fatalf("silent server: %v after %s, want an error within 30s", err, took)
	}
	var te *TimeoutError
	if !errors.Is(err, ErrServerSilent) || !errors.As(err, &te) {
		t.Errorf("silent server: %T %v is not a *TimeoutError matching ErrServerSilent", err, err)
	}
}
