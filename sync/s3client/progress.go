package s3client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync"
	"time"
)

// Timeouts bound each phase of a request. A zero field takes the value of
// DefaultTimeouts.
type Timeouts struct {
	// Dial bounds the TCP connect.
	Dial time.Duration
	// TLSHandshake bounds the TLS handshake.
	TLSHandshake time.Duration
	// Progress bounds how long a connection serving a request may go
	// without moving a byte: nothing read, nothing written, and (on Linux)
	// nothing of what was written acknowledged by the peer. It covers a
	// server that accepts and never answers, a response that stops half
	// way and an upload the server stops reading, while a transfer of any
	// size on a slow link that keeps moving is never cut. It also bounds
	// the wait for response headers (http.Transport's ResponseHeaderTimeout
	// is not used: it starts when the request is handed to the kernel and
	// would cut a large upload still draining a slow link's send buffer).
	Progress time.Duration
}

// DefaultTimeouts: a server that accepts and never answers is given up on
// after Progress per attempt, so a small request fails within
// MaxRetries × Progress plus minio-go's short backoffs (see WorstCase),
// under 30 s, and the engine retries it later.
var DefaultTimeouts = Timeouts{Dial: 5 * time.Second, TLSHandshake: 5 * time.Second, Progress: 8 * time.Second}

func (t Timeouts) withDefaults() Timeouts {
	if t.Dial <= 0 {
		t.Dial = DefaultTimeouts.Dial
	}
	if t.TLSHandshake <= 0 {
		t.TLSHandshake = DefaultTimeouts.TLSHandshake
	}
	if t.Progress <= 0 {
		t.Progress = DefaultTimeouts.Progress
	}
	return t
}

// retryBackoffCap is minio-go's DefaultRetryCap: the longest pause between
// two attempts of one request.
const retryBackoffCap = time.Second

// WorstCase is the longest a request to a server that answers nothing at
// all can take before minio-go returns an error: each attempt ends in the
// first phase that gets no answer (the dial, the TLS handshake, or the wait
// for a first byte of the response), then minio-go pauses before the next.
func (t Timeouts) WorstCase(attempts int) time.Duration {
	t = t.withDefaults()
	phase := max(t.Dial, t.TLSHandshake, t.Progress)
	return time.Duration(attempts)*phase + time.Duration(attempts-1)*retryBackoffCap
}

// progressConn enforces Timeouts.Progress on a connection while it serves a
// request (between GotConn and the end of the response body, told by
// tracked); an idle connection in the pool has no deadline.
type progressConn struct {
	net.Conn
	idle time.Duration

	mu    sync.Mutex
	busy  int       // requests in flight on the connection (0 or 1 for HTTP/1.1)
	last  time.Time // last progress
	setAt time.Time // when the deadline was last pushed by progressed
	qPrev int       // bytes written and not yet acknowledged at the last check; -1 unknown
	qAt   time.Time // when qPrev was seen
}

func newProgressConn(c net.Conn, idle time.Duration) *progressConn {
	return &progressConn{Conn: c, idle: idle, qPrev: -1}
}

// NetConn returns the wrapped connection.
func (c *progressConn) NetConn() net.Conn { return c.Conn }

func (c *progressConn) begin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy++
	c.last = time.Now()
	c.setAt = c.last
	c.qPrev = -1
	_ = c.Conn.SetDeadline(c.last.Add(c.idle))
}

func (c *progressConn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy > 0 {
		c.busy--
	}
	if c.busy == 0 {
		_ = c.Conn.SetDeadline(time.Time{})
	}
}

// progressed records that bytes moved and pushes the deadline; SetDeadline
// is called at most every idle/8.
func (c *progressConn) progressed() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = now
	if c.busy == 0 || now.Sub(c.setAt) < c.idle/8 {
		return
	}
	c.setAt = now
	_ = c.Conn.SetDeadline(now.Add(c.idle))
}

// stalled decides, when the deadline has fired, whether the connection is
// really stuck. Not when it is idle in the pool (no request); not when
// bytes moved since the deadline was set; and not while what was written is
// still draining to the peer (a slow link: the send queue is not empty and
// shrinks), in which case the queue is watched every idle/8 so that the
// server gets nearly the whole timeout to answer once it has the request.
// Otherwise it sets the deadline again from the last progress.
func (c *progressConn) stalled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.busy == 0 {
		_ = c.Conn.SetDeadline(time.Time{})
		return false
	}
	q := unacked(c.Conn)
	switch {
	case q > 0 && (c.qPrev < 0 || q < c.qPrev): // draining
		c.last = now
	case q == 0 && c.qPrev > 0 && c.qAt.After(c.last): // drained since the last look
		c.last = c.qAt
	}
	c.qPrev, c.qAt = q, now
	if now.Sub(c.last) >= c.idle {
		return true
	}
	next := c.last.Add(c.idle)
	if soon := now.Add(c.idle / 8); q > 0 && soon.Before(next) {
		next = soon
	}
	c.setAt = now
	_ = c.Conn.SetDeadline(next)
	return false
}

func (c *progressConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.progressed()
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.stalled() {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = &stallError{op: "read", idle: c.idle, err: err}
		}
		return n, err
	}
}

func (c *progressConn) Write(p []byte) (int, error) {
	done := 0
	for {
		n, err := c.Conn.Write(p[done:])
		done += n
		if n > 0 {
			c.progressed()
		}
		if err == nil {
			return done, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !c.stalled() {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = &stallError{op: "write", idle: c.idle, err: err}
		}
		return done, err
	}
}

// stallError says a connection moved nothing for the progress timeout. It
// is a net.Error with Timeout() true, so minio-go retries the request.
type stallError struct {
	op   string
	idle time.Duration
	err  error
}

func (e *stallError) Error() string {
	return "s3 connection: no progress for " + e.idle.String() + " on " + e.op + " (server not answering?)"
}
func (e *stallError) Unwrap() error   { return e.err }
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }

// tracked tells each request's connection when it serves a request, so that
// the progress deadline applies then and only then.
type tracked struct {
	next http.RoundTripper
}

func (t tracked) RoundTrip(r *http.Request) (*http.Response, error) {
	var pc *progressConn
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if c := findProgressConn(info.Conn); c != nil {
			pc = c
			c.begin()
		}
	}}
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	resp, err := t.next.RoundTrip(r)
	if pc == nil {
		return resp, err
	}
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		pc.end()
		return resp, err
	}
	resp.Body = &endBody{ReadCloser: resp.Body, pc: pc}
	return resp, nil
}

// endBody ends the connection's busy time at EOF or Close, once.
type endBody struct {
	io.ReadCloser
	pc   *progressConn
	once sync.Once
}

func (b *endBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.pc.end)
	}
	return n, err
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.pc.end)
	return err
}

func findProgressConn(c net.Conn) *progressConn {
	for i := 0; c != nil && i < 8; i++ {
		if pc, ok := c.(*progressConn); ok {
			return pc
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// progressDial wraps dial's connections in progressConn.
func progressDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), idle time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newProgressConn(c, idle), nil
	}
}
