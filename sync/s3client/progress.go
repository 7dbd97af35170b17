package s3client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts bound each phase of a request. A zero field takes the value of
// DefaultTimeouts.
type Timeouts struct {
	// Dial bounds the TCP connect.
	Dial time.Duration
	// TLSHandshake bounds the TLS handshake.
	TLSHandshake time.Duration
	// Progress is the silent-server limit: how long a connection serving a
	// request may go without moving a byte (nothing read, nothing written,
	// and on Linux nothing of what was written acknowledged by the peer).
	// It covers a server that accepts and never answers, a response that
	// stops half way and an upload the server stops reading, while a
	// transfer of any size on a slow link that keeps moving is never cut.
	// It also bounds the wait for response headers, plus the time the
	// request bodies sent ahead of the answer need at FloorRate (see
	// FloorRate). http.Transport's ResponseHeaderTimeout is not used: it
	// starts when the request is handed to the kernel and would cut a
	// large upload still draining a slow link's send buffer.
	Progress time.Duration
	// FloorRate, in bytes per second, is the slowest link the client waits
	// for. A proxy that acknowledges the request body at once (split-TCP
	// on satellite links, HTTP proxies) leaves nothing to watch while the
	// body trickles to the server: once a request is written, its answer
	// is awaited for Progress plus the time the bytes written and not yet
	// answered on all connections of the transport (this request's and
	// those ahead of it) need at FloorRate.
	FloorRate int64
}

// DefaultTimeouts: a server that accepts and never answers is given up on
// after Progress per attempt (plus next to nothing for a small request's
// body at FloorRate), so a small request fails within MaxRetries ×
// Progress plus minio-go's short backoffs (see WorstCase), under 30 s, and
// the engine retries it later. FloorRate 16 KiB/s (128 kbit/s): a body of
// 1 MiB is awaited 64 s longer.
var DefaultTimeouts = Timeouts{Dial: 5 * time.Second, TLSHandshake: 5 * time.Second, Progress: 8 * time.Second,
	FloorRate: 16 << 10}

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
	if t.FloorRate <= 0 {
		t.FloorRate = DefaultTimeouts.FloorRate
	}
	return t
}

// retryBackoffCap is minio-go's DefaultRetryCap: the longest pause between
// two attempts of one request.
const retryBackoffCap = time.Second

// WorstCase is the longest a small request to a server that answers
// nothing at all can take before minio-go returns an error: each attempt
// ends in the first phase that gets no answer (the dial, the TLS handshake,
// or the wait for a first byte of the response), then minio-go pauses
// before the next.
func (t Timeouts) WorstCase(attempts int) time.Duration {
	t = t.withDefaults()
	phase := max(t.Dial, t.TLSHandshake, t.Progress+smallRequestAllowance(t.FloorRate))
	return time.Duration(attempts)*phase + time.Duration(attempts-1)*retryBackoffCap
}

// smallRequestAllowance is the wait a small request (headers of about 1 KiB)
// adds at floor rate.
func smallRequestAllowance(floor int64) time.Duration {
	return atFloor(2<<10, floor)
}

// atFloor is how long n bytes take at floor bytes per second.
func atFloor(n, floor int64) time.Duration {
	if n <= 0 || floor <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(floor) * float64(time.Second))
}

// ErrServerSilent is matched (errors.Is) by every error of a request the
// client gave up on because the server moved nothing for the silent-server
// limit; errors.As with *TimeoutError tells more.
var ErrServerSilent = errors.New("s3 server silent")

// TimeoutError says a connection moved nothing for the silent-server limit
// (Timeouts.Progress), or got no answer within the limit plus the request
// bodies' time at Timeouts.FloorRate. It is a net.Error with Timeout() true,
// so minio-go retries the request, and it matches ErrServerSilent.
type TimeoutError struct {
	// Op is "read" or "write".
	Op string
	// Waited is how long nothing moved.
	Waited time.Duration
	// Awaiting is the number of request bytes sent ahead of the answer
	// that the wait allowed for at FloorRate (0: no answer was awaited;
	// the connection stopped moving half way).
	Awaiting int64
	err      error
}

func (e *TimeoutError) Error() string {
	if e.Awaiting > 0 {
		return fmt.Sprintf("s3 connection: no answer %s after the request (allowing for %d bytes sent ahead of it at the floor rate; server not answering?)",
			e.Waited.Round(time.Millisecond), e.Awaiting)
	}
	return "s3 connection: no progress for " + e.Waited.Round(time.Millisecond).String() + " on " + e.Op + " (server not answering?)"
}

