package bwlimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func TestLimiterFollowsTimetable(t *testing.T) {
	s, err := Parse("08:00,512K 19:00,10M:1M 23:00,off")
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: at(0, 7, 0)}
	l := New(s, WithClock(clk.Now))
	if got := l.Current(); !got.Unlimited() || l.chunk(Up) != 0 || l.chunk(Down) != 0 {
		t.Fatalf("07:00: %v chunk %d/%d", got, l.chunk(Up), l.chunk(Down))
	}
	clk.Set(at(0, 8, 0))
	if got := l.Current(); got.Up != 512<<10 || got.Down != 512<<10 {
		t.Fatalf("08:00: %v", got)
	}
	if c := l.chunk(Up); c != Burst(512<<10) {
		t.Errorf("08:00 chunk %d, want %d", c, Burst(512<<10))
	}
	clk.Set(at(0, 19, 30))
	if got := l.Current(); got.Up != 10<<20 || got.Down != 1<<20 {
		t.Fatalf("19:30: %v", got)
	}
	if l.bucket[Up].Burst() != 1<<20 || l.bucket[Down].Burst() != Burst(1<<20) {
		t.Errorf("19:30 bursts %d/%d", l.bucket[Up].Burst(), l.bucket[Down].Burst())
	}
	clk.Set(at(1, 1, 0)) // past midnight: 23:00's "off"
	if got := l.Current(); !got.Unlimited() || l.chunk(Down) != 0 {
		t.Fatalf("01:00: %v", got)
	}
	if l.Throttling(Up) || l.Throttling(Down) {
		t.Error("throttling while off")
	}
}

func TestBurstBounds(t *testing.T) {
	for r, want := range map[Rate]int{1: 1 << 10, 10 << 10: 1 << 10, 2 << 20: (2 << 20) / 10, 100 << 20: 1 << 20} {
		if got := Burst(r); got != want {
			t.Errorf("Burst(%d) = %d, want %d", r, got, want)
		}
	}
}

func TestNilAndUnlimitedPassThrough(t *testing.T) {
	var nl *Limiter
	src := bytes.NewReader([]byte("hello"))
	if nl.Reader(context.Background(), src, Up) != io.Reader(src) {
		t.Error("nil limiter wraps")
	}
	if nl.Throttling(Up) || !nl.Current().Unlimited() || nl.WaitN(context.Background(), Up, 1<<30) != nil {
		t.Error("nil limiter limits")
	}
	l := New(Schedule{})
	data := bytes.Repeat([]byte("x"), 1<<20)
	var out bytes.Buffer
	n, err := io.Copy(&out, l.Reader(context.Background(), bytes.NewReader(data), Down))
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("unlimited copy: %d %v", n, err)
	}
}

// chunkReader records the size of each Read asked of it.
type chunkReader struct {
	r     io.Reader
	sizes []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.r.Read(p)
}

func TestReaderReadsInBursts(t *testing.T) {
	// A high rate so that the test does not wait: only the shape is checked.
	l := New(Fixed(Limit{Up: 1 << 30, Down: 1 << 30}))
	data := bytes.Repeat([]byte("0123456789"), 500_000)
	src := &chunkReader{r: bytes.NewReader(data)}
	var out bytes.Buffer
	buf := make([]byte, 8<<20)
	if _, err := io.CopyBuffer(&out, l.Reader(context.Background(), src, Up), buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("data changed")
	}
	for _, s := range src.sizes {
		if s > Burst(1<<30) {
			t.Fatalf("a read of %d bytes, burst is %d", s, Burst(1<<30))
		}
	}
	var w bytes.Buffer
	if n, err := l.Writer(context.Background(), &w, Down).Write(data); err != nil || n != len(data) || !bytes.Equal(w.Bytes(), data) {
		t.Fatalf("writer: %d %v", n, err)
	}
}

func TestReaderStopsWithContext(t *testing.T) {
	l := New(Fixed(Limit{Up: 1 << 10, Down: 1 << 10})) // 1 KiB/s, burst 1 KiB
	ctx, cancel := context.WithCancel(context.Background())
	r := l.Reader(ctx, bytes.NewReader(make([]byte, 64<<10)), Up)
	buf := make([]byte, 64<<10)
	if _, err := r.Read(buf); err != nil { // the first burst is free
		t.Fatal(err)
	}
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err := r.Read(buf) // would wait ~1 s for the next KiB
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("cancel took %s", d)
	}
	if !l.Throttling(Up) || l.Throttling(Down) {
		t.Errorf("Throttling up %v down %v, want true/false", l.Throttling(Up), l.Throttling(Down))
	}
}

func TestConnPacesBothWays(t *testing.T) {
	l := New(Fixed(Limit{Up: 1 << 30, Down: 1 << 30}))
	a, b := net.Pipe()
	ca := l.DialContext(func(context.Context, string, string) (net.Conn, error) { return a, nil })
	c, err := ca(context.Background(), "tcp", "x")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("y"), 3<<20)
	go func() { _, _ = c.Write(data); _ = c.Close() }()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("conn write: %d bytes, %v", len(got), err)
	}
}

// BenchmarkUnlimitedFastPath is the cost of a limiter that limits nothing,
// per 32 KiB read, against the bare reader.
func BenchmarkUnlimitedFastPath(b *testing.B) {
	buf := make([]byte, 32<<10)
	for _, way := range []string{"bare", "off-limiter", "timetable-off-now"} {
		b.Run(way, func(b *testing.B) {
			var r io.Reader = zeroReader{}
			switch way {
			case "off-limiter":
				r = New(Schedule{}).Reader(context.Background(), r, Up)
			case "timetable-off-now": // a timetable whose entry in force is off
				s, _ := Parse("00:00,off 23:59,1M")
				clk := &fakeClock{now: at(0, 12, 0)}
				r = New(s, WithClock(clk.Now)).Reader(context.Background(), r, Up)
			}
			b.SetBytes(int64(len(buf)))
			for i := 0; i < b.N; i++ {
				_, _ = r.Read(buf)
			}
		})
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { return len(p), nil }

func TestReaderKeepsReaderAtAndSeeker(t *testing.T) {
	l := New(Fixed(Limit{Up: 1 << 30, Down: 1 << 30}))
	data := bytes.Repeat([]byte("abcdefgh"), 1<<18) // 2 MiB: several bursts
	r := l.Reader(context.Background(), bytes.NewReader(data), Up)
	ra, ok := r.(io.ReaderAt)
	if !ok {
		t.Fatal("no ReaderAt")
	}
	if _, ok := r.(io.Seeker); !ok {
		t.Fatal("no Seeker")
	}
	buf := make([]byte, len(data)-3)
	if n, err := ra.ReadAt(buf, 3); err != nil || n != len(buf) || !bytes.Equal(buf, data[3:]) {
		t.Fatalf("ReadAt: %d %v", n, err)
	}
	if n, err := ra.ReadAt(buf, 10); err != io.EOF || n != len(data)-10 {
		t.Fatalf("ReadAt past the end: %d %v", n, err)
	}
	if _, ok := l.Reader(context.Background(), io.LimitReader(bytes.NewReader(data), 5), Up).(io.ReaderAt); ok {
		t.Error("a plain reader became a ReaderAt")
	}
	// Without a Seeker underneath, none on top.
	onlyAt := struct {
		io.Reader
		io.ReaderAt
	}{bytes.NewReader(data), bytes.NewReader(data)}
	if _, ok := l.Reader(context.Background(), onlyAt, Up).(io.Seeker); ok {
		t.Error("a Seeker appeared")
	}
}
