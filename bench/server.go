package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	accessKey = "minioadmin"
	secretKey = "minioadmin"
)

// server is versitygw with a request-counting proxy in front of it.
type server struct {
	cmd     *exec.Cmd
	proxy   *countingProxy
	ln      net.Listener
	url     string // the proxy's URL: what every tool talks to
	backend string // versitygw's own host:port, for the bench's uncounted requests
	root    string // the server's storage directory
}

func startServer(o options) (*server, error) {
	bin := filepath.Join(o.repo, "bin", "versitygw")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("versitygw not found at %s: run `make versitygw`", bin)
	}
	root := filepath.Join(o.workDir, "s3")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	backend := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", backend, "--access", accessKey, "--secret", secretKey, "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	target, _ := url.Parse("http://" + backend)
	p := &countingProxy{rp: httputil.NewSingleHostReverseProxy(target)}
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	go http.Serve(ln, p)
	s := &server{cmd: cmd, proxy: p, ln: ln, url: "http://" + ln.Addr().String(), backend: backend, root: root}
	if err := s.waitReady(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) stop() {
	s.ln.Close()
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func (s *server) client() (*minio.Client, error) {
	u, _ := url.Parse(s.url)
	return minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
}

func (s *server) waitReady() error {
	c, err := s.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.ListBuckets(context.Background())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// makeBucket creates a bucket if it does not exist yet.
func (s *server) makeBucket(name string) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if ok, err := c.BucketExists(ctx, name); err == nil && ok {
		return nil
	}
	return c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// countingProxy forwards to the server and counts the requests it forwards.
type countingProxy struct {
	rp *httputil.ReverseProxy
	n  atomic.Int64
}

func (p *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.n.Add(1)
	p.rp.ServeHTTP(w, r)
}

func (p *countingProxy) reset()       { p.n.Store(0) }
func (p *countingProxy) count() int64 { return p.n.Load() }

func maxRSSKiB(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// cpu is the server's user+system time so far.
func (s *server) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): state is the
	// 3rd field, utime the 14th and stime the 15th.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// selfCPU is this process's user+system time (the counting proxy's cost).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
