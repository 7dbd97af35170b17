package bwlimit_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// BenchmarkAccuracy uploads through minio-go PutObject to versitygw on
// loopback for FLOTTA_BWLIMIT_BENCH_SECONDS (default 30) per scenario, with a
// 2 MiB/s limit, and reports the bytes written on the wire in every 10 s
// window (sliding by 0.5 s) against the limit. Run it alone:
//
//	go test -run '^$' -bench Accuracy -benchtime 1x ./sync/bwlimit
//
// Scenarios: many small objects and multipart parts, each paced either by
// wrapping the body (Limiter.Reader; "readerat": a body that is also an
// io.ReaderAt, which minio-go streams part by part) or the connection
// (Limiter.Conn, what the S3 client does when given a limiter); and the
// unlimited limiter against no limiter at all, for the cost of the fast path.
func BenchmarkAccuracy(b *testing.B) {
	secs := 30
	if v, err := strconv.Atoi(os.Getenv("FLOTTA_BWLIMIT_BENCH_SECONDS")); err == nil && v > 10 {
		secs = v
	}
	dur := time.Duration(secs) * time.Second
	srv := s3test.Start(b, s3test.WithBuckets("bench"))
	const limit = 2 << 20
	for _, sc := range []struct {
		name      string
		size      int64 // object size
		partSize  uint64
		workers   int
		readerWay bool // pace the body, else the connection
	}{
		{"small-64KiB/reader", 64 << 10, 0, 8, true},
		{"small-64KiB/conn", 64 << 10, 0, 8, false},
		{"multipart-5MiB-parts/reader", 20 << 20, 5 << 20, 2, true},
		{"multipart-5MiB-parts/conn", 20 << 20, 5 << 20, 2, false},
		{"multipart-5MiB-parts/readerat", 20 << 20, 5 << 20, 2, true},
	} {
		b.Run(sc.name, func(b *testing.B) {
			lim := bwlimit.New(bwlimit.Fixed(bwlimit.Limit{Up: limit, Down: limit}))
			var wire atomic.Int64
			dial := countingDial(&wire)
			if !sc.readerWay {
				dial = lim.DialContext(dial)
			}
			cl := client(b, srv, dial)
			ctx, cancel := context.WithTimeout(context.Background(), dur)
			defer cancel()
			samples := sample(ctx, &wire)
			var wg sync.WaitGroup
			var objects atomic.Int64
			for w := 0; w < sc.workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; ctx.Err() == nil; i++ {
						var body io.Reader = io.LimitReader(zeros{}, sc.size)
						if strings.HasSuffix(sc.name, "/readerat") {
							body = bytes.NewReader(bigZeros[:sc.size]) // a ReaderAt: parts stream from sections
						}
						if sc.readerWay {
							body = lim.Reader(ctx, body, bwlimit.Up)
						}
						key := fmt.Sprintf("%s/%d/%d", sc.name, w, i)
						_, err := cl.PutObject(ctx, "bench", key, body, sc.size, minio.PutObjectOptions{PartSize: sc.partSize, DisableContentSha256: true})
						if err == nil {
							objects.Add(1)
						} else if ctx.Err() == nil {
							b.Errorf("put %s: %v", key, err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			report(b, <-samples, limit, objects.Load())
		})
	}
	b.Run("unlimited-overhead", func(b *testing.B) {
		// Rounds in a rotating order, so that load from elsewhere and the
		// server's writeback of the previous round hit every variant alike.
		const round = 3 * time.Second
		ways := []string{"none", "off-limiter", "off-conn", "off-body"}
		moved := map[string]int64{}
		for r := 0; r < len(ways); r++ {
			for k := range ways {
				way := ways[(r+k)%len(ways)]
				var wire atomic.Int64
				dial := countingDial(&wire)
				lim := bwlimit.New(bwlimit.Schedule{})
				if way == "off-limiter" || way == "off-conn" {
					dial = lim.DialContext(dial)
				}
				cl := client(b, srv, dial)
				ctx, cancel := context.WithTimeout(context.Background(), round)
				var wg sync.WaitGroup
				for w := 0; w < 4; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						for i := 0; ctx.Err() == nil; i++ {
							var body io.Reader = io.LimitReader(zeros{}, 8<<20)
							if way == "off-limiter" || way == "off-body" {
								body = lim.Reader(ctx, body, bwlimit.Up)
							}
							_, _ = cl.PutObject(ctx, "bench", fmt.Sprintf("free/%s/%d/%d", way, w, i), body, 8<<20, minio.PutObjectOptions{DisableContentSha256: true})
						}
					}(w)
				}
				wg.Wait()
				cancel()
				moved[way] += wire.Load()
			}
		}
		for _, way := range ways {
			mibs := float64(moved[way]) / (time.Duration(len(ways)) * round).Seconds() / (1 << 20)
			b.Logf("unlimited, %s: %.0f MiB/s on the wire", way, mibs)
			b.ReportMetric(mibs, way+"-MiB/s")
		}
	})
}

var bigZeros = make([]byte, 20<<20)

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func countingDial(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{c, n}, nil
	}
}

func client(b *testing.B, srv *s3test.Server, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *minio.Client {
	tr, err := s3client.NewTransport(false, nil, 16)
	if err != nil {
		b.Fatal(err)
	}
	tr.DialContext = dial
	access, secret := srv.Credentials()
	cl, err := s3client.New(s3client.Config{Host: srv.Host, Port: srv.Port, AccessKey: access, SecretKey: secret, Region: s3test.Region, Transport: tr})
	if err != nil {
		b.Fatal(err)
	}
	return cl
}

// sample reads the counter every 100 ms until ctx ends.
func sample(ctx context.Context, n *atomic.Int64) <-chan []int64 {
	out := make(chan []int64, 1)
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		s := []int64{n.Load()}
		for {
			select {
			case <-ctx.Done():
				out <- s
				return
			case <-t.C:
				s = append(s, n.Load())
			}
		}
	}()
	return out
}

// report logs every 10 s window (after a 1 s warm-up, sliding by 0.5 s)
// against the limit and reports the worst deviation.
func report(b *testing.B, s []int64, limit float64, objects int64) {
	const win, warm, step = 100, 10, 5 // in samples of 100 ms
	worst, lo, hi := 0.0, 1e18, 0.0
	var line string
	for i := warm; i+win < len(s); i += step {
		rate := float64(s[i+win]-s[i]) / 10
		dev := (rate - limit) / limit
		if abs(dev) > abs(worst) {
			worst = dev
		}
		lo, hi = min(lo, rate), max(hi, rate)
		if (i-warm)%(win) == 0 {
			line += fmt.Sprintf(" [%ds..%ds] %.3f MiB/s (%+.1f%%)", i/10, (i+win)/10, rate/(1<<20), dev*100)
		}
	}
	if hi == 0 {
		b.Fatalf("no complete 10 s window in %d samples", len(s))
	}
	total := float64(s[len(s)-1]-s[0]) / (float64(len(s)-1) / 10)
	b.Logf("limit %.2f MiB/s; %d objects; mean %.3f MiB/s; 10 s windows min %.3f max %.3f MiB/s, worst %+.2f%%;%s",
		limit/(1<<20), objects, total/(1<<20), lo/(1<<20), hi/(1<<20), worst*100, line)
	b.ReportMetric(worst*100, "worst-%")
	b.ReportMetric(lo/(1<<20), "min-MiB/s")
	b.ReportMetric(hi/(1<<20), "max-MiB/s")
	b.ReportMetric(float64(objects), "objects")
	if abs(worst) > 0.05 {
		b.Logf("OUTSIDE ±5%%")
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
