// Command growlog measures issue 26's scenario: a log held open and growing
// by 1 KiB a second from 64 MiB, synced by the datasync engine (growing-file
// snapshots and part copies) and, side by side, by `rclone copy` run every
// 30 s, each against its own bucket of one server, through counting proxies.
// It prints, for each, the object's worst lag behind the file (sampled each
// second: how long the oldest byte not in the object has been in the file)
// and the bytes sent to the server (request bytes on the wire). rclone runs
// twice: as is, and with --local-no-check-updated.
//
//	go run ./bench/growlog -minutes 10 -server versitygw
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

func main() {
	minutes := flag.Float64("minutes", 10, "how long the log grows")
	startMiB := flag.Int("start-mib", 64, "initial size of the log")
	rate := flag.Int("bytes-per-second", 1024, "growth")
	server := flag.String("server", "versitygw", "versitygw or minio")
	bin := flag.String("bin", "bin", "directory of the server binaries (absolute, or relative to the working directory)")
	flag.Parse()
	if err := run(time.Duration(*minutes*float64(time.Minute)), int64(*startMiB)<<20, *rate, *server, *bin); err != nil {
		log.Fatal(err)
	}
}

// proxy forwards TCP to target and counts the bytes clients send.
type proxy struct {
	ln   net.Listener
	sent atomic.Int64
}

func startProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(c, s); c.Close() }()
				_, _ = io.Copy(countingWriter{s, &p.sent}, c)
			}()
		}
	}()
	return p, nil
}

// countingWriter counts as it writes (connections stay open: counting at
// their end would miss kept-alive ones).
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// growth is the history of a growing file: when it reached each size.
type growth struct {
	mu    sync.Mutex
	sizes []int64
	times []time.Time
}

func (g *growth) add(size int64, t time.Time) {
	g.mu.Lock()
	g.sizes, g.times = append(g.sizes, size), append(g.times, t)
	g.mu.Unlock()
}

// lag is how long the first byte past objSize has been in the file at now.
func (g *growth) lag(objSize int64, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := sort.Search(len(g.sizes), func(i int) bool { return g.sizes[i] > objSize })
	if i == len(g.sizes) {
		return 0
	}
	return now.Sub(g.times[i])
}

// grow writes the file: startSize bytes, then rate bytes a second through
// one descriptor held open, until ctx ends.
func grow(ctx context.Context, path string, startSize int64, rate int, g *growth) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	for n := int64(0); n < startSize; n += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	size := startSize
	g.add(size, time.Now())
	line := make([]byte, rate)
	for i := range line {
		line[i] = byte('0' + i%10)
	}
	line[len(line)-1] = '\n'
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := f.Write(line); err != nil {
			return err
		}
		size += int64(len(line))
		g.add(size, time.Now())
	}
}

// sample HEADs the object every second while ctx runs and returns the worst lag.
func sample(ctx context.Context, c *minio.Client, bucket, key string, g *growth, out *os.File, who string) time.Duration {
	var worst time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return worst
		case <-tick.C:
		}
		now := time.Now()
		size := int64(-1)
		if info, err := c.StatObject(ctx, bucket, key, minio.StatObjectOptions{}); err == nil {
			size = info.Size
		}
		l := g.lag(size, now)
		worst = max(worst, l)
		fmt.Fprintf(out, "%s\t%s\tobject=%d\tlag=%.1fs\n", now.Format(time.TimeOnly), who, size, l.Seconds())
	}
}