// Unwrap returns the deadline error.
func (e *TimeoutError) Unwrap() error { return e.err }

// Is matches ErrServerSilent.
func (e *TimeoutError) Is(target error) bool { return target == ErrServerSilent }

// Timeout is true: the request may be retried.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary is true.
func (e *TimeoutError) Temporary() bool { return true }

type patienceKey struct{}

// WithPatience returns ctx carrying a factor (at least 1) by which the
// deadlines of requests made with it are stretched: a retry after a
// timeout on a slow link waits longer than the try before.
func WithPatience(ctx context.Context, factor float64) context.Context {
	return context.WithValue(ctx, patienceKey{}, max(factor, 1))
}

// Patience is the factor WithPatience put in ctx; 1 when none.
func Patience(ctx context.Context) float64 { return patience(ctx) }

func patience(ctx context.Context) float64 {
	if f, ok := ctx.Value(patienceKey{}).(float64); ok && f >= 1 {
		return f
	}
	return 1
}

// link is what the connections of one transport share: the request bytes
// written and not yet answered, on all of them. Through a proxy that
// buffers, they drain through the same link ahead of (or beside) the
// request waiting for its answer.
type link struct {
	awaiting atomic.Int64
}

// progressConn enforces Timeouts.Progress on a connection while it serves a
// request (between GotConn and the end of the response body, told by
// tracked); an idle connection in the pool has no deadline. Once the request
// is written and until the first byte of the answer, the wait also allows
// for the bytes awaiting an answer at the floor rate (Timeouts.FloorRate).
type progressConn struct {
	net.Conn
	idle  time.Duration
	floor int64
	link  *link

	mu    sync.Mutex
	busy  int       // requests in flight on the connection (0 or 1 for HTTP/1.1)
	last  time.Time // last progress
	setAt time.Time // when the deadline was last pushed by progressed
	qPrev int       // bytes written and not yet acknowledged at the last check; -1 unknown
	qAt   time.Time // when qPrev was seen

	gen      int       // counts begin: which request the fields below are of
	pat      float64   // the request's patience (WithPatience)
	written  int64     // bytes written for the request in flight
	waiting  bool      // the request is written; no byte of its answer yet
	waitFrom time.Time // when it was written
	counted  int64     // bytes of it added to link.awaiting
	ahead    int64     // most bytes awaiting an answer seen while it waits
}

func newProgressConn(c net.Conn, idle time.Duration, floor int64, l *link) *progressConn {
	return &progressConn{Conn: c, idle: idle, floor: floor, link: l, qPrev: -1, pat: 1}
}

// NetConn returns the wrapped connection.
func (c *progressConn) NetConn() net.Conn { return c.Conn }

// begin starts a request on the connection and returns its number. The
// request before may not have ended yet (its body is closed after the
// connection went back to the pool): only the newest request waits.
func (c *progressConn) begin(pat float64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy++
	c.gen++
	c.last = time.Now()
	c.setAt = c.last
	c.qPrev = -1
	c.pat = pat
	c.written = 0
	c.stopWaitingLocked()
	_ = c.Conn.SetDeadline(c.last.Add(c.limit()))
	return c.gen
}

// limit is the silent-server limit stretched by the request's patience.
func (c *progressConn) limit() time.Duration {
	return time.Duration(float64(c.idle) * c.pat)
}

func (c *progressConn) end(gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		c.stopWaitingLocked()
	}
	if c.busy > 0 {
		c.busy--
	}
	if c.busy == 0 {
		_ = c.Conn.SetDeadline(time.Time{})
	}
}

// wroteRequest starts the wait for the answer: the request's bytes join
// those awaiting an answer on the link.
func (c *progressConn) wroteRequest(gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == 0 || c.waiting || gen != c.gen {
		return
	}
	c.waiting = true
	c.waitFrom = time.Now()
	c.counted = c.written
	c.ahead = c.link.awaiting.Add(c.counted)
}

// answered ends the wait: a byte of the answer came.
func (c *progressConn) stopWaitingLocked() {
	if c.waiting {
		c.waiting = false
		c.link.awaiting.Add(-c.counted)
		c.counted = 0
	}
}

