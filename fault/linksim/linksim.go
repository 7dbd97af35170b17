// Package linksim is a TCP proxy that plays an edge device's link for tests
// and the bench: latency with jitter each way, a bandwidth per direction
// shared by all connections (one modem), a split-TCP buffer (a satellite
// performance-enhancing proxy or an HTTP proxy that acknowledges what the
// client sends at once and trickles it on), connections reset after a
// number of bytes (toxiproxy's limit_data), and data forwarded in small
// slices (toxiproxy's slicer).
//
// Unlike toxiproxy, whose bandwidth toxic limits each connection on its own
// (eight connections get eight times the rate), the rate here is the link's:
// opening more connections does not make it faster.
package linksim

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Config describes the link. Zero values mean: no latency, no limit, no
// buffering, no reset, no slicing.
type Config struct {
	// Latency is added each way, plus or minus up to Jitter (uniform);
	// bytes of one connection keep their order.
	Latency, Jitter time.Duration
	// Up and Down are the link's rates in bytes per second, client to
	// server and back, shared by all connections.
	Up, Down int64
	// SplitTCP makes the proxy read everything the client sends at once
	// (acknowledging it) and forward it at the link's pace, as a
	// performance-enhancing proxy does; otherwise the client's data waits
	// in its own send buffer (64 KiB of it in the proxy at most).
	SplitTCP bool
	// ResetEvery resets (TCP RST, both sides) the connection on which each
	// further ResetEvery bytes from the clients have been forwarded: a
	// body cut short, as toxiproxy's limit_data does; 0 for none.
	ResetEvery int64
	// Slice forwards data in pieces of at most Slice bytes; 0 for 16 KiB.
	Slice int
}

// Link is a running proxy in front of one server.
type Link struct {
	cfg      Config
	target   string
	ln       net.Listener
	up, down *rate.Limiter

	upBytes atomic.Int64 // forwarded client to server, for ResetEvery
	resets  atomic.Int64
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Start listens on a free loopback port and forwards every connection to
// target through the link cfg describes.
func Start(target string, cfg Config) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if cfg.Slice <= 0 {
		cfg.Slice = 16 << 10
	}
	l := &Link{cfg: cfg, target: target, ln: ln, up: limiter(cfg.Up, cfg.Slice), down: limiter(cfg.Down, cfg.Slice),
		conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

func limiter(bps int64, slice int) *rate.Limiter {
	if bps <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	// A burst of one slice: the link is never faster than its rate over
	// more than a slice.
	return rate.NewLimiter(rate.Limit(bps), slice)
}

// Addr is the proxy's address (host:port).
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Resets is the number of connections reset so far.
func (l *Link) Resets() int64 { return l.resets.Load() }

// Close stops listening, cuts every connection and waits for them.
func (l *Link) Close() error {
	err := l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

func (l *Link) track(c net.Conn, add bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go l.serve(c.(*net.TCPConn))
	}
}

func (l *Link) serve(client *net.TCPConn) {
	defer l.wg.Done()
	s, err := net.DialTimeout("tcp", l.target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	server := s.(*net.TCPConn)
	l.track(client, true)
	l.track(server, true)
	defer l.track(client, false)
	defer l.track(server, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reset := func() {
		l.resets.Add(1)
		_ = client.SetLinger(0)
		_ = server.SetLinger(0)
		client.Close()
		server.Close()
		cancel()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(ctx, client, server, l.up, true, reset) }()
	go func() { defer wg.Done(); l.pipe(ctx, server, client, l.down, false, reset) }()
	wg.Wait()
	client.Close()
	server.Close()
}

type chunk struct {
	b     []byte
	due   time.Time
	reset bool // reset the connection once b is delivered
}

// pipe forwards src to dst: a reader that takes what src sends (at once
// with SplitTCP, else 64 KiB ahead at most), a shaper that spends the link's
// rate and stamps each slice with its arrival time, and a writer that
// delivers it then.
func (l *Link) pipe(ctx context.Context, src, dst *net.TCPConn, lim *rate.Limiter, upstream bool, reset func()) {
	ahead := 4
	if upstream && l.cfg.SplitTCP {
		ahead = 1 << 16 // at most 1 GiB of slices: all of it, in practice
	}
	read := make(chan []byte, ahead)
	wire := make(chan chunk, 1<<16)
	go func() {
		defer close(read)
		for {
			b := make([]byte, l.cfg.Slice)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case read <- b[:n]:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer close(wire)
		var last time.Time
		for b := range read {
			cut := false
			if upstream && l.cfg.ResetEvery > 0 {
				before := l.upBytes.Add(int64(len(b))) - int64(len(b))
				if left := l.cfg.ResetEvery - before%l.cfg.ResetEvery; left <= int64(len(b)) {
					b, cut = b[:left-1], true // what comes before the cut, then the reset
				}
			}
			if err := lim.WaitN(ctx, len(b)); err != nil {
				return
			}
			due := time.Now().Add(l.delay())
			if due.Before(last) {
				due = last // order within a connection
			}
			last = due
			select {
			case wire <- chunk{b, due, cut}:
			case <-ctx.Done():
				return
			}
			if cut {
				return
			}
		}
	}()
	for c := range wire {
		if d := time.Until(c.due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
		if c.reset {
			reset()
			return
		}
	}
	if ctx.Err() == nil {
		_ = dst.CloseWrite() // src ended: pass the half close on
	}
}

func (l *Link) delay() time.Duration {
	d := l.cfg.Latency
	if j := l.cfg.Jitter; j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	return max(d, 0)
}
