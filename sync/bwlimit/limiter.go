package bwlimit

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter holds one token bucket per direction, shared by every reader,
// writer and connection it wraps, whatever mapping or transfer they serve.
// Its rates follow its Schedule: the limit in force is looked up again when
// the next boundary of the timetable has passed (checked on every wait, so no
// goroutine is needed). A nil *Limiter limits nothing.
type Limiter struct {
	sched Schedule
	now   func() time.Time

	mu     sync.Mutex // guards cur and the buckets' settings
	cur    Limit
	next   atomic.Int64 // unix nanoseconds of the next boundary; 0 = none
	bucket [2]*rate.Limiter
	off    [2]atomic.Bool  // fast path: direction unlimited now
	waited [2]atomic.Int64 // real-time unix nanoseconds until which a wait was in progress
}

// Option changes a Limiter made by New.
type Option func(*Limiter)

// WithClock replaces time.Now for following the timetable (tests).
func WithClock(now func() time.Time) Option { return func(l *Limiter) { l.now = now } }

// New returns a limiter following s.
func New(s Schedule, opts ...Option) *Limiter {
	l := &Limiter{sched: s, now: time.Now}
	for _, o := range opts {
		o(l)
	}
	l.bucket[Up] = rate.NewLimiter(rate.Inf, 0)
	l.bucket[Down] = rate.NewLimiter(rate.Inf, 0)
	l.mu.Lock()
	l.apply(l.now())
	l.mu.Unlock()
	return l
}

// Schedule returns the schedule the limiter follows.
func (l *Limiter) Schedule() Schedule {
	if l == nil {
		return Schedule{}
	}
	return l.sched
}