func run(d time.Duration, startSize int64, rate int, server, bin string) error {
	work, err := os.MkdirTemp("", "growlog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	opts := s3server.Options{Dir: filepath.Join(work, "s3"), Buckets: []string{"engine", "rclone", "rclone-nocheck"}, KeepAlive: true}
	var srv *s3server.Server
	switch server {
	case "versitygw":
		opts.Binary, _ = filepath.Abs(filepath.Join(bin, "versitygw"))
		srv, err = s3server.StartVersitygw(opts)
	case "minio":
		opts.Binary, _ = filepath.Abs(filepath.Join(bin, "minio"))
		srv, err = s3server.StartMinIO(opts)
	default:
		return fmt.Errorf("server %q", server)
	}
	if err != nil {
		return err
	}
	defer srv.Stop()
	client, err := srv.Client()
	if err != nil {
		return err
	}
	pe, err := startProxy(srv.Endpoint())
	if err != nil {
		return err
	}
	pr, err := startProxy(srv.Endpoint())
	if err != nil {
		return err
	}
	pn, err := startProxy(srv.Endpoint())
	if err != nil {
		return err
	}
	for _, d := range []string{"engine/logs", "rclone/logs", "rclone-nocheck/logs", "state"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return err
		}
	}
	fmt.Printf("growlog: %s of growth by %d B/s from %d MiB, server %s, %s\n", d, rate, startSize>>20, server, time.Now().UTC().Format(time.RFC3339))

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ge, gr, gn growth
	var wg sync.WaitGroup
	wg.Go(func() { _ = grow(ctx, filepath.Join(work, "engine/logs/app.log"), startSize, rate, &ge) })
	wg.Go(func() { _ = grow(ctx, filepath.Join(work, "rclone/logs/app.log"), startSize, rate, &gr) })
	wg.Go(func() { _ = grow(ctx, filepath.Join(work, "rclone-nocheck/logs/app.log"), startSize, rate, &gn) })

	// The engine, as the device worker runs it (defaults: 15 s passes, 30 s
	// staleness, watchers on).
	logger, _ := zap.NewProduction()
	eng, err := datasync.New(datasync.Options{StateDir: filepath.Join(work, "state"), MinFreeBytes: -1, MinFreePercent: -1}, logger)
	if err != nil {
		return err
	}
	defer eng.Close()
	ep := &datasync.Endpoint{Host: "127.0.0.1", Port: pe.port(), Region: s3server.Region, AccessKey: s3server.AccessKey, SecretKey: s3server.SecretKey}
	if err := eng.Configure(ep, []datasync.Mapping{{ID: "logs", Direction: datasync.Egress, Root: filepath.Join(work, "engine"),
		LocalDir: filepath.Join(work, "engine/logs"), Bucket: "engine", Prefix: "remote/log"}}); err != nil {
		return err
	}
	wg.Go(func() { _ = eng.Run(ctx) })

	// rclone copy every 30 s: as is (it refuses a file that changes while
	// it reads it), and with --local-no-check-updated (it sends what it read).
	rclone := func(p *proxy, name string, extra ...string) {
		conf := filepath.Join(work, name+".conf")
		if err := os.WriteFile(conf, fmt.Appendf(nil, "[s3]\ntype = s3\nprovider = Other\naccess_key_id = %s\nsecret_access_key = %s\nendpoint = http://127.0.0.1:%d\nregion = us-east-1\n",
			s3server.AccessKey, s3server.SecretKey, p.port()), 0o600); err != nil {
			log.Print(err)
			return
		}
		for {
			args := append([]string{"--config", conf, "copy", filepath.Join(work, name, "logs"), "s3:" + name + "/remote/log"}, extra...)
			cmd := exec.CommandContext(ctx, "rclone", args...)
			cmd.Env = append(os.Environ(), "AWS_CA_BUNDLE=")
			if out, err := cmd.CombinedOutput(); err != nil && ctx.Err() == nil {
				fmt.Printf("%s: %v: %.300s\n", name, err, out)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
			}
		}
	}
	wg.Go(func() { rclone(pr, "rclone") })
	wg.Go(func() { rclone(pn, "rclone-nocheck", "--local-no-check-updated") })

	raw, err := os.Create(filepath.Join(work, "samples.txt"))
	if err != nil {
		return err
	}
	var worstE, worstR, worstN time.Duration
	time.Sleep(2 * time.Second) // the 64 MiB are written
	var sw sync.WaitGroup
	sw.Go(func() { worstE = sample(ctx, client, "engine", "remote/log/app.log", &ge, raw, "engine") })
	sw.Go(func() { worstR = sample(ctx, client, "rclone", "remote/log/app.log", &gr, raw, "rclone") })
	sw.Go(func() {
		worstN = sample(ctx, client, "rclone-nocheck", "remote/log/app.log", &gn, raw, "rclone-nocheck")
	})
	sw.Wait()
	wg.Wait()
	raw.Close()
	samples, _ := os.ReadFile(filepath.Join(work, "samples.txt"))
	os.Stdout.Write(samples)
	var saved int64
	for _, st := range eng.Status() {
		saved = st.BytesSavedByPartCopy
	}
	fmt.Printf("\nresult (server %s, %s of growth by %d B/s from %d MiB):\n", server, d, rate, startSize>>20)
	fmt.Printf("  engine: worst lag %.1fs, bytes sent %d (%.1f MiB), bytes saved by part copies %d (%.1f MiB)\n",
		worstE.Seconds(), pe.sent.Load(), float64(pe.sent.Load())/(1<<20), saved, float64(saved)/(1<<20))
	fmt.Printf("  rclone copy every 30s: worst lag %.1fs, bytes sent %d (%.1f MiB)\n",
		worstR.Seconds(), pr.sent.Load(), float64(pr.sent.Load())/(1<<20))
	fmt.Printf("  rclone copy --local-no-check-updated every 30s: worst lag %.1fs, bytes sent %d (%.1f MiB)\n",
		worstN.Seconds(), pn.sent.Load(), float64(pn.sent.Load())/(1<<20))
	return nil
}
