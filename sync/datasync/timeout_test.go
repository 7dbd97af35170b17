package datasync

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// silentListener accepts connections, reads what it is sent and never
// answers; it counts the connections.
func silentListener(t *testing.T) (host string, port int, accepted *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	accepted = &atomic.Int64{}
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
	a := l.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port, accepted
}

// TestPassAgainstASilentServer: with the engine's default timeouts, a pass
// against a server that accepts and never answers fails within 30 s, each
// request tried s3client.MaxRetries times (minio-go's backoff between), and
// says why. Skipped under -short: it waits for real (about 25 s).
func TestPassAgainstASilentServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 25 s for the default timeouts")
	}
	for _, tc := range []struct {
		region   string
		attempts int64
	}{
		{"us-east-1", s3client.MaxRetries}, // the LIST, retried
		{"ignore", 1},                      // region discovery first: one attempt, then the pass gives up
	} {
		t.Run(tc.region, func(t *testing.T) {
			t.Parallel()
			host, port, accepted := silentListener(t)
			root := t.TempDir()
			eng, err := New(Options{StateDir: t.TempDir()}, zaptest.NewLogger(t))
			require.NoError(t, err)
			defer eng.Close()
			require.NoError(t, eng.Configure(&Endpoint{Host: host, Port: port, Region: tc.region, AccessKey: "a", SecretKey: "secretsecret"},
				[]Mapping{{ID: "i", Direction: Ingress, Root: root, LocalDir: root, Bucket: "bkt", Prefix: "p"}}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			err = eng.SyncNow(ctx)
			took := time.Since(start)
			t.Logf("region %s: failed after %s, %d connections: %v", tc.region, took, accepted.Load(), err)
			require.Error(t, err)
			assert.Less(t, took, 30*time.Second)
			assert.Contains(t, err.Error(), "server not answering")
			assert.ErrorIs(t, err, s3client.ErrServerSilent, "the engine's error keeps the transport's timeout")
			assert.Equal(t, tc.attempts, accepted.Load())
			assert.Contains(t, eng.Status()[0].LastError, "server not answering")
		})
	}
}

// trickleProxy stands between the engine and versitygw. GET bodies of
// objects go out chunk bytes at a time, one chunk every gap; stallAfter > 0
// makes them stop for good after that many bytes.
func trickleProxy(t *testing.T, target string, chunk int, gap time.Duration, stallAfter int) (host string, port int) {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	done := make(chan struct{})
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // signed by the client: kept
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodGet && resp.Request.URL.RawQuery == "" && resp.StatusCode == http.StatusOK {
				resp.Body = &trickle{r: resp.Body, chunk: chunk, gap: gap, stallAfter: stallAfter, done: done}
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // first: lets a stalled body end
	a := srv.Listener.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

type trickle struct {
	r                 io.ReadCloser
	chunk, stallAfter int
	gap               time.Duration
	sent              int
	done              chan struct{}
}

func (b *trickle) Read(p []byte) (int, error) {
	if b.stallAfter > 0 && b.sent >= b.stallAfter {
		<-b.done // the client gives up long before
		return 0, io.ErrUnexpectedEOF
	}
	time.Sleep(b.gap)
	n, err := b.r.Read(p[:min(len(p), b.chunk)])
	b.sent += n
	return n, err
}

func (b *trickle) Close() error { return b.r.Close() }

// TestDownloadDeadlinesAreOnProgress: with a progress timeout of 1 s, a
// download that keeps moving for several times that long completes, and one
// that stops half way fails within a few timeouts. (Gaps well under the
// timeout: a loaded machine oversleeps.)
func TestDownloadDeadlinesAreOnProgress(t *testing.T) {
	t.Parallel() // mostly waits: see waitingTests
	quick := s3client.Timeouts{Dial: time.Second, TLSHandshake: time.Second, Progress: time.Second}
	f := newFixture(t, func(o *Options) { o.Timeouts = quick })
	body := bytes.Repeat([]byte("z"), 60<<10)
	f.put("slow/a", body)
	f.put("stall/a", body)

	// 60 KiB, 2 KiB every 150 ms: about 4.5 s, 4.5 progress timeouts.
	host, port := trickleProxy(t, f.srv.URL(), 2<<10, 150*time.Millisecond, 0)
	f.ep = &Endpoint{Host: host, Port: port, Region: f.ep.Region, AccessKey: f.ep.AccessKey, SecretKey: f.ep.SecretKey}
	f.configure(f.ingress("slow", "slow", "slow"))
	start := time.Now()
	require.NoError(t, f.syncNow())
	took := time.Since(start)
	assert.Equal(t, body, f.read("slow/a"))
	assert.Greater(t, took, 3*time.Second, "the trickle did not outlast the timeout")

	// 8 KiB, then nothing.
	host, port = trickleProxy(t, f.srv.URL(), 2<<10, 10*time.Millisecond, 8<<10)
	f.ep = &Endpoint{Host: host, Port: port, Region: f.ep.Region, AccessKey: f.ep.AccessKey, SecretKey: f.ep.SecretKey}
	f.configure(f.ingress("stall", "stall", "stall"))
	start = time.Now()
	err := f.syncNow()
	took = time.Since(start)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no progress")
	assert.Less(t, took, 8*time.Second)
	assert.NoFileExists(t, f.root+"/stall/a")
	st := f.status("stall")
	assert.Equal(t, int64(1), st.Pending, "retried on a later pass")
	t.Logf("stalled download given up after %s: %s", took, strconv.Quote(st.LastError))
}
