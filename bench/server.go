package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

const (
	accessKey = s3server.AccessKey
	secretKey = s3server.SecretKey
)

// server is versitygw with a request-counting proxy in front of it.
type server struct {
	gw      *s3server.Server
	proxy   *countingProxy
	ln      net.Listener
	url     string       // the proxy's URL: what every tool talks to
	backend string       // versitygw's own host:port, for the bench's uncounted requests
	root    string       // the server's storage directory
	bytes   *byteCounter // bytes through the proxy's connections
}

func startServer(o options) (*server, error) {
	var gw *s3server.Server
	var err error
	switch o.server {
	case "versitygw":
		gw, err = s3server.StartVersitygw(s3server.Options{
			Binary: filepath.Join(o.repo, "bin", "versitygw"),
			Dir:    filepath.Join(o.workDir, "s3"),
			Log:    os.Stderr,
			// As every production S3 server does: without it each request
			// costs the proxy a new connection, whichever tool sends it.
			KeepAlive: o.keepAlive,
		})
	case "minio":
		gw, err = s3server.StartMinIO(s3server.Options{
			Binary: filepath.Join(o.repo, "bin", "minio"),
			Dir:    filepath.Join(o.workDir, "minio"),
		})
	default:
		err = fmt.Errorf("unknown -server %q (versitygw or minio)", o.server)
	}
	if err != nil {
		return nil, err
	}
	target, _ := url.Parse(gw.URL())
	p := &countingProxy{rp: httputil.NewSingleHostReverseProxy(target)}
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gw.Stop()
		return nil, err
	}
	counter := &byteCounter{}
	go http.Serve(countingListener{ln, counter}, p)
	return &server{gw: gw, proxy: p, ln: ln, url: "http://" + ln.Addr().String(), backend: gw.Endpoint(), root: gw.Dir, bytes: counter}, nil
}

func (s *server) stop() {
	s.ln.Close()
	s.gw.Stop()
}

func (s *server) client() (*minio.Client, error) {
	u, _ := url.Parse(s.url)
	return minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
}

// removePrefix deletes the objects under prefix, through the server's own
// port (not counted).
func (s *server) removePrefix(bucket, prefix string) error {
	c, err := minio.New(s.backend, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
	if err != nil {
		return err
	}
	ctx := context.Background()
	objects := c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true})
	for e := range c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return e.Err
		}
	}
	return nil
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.gw.Pid()))
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