// waitDeadline is when the wait for the answer ends: the silent-server
// limit plus the bytes awaiting an answer at the floor rate, stretched by
// the request's patience.
func (c *progressConn) waitDeadlineLocked() time.Time {
	c.ahead = max(c.ahead, c.link.awaiting.Load())
	return c.waitFrom.Add(c.limit() + time.Duration(float64(atFloor(c.ahead, c.floor))*c.pat))
}

// progressed records that bytes moved and pushes the deadline; SetDeadline
// is called at most every limit/8.
func (c *progressConn) progressed(read bool, n int) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = now
	switch {
	case read:
		c.stopWaitingLocked()
	case c.waiting:
		// net/http tells WroteRequest before it flushes its buffer: the
		// last bytes of the request come after.
		c.counted += int64(n)
		c.ahead = max(c.ahead, c.link.awaiting.Add(int64(n)))
	default:
		c.written += int64(n)
	}
	if c.busy == 0 || now.Sub(c.setAt) < c.limit()/8 {
		return
	}
	c.setAt = now
	_ = c.Conn.SetDeadline(now.Add(c.limit()))
}

// stalled decides, when the deadline has fired, whether the connection is
// really stuck. Not when it is idle in the pool (no request); not when
// bytes moved since the deadline was set; not while what was written is
// still draining to the peer (a slow link: the send queue is not empty and
// shrinks), in which case the queue is watched every limit/8 so that the
// server gets nearly the whole timeout to answer once it has the request;
// and not while the answer is awaited within its wait deadline. Otherwise
// it sets the deadline again from the last progress. It returns the error
// for a stalled connection.
func (c *progressConn) stalled(op string, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.busy == 0 {
		_ = c.Conn.SetDeadline(time.Time{})
		return nil
	}
	q := unacked(c.Conn)
	switch {
	case q > 0 && (c.qPrev < 0 || q < c.qPrev): // draining
		c.last = now
	case q == 0 && c.qPrev > 0 && c.qAt.After(c.last): // drained since the last look
		c.last = c.qAt
	}
	c.qPrev, c.qAt = q, now
	idle := c.limit()
	next := c.last.Add(idle)
	if c.waiting {
		if wd := c.waitDeadlineLocked(); wd.After(next) {
			next = wd
		}
	}
	if !now.Before(next) {
		te := &TimeoutError{Op: op, Waited: now.Sub(c.last), err: err}
		if c.waiting {
			te.Waited, te.Awaiting = now.Sub(c.waitFrom), c.ahead
		}
		return te
	}
	if soon := now.Add(idle / 8); q > 0 && soon.Before(next) {
		next = soon
	}
	c.setAt = now
	_ = c.Conn.SetDeadline(next)
	return nil
}

func (c *progressConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.progressed(true, n)
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			if serr := c.stalled("read", err); serr != nil {
				return 0, serr
			}
			continue
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
			c.progressed(false, n)
		}
		if err == nil {
			return done, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if serr := c.stalled("write", err); serr != nil {
				return done, serr
			}
			continue
		}
		return done, err
	}
}

// tracked tells each request's connection when it serves a request, so that
// the progress deadline applies then and only then.
type tracked struct {
	next http.RoundTripper
}

func (t tracked) RoundTrip(r *http.Request) (*http.Response, error) {
	var pc *progressConn
	var gen int
	pat := patience(r.Context())
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if c := findProgressConn(info.Conn); c != nil {
				pc = c
				gen = c.begin(pat)
			}
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			if pc != nil {
				pc.wroteRequest(gen)
			}
		},
	}
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	resp, err := t.next.RoundTrip(r)
	if pc == nil {
		return resp, err
	}
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		pc.end(gen)
		return resp, err
	}
	resp.Body = &endBody{ReadCloser: resp.Body, pc: pc, gen: gen}
	return resp, nil
}

// endBody ends the connection's busy time at EOF or Close, once.
type endBody struct {
	io.ReadCloser
	pc   *progressConn
	gen  int
	once sync.Once
}

func (b *endBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(func() { b.pc.end(b.gen) })
	}
	return n, err
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.pc.end(b.gen) })
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
// The connections share one link (the bytes awaiting an answer).
func progressDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), to Timeouts) func(ctx context.Context, network, addr string) (net.Conn, error) {
	l := &link{}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newProgressConn(c, to.Progress, to.FloorRate, l), nil
	}
}
