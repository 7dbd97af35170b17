package linksim

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// sink accepts connections, counts what it reads and answers "ok" at EOF.
func sink(t *testing.T) string {
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
				if _, err := io.Copy(io.Discard, c); err == nil {
					_, _ = c.Write([]byte("ok"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

func send(t *testing.T, addr string, n int) (time.Duration, time.Duration, []byte, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write(make([]byte, n)); err != nil {
		return 0, 0, nil, err
	}
	wrote := time.Since(start)
	_ = c.(*net.TCPConn).CloseWrite()
	ans, err := io.ReadAll(c)
	return wrote, time.Since(start), ans, err
}

func TestRateLatencyAndSplitTCP(t *testing.T) {
	target := sink(t)
	// 256 KiB at 128 KiB/s: about 2 s, plus 2 × 100 ms.
	l, err := Start(target, Config{Latency: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Up: 128 << 10, SplitTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	wrote, took, ans, err := send(t, l.Addr(), 256<<10)
	if err != nil || !bytes.Equal(ans, []byte("ok")) {
		t.Fatalf("%q, %v", ans, err)
	}
	if took < 1800*time.Millisecond || took > 6*time.Second {
		t.Errorf("256 KiB at 128 KiB/s took %s", took)
	}
	if wrote > 500*time.Millisecond {
		t.Errorf("split TCP: the client's write took %s, want it acknowledged at once", wrote)
	}
}

func TestRateIsSharedByConnections(t *testing.T) {
	target := sink(t)
	l, err := Start(target, Config{Up: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	done := make(chan error, 4)
	for range 4 {
		go func() { _, _, _, err := send(t, l.Addr(), 64<<10); done <- err }()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// 4 × 64 KiB at 128 KiB/s: 2 s, not 0.5 s.
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Errorf("4 connections moved 256 KiB in %s: the rate is not shared", took)
	}
}

func TestResetEvery(t *testing.T) {
	target := sink(t)
	l, err := Start(target, Config{ResetEvery: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, _, ans, err := send(t, l.Addr(), 150<<10)
	if err == nil && len(ans) > 0 {
		t.Fatalf("a connection past the reset got %q", ans)
	}
	if l.Resets() != 1 {
		t.Errorf("%d resets", l.Resets())
	}
	// The next 50 KiB fit before the next cut.
	if _, _, ans, err := send(t, l.Addr(), 40<<10); err != nil || string(ans) != "ok" {
		t.Errorf("after the reset: %q, %v", ans, err)
	}
}