// Current returns the limit in force now.
func (l *Limiter) Current() Limit {
	if l == nil {
		return Limit{}
	}
	l.refresh()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// Throttling reports whether a transfer in direction d had to wait for
// tokens within the last second: the link is held at the limit. The
// heartbeat uses it to say a data path is throttled.
func (l *Limiter) Throttling(d Direction) bool {
	if l == nil {
		return false
	}
	l.refresh()
	if l.off[d].Load() {
		return false
	}
	return time.Now().UnixNano() < l.waited[d].Load()+int64(time.Second)
}

// Burst is the largest number of bytes taken from a bucket at once for rate
// r: a tenth of a second's worth, at least 1 KiB and at most 1 MiB, so the
// flow stays smooth and a 10 s window is accurate to well under 1 %.
func Burst(r Rate) int {
	b := int64(r) / 10
	switch {
	case b < 1<<10:
		b = 1 << 10
	case b > 1<<20:
		b = 1 << 20
	}
	return int(b)
}

// apply sets the buckets to the limit in force at now; l.mu is held.
func (l *Limiter) apply(now time.Time) {
	lim, next := l.sched.At(now)
	if next.IsZero() {
		l.next.Store(0)
	} else {
		l.next.Store(next.UnixNano())
	}
	l.cur = lim
	for _, d := range []Direction{Up, Down} {
		r := lim.For(d)
		if r <= 0 {
			l.bucket[d].SetLimit(rate.Inf)
			l.off[d].Store(true)
			continue
		}
		l.bucket[d].SetBurst(Burst(r))
		l.bucket[d].SetLimit(rate.Limit(r))
		l.off[d].Store(false)
	}
}

// refresh re-reads the timetable once its next boundary has passed.
func (l *Limiter) refresh() {
	next := l.next.Load()
	if next == 0 || l.now().UnixNano() < next {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if next := l.next.Load(); next != 0 && l.now().UnixNano() >= next {
		l.apply(l.now())
	}
}

// chunk is the most bytes one Read or Write may move in direction d before
// waiting; 0 when d is unlimited.
func (l *Limiter) chunk(d Direction) int {
	if l == nil {
		return 0
	}
	l.refresh()
	if l.off[d].Load() {
		return 0
	}
	return l.bucket[d].Burst()
}

// WaitN blocks until n bytes may move in direction d, or ctx ends. n may be
// larger than the burst: it is taken in burst-sized steps.
func (l *Limiter) WaitN(ctx context.Context, d Direction, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		c := l.chunk(d)
		if c == 0 {
			return nil
		}
		if c > n {
			c = n
		}
		if err := l.wait(ctx, d, c); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

func (l *Limiter) wait(ctx context.Context, d Direction, n int) error {
	b := l.bucket[d]
	r := b.ReserveN(time.Now(), n)
	if !r.OK() { // burst shrank under us (timetable change): take what fits
		return b.WaitN(ctx, min(n, max(b.Burst(), 1)))
	}
	delay := r.Delay()
	if delay <= 0 {
		return nil
	}
	until := time.Now().Add(delay)
	if u := until.UnixNano(); u > l.waited[d].Load() {
		l.waited[d].Store(u)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// Reader returns r paced in direction d: each Read moves at most one burst
// and returns once the bucket has granted the bytes read. When d is not
// limited at the time of a Read, it costs one atomic load. A nil Limiter
// returns r itself.
//
// When r is also an io.ReaderAt (and an io.Seeker), so is the result, with
// ReadAt paced alike: minio-go then streams multipart parts from sections
// of the body instead of reading each whole part into memory first, and the
// wire follows the limit instead of going in part-sized bursts.
func (l *Limiter) Reader(ctx context.Context, r io.Reader, d Direction) io.Reader {
	if l == nil {
		return r
	}
	base := reader{ctx: ctx, r: r, l: l, d: d}
	ra, isAt := r.(io.ReaderAt)
	if !isAt {
		return &base
	}
	if sk, ok := r.(io.Seeker); ok {
		return &readerAtSeeker{readerAt{base, ra}, sk}
	}
	return &readerAt{base, ra}
}

type readerAt struct {
	reader
	ra io.ReaderAt
}

// ReadAt reads at most one burst at off and waits for its tokens.
func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	c := r.l.chunk(r.d)
	if c == 0 {
		return r.ra.ReadAt(p, off)
	}
	// io.ReaderAt must fill p unless it fails: take it a burst at a time.
	done := 0
	for done < len(p) {
		end := min(len(p), done+c)
		n, err := r.ra.ReadAt(p[done:end], off+int64(done))
		if n > 0 {
			if werr := r.l.wait(r.ctx, r.d, n); werr != nil {
				return done + n, werr
			}
		}
		done += n
		if err != nil {
			return done, err
		}
		if c = r.l.chunk(r.d); c == 0 && done < len(p) {
			n, err := r.ra.ReadAt(p[done:], off+int64(done))
			return done + n, err
		}
	}
	return done, nil
}

type readerAtSeeker struct {
	readerAt
	sk io.Seeker
}

// Seek moves the underlying reader.
func (r *readerAtSeeker) Seek(off int64, whence int) (int64, error) { return r.sk.Seek(off, whence) }

type reader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
	d   Direction
}

func (r *reader) Read(p []byte) (int, error) {
	c := r.l.chunk(r.d)
	if c == 0 {
		return r.r.Read(p)
	}
	if len(p) > c {
		p = p[:c]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.wait(r.ctx, r.d, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Writer returns w paced in direction d, like Reader.
func (l *Limiter) Writer(ctx context.Context, w io.Writer, d Direction) io.Writer {
	if l == nil {
		return w
	}
	return &writer{ctx: ctx, w: w, l: l, d: d}
}

type writer struct {
	ctx context.Context
	w   io.Writer
	l   *Limiter
	d   Direction
}

func (w *writer) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		c := w.l.chunk(w.d)
		if c == 0 {
			n, err := w.w.Write(p[done:])
			return done + n, err
		}
		c = min(c, len(p)-done)
		if err := w.l.wait(w.ctx, w.d, c); err != nil {
			return done, err
		}
		n, err := w.w.Write(p[done : done+c])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Conn returns c with its writes paced as uploads and its reads as
// downloads: every byte on the wire, headers and all, whatever the HTTP
// client buffers. This is how the S3 client applies the limit engine-wide.
func (l *Limiter) Conn(c net.Conn) net.Conn {
	if l == nil {
		return c
	}
	return &conn{Conn: c, l: l}
}

// DialContext wraps dial so that every connection it opens is paced by l.
func (l *Limiter) DialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if l == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return l.Conn(c), nil
	}
}

type conn struct {
	net.Conn
	l *Limiter
}

// NetConn returns the wrapped connection (for callers that look beneath the
// wrappers, such as the S3 client's progress check).
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) Read(p []byte) (int, error) {
	ch := c.l.chunk(Down)
	if ch == 0 {
		return c.Conn.Read(p)
	}
	if len(p) > ch {
		p = p[:ch]
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		// The connection has no context of its own: a wait ends with the
		// connection's deadline at the latest, at most one burst's time.
		_ = c.l.wait(context.Background(), Down, n)
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		ch := c.l.chunk(Up)
		if ch == 0 {
			n, err := c.Conn.Write(p[done:])
			return done + n, err
		}
		ch = min(ch, len(p)-done)
		_ = c.l.wait(context.Background(), Up, ch)
		n, err := c.Conn.Write(p[done : done+ch])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
