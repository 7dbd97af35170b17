package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

// The worker ingress scenarios, through the real worker with default
// settings like the egress ones (bench/worker.go):
//
//   - ingress latency on each of ingressServers: one new object a second
//     under the ingress prefix; the time from the PUT's answer until the
//     file is on the device (os.Stat polled every 10 ms);
//   - the first object after a quiet spell (-worker-ingress-quiet) on each;
//   - idle ingress: N objects under the prefix, downloaded, then the
//     worker's CPU and S3 requests over a window once adaptive polling has
//     reached its cap.

const ingressPrefix = "in"

// ingressServers are the servers of the ingress latency scenarios: MinIO
// whose notification stream works (bin/minio-push), MinIO as released
// (bin/minio: its stream is held back, the worker polls), Ceph RGW and
// versitygw (no notifications: polling).
var ingressServers = []string{"minio-push", "minio", "ceph-rgw", "versitygw"}

func ingressScenarioNames(o options) []string {
	var names []string
	for _, s := range ingressServers {
		names = append(names, "worker ingress latency "+s)
	}
	for _, s := range ingressServers {
		names = append(names, "worker ingress quiet "+s)
	}
	for _, n := range o.ingressObjects {
		names = append(names, fmt.Sprintf("worker idle ingress %d objects", n))
	}
	return names
}

// startIngressServer starts the named server of the latency scenarios and
// returns its endpoint ("" for the bench's versitygw), a description and
// how to stop it.
func startIngressServer(o options, name string) (endpoint, what string, stop func(), err error) {
	var s *s3server.Server
	switch name {
	case "minio-push":
		s, err = s3server.StartMinIOPush(s3server.Options{Binary: filepath.Join(o.repo, "bin", "minio-push"), Dir: filepath.Join(o.workDir, name)})
		what = "MinIO + flush patch, bucket notifications"
	case "minio":
		s, err = s3server.StartMinIO(s3server.Options{Binary: filepath.Join(o.repo, "bin", "minio"), Dir: filepath.Join(o.workDir, name)})
		what = "MinIO as released, stream held back: polling"
	case "ceph-rgw":
		s, err = s3server.StartCephRGW(s3server.Options{Dir: filepath.Join(o.workDir, name)})
		what = "Ceph RGW 16.2, no notifications: polling"
	case "versitygw":
		return "", "versitygw, no notifications: polling", func() {}, nil
	default:
		return "", "", nil, fmt.Errorf("unknown server %q", name)
	}
	if err != nil {
		return "", "", nil, err
	}
	return s.Endpoint(), what, s.Stop, nil
}

func runIngressScenario(o options, srv *server, pods *podmantest.Service, i int, name string) (string, error) {
	for _, kind := range []string{"latency", "quiet"} {
		server, ok := strings.CutPrefix(name, "worker ingress "+kind+" ")
		if !ok {
			continue
		}
		endpoint, what, stop, err := startIngressServer(o, server)
		if err != nil {
			return "", err
		}
		defer stop()
		if kind == "quiet" {
			return ingressQuiet(o, srv, pods, i, endpoint, what)
		}
		return ingressLatency(o, srv, pods, i, endpoint, what)
	}
	var n int
	fmt.Sscanf(name, "worker idle ingress %d objects", &n)
	return ingressIdle(o, srv, pods, i, n)
}

func s3Client(endpoint string) (*minio.Client, error) {
	return minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
}

// newIngressRun prepares a worker run with one ingress mapping against
// endpoint (host:port; "" is the bench's versitygw through its proxy) and
// returns a client of that server, not counted by the proxy.
func newIngressRun(o options, srv *server, i int, endpoint string) (*workerRun, *minio.Client, error) {
	r, err := newWorkerRun(o, srv, i)
	if err != nil {
		return nil, nil, err
	}
	r.ingress, r.s3 = true, endpoint
	var c *minio.Client
	if endpoint == "" {
		c, err = srv.backendClient()
	} else {
		c, err = s3Client(endpoint)
		if err == nil {
			err = c.MakeBucket(context.Background(), r.bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		}
	}
	return r, c, err
}

func (r *workerRun) ingressPath(rel string) string {
	return filepath.Join(r.dataDir, "volumes", benchWorkload, ingressPrefix, filepath.FromSlash(rel))
}

func putSmall(c *minio.Client, bucket, key string, body []byte) error {
	_, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{DisableContentSha256: true})
	return err
}

func waitPath(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ingressLatency puts one object a second for o.workerWrites seconds and
// measures how long each takes to reach the device.
func ingressLatency(o options, srv *server, pods *podmantest.Service, i int, endpoint, what string) (string, error) {
	r, c, err := newIngressRun(o, srv, i, endpoint)
	if err != nil {
		return "", err
	}
	if err := r.start(o, srv, pods); err != nil {
		return "", err
	}
	defer r.stop()
	if err := putSmall(c, r.bucket, ingressPrefix+"/warmup.txt", []byte("warm up\n")); err != nil {
		return "", err
	}
	if err := waitPath(r.ingressPath("warmup.txt"), 3*time.Minute); err != nil {
		return "", fmt.Errorf("%w; worker log tail:\n%s", err, r.tail())
	}
	pid0, starts0 := r.workerPid()
	time.Sleep(2 * time.Second)

	lat, missing, err := arrivals(o.workerWrites, 10*time.Millisecond, func(k int) (string, error) {
		name := fmt.Sprintf("lat-%03d.txt", k)
		return r.ingressPath(name), putSmall(c, r.bucket, ingressPrefix+"/"+name, []byte(strings.Repeat(fmt.Sprintf("sample %d\n", k), 64)))
	}, func(path string) bool {
		_, err := os.Stat(path)
		return err == nil
	})
	if err != nil {
		return "", err
	}
	if pid, starts := r.workerPid(); pid != pid0 || starts != starts0 {
		return "", fmt.Errorf("the worker restarted during the measurement; log tail:\n%s", r.tail())
	}
	line := fmt.Sprintf("worker ingress latency (%s): %d objects, 1/s: p50 %.3f s, p95 %.3f s, max %.3f s, min %.3f s (file polled every 10 ms; %s)",
		what, o.workerWrites, percentile(lat, 50), percentile(lat, 95), lat[len(lat)-1], lat[0], podNote(pods))
	if missing > 0 {
		line += fmt.Sprintf("; %d never arrived within a minute", missing)
	}
	return line, nil
}

// ingressQuiet measures the first object after a quiet spell: a warm-up
// object, o.ingressQuiet with nothing new (adaptive polling grows to its
// cap), then one object and the time until it is on the device.
func ingressQuiet(o options, srv *server, pods *podmantest.Service, i int, endpoint, what string) (string, error) {
	r, c, err := newIngressRun(o, srv, i, endpoint)
	if err != nil {
		return "", err
	}
	if err := r.start(o, srv, pods); err != nil {
		return "", err
	}
	defer r.stop()
	if err := putSmall(c, r.bucket, ingressPrefix+"/warmup.txt", []byte("warm up\n")); err != nil {
		return "", err
	}
	if err := waitPath(r.ingressPath("warmup.txt"), 3*time.Minute); err != nil {
		return "", fmt.Errorf("%w; worker log tail:\n%s", err, r.tail())
	}
	time.Sleep(o.ingressQuiet)
	put := time.Now()
	if err := putSmall(c, r.bucket, ingressPrefix+"/after-quiet.txt", []byte("after quiet\n")); err != nil {
		return "", err
	}
	if err := waitPath(r.ingressPath("after-quiet.txt"), 15*time.Minute); err != nil {
		return "", fmt.Errorf("%w; worker log tail:\n%s", err, r.tail())
	}
	return fmt.Sprintf("worker ingress, first object after %s quiet (%s): %.3f s (file polled every 10 ms; %s)",
		o.ingressQuiet, what, time.Since(put).Seconds(), podNote(pods)), nil
}

// ingressIdle puts n objects under the ingress prefix, lets the worker
// download them, waits o.ingressSettle for adaptive polling to reach its
// cap, then measures the worker's CPU and S3 requests over o.ingressIdle.
func ingressIdle(o options, srv *server, pods *podmantest.Service, i, n int) (string, error) {
	r, _, err := newIngressRun(o, srv, i, "")
	if err != nil {
		return "", err
	}
	src := filepath.Join(o.workDir, "data", fmt.Sprintf("ingress-%d", n))
	if err := makeFiles(src, n, 64); err != nil {
		return "", err
	}
	c, err := srv.client()
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	if err := rawPut(c, src, r.bucket, ingressPrefix, o.concurrency); err != nil {
		return "", err
	}
	seeded := time.Since(t0)
	if err := r.start(o, srv, pods); err != nil {
		return "", err
	}
	defer r.stop()
	t1 := time.Now()
	deadline := t1.Add(time.Duration(n/100+300) * time.Second)
	for {
		got := 0
		_ = filepath.WalkDir(r.ingressPath("."), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				got++
			}
			return nil
		})
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("only %d of %d files after %v; log tail:\n%s", got, n, time.Since(t1).Round(time.Second), r.tail())
		}
		time.Sleep(5 * time.Second)
	}
	download := time.Since(t1)
	time.Sleep(o.ingressSettle)
	pid, starts := r.workerPid()
	cpu0, err := procCPU(pid)
	if err != nil {
		return "", err
	}
	req0 := srv.proxy.count()
	w0 := time.Now()
	time.Sleep(o.ingressIdle)
	cpu1, err := procCPU(pid)
	if err != nil {
		return "", fmt.Errorf("worker gone: %w", err)
	}
	window := time.Since(w0)
	reqs := srv.proxy.count() - req0
	if p, s := r.workerPid(); p != pid || s != starts {
		return "", fmt.Errorf("the worker restarted during the measurement; log tail:\n%s", r.tail())
	}
	cpu := cpu1 - cpu0
	return fmt.Sprintf("worker idle ingress %d objects: %.3f %% of one core (%.2f s cpu over %.0f s, after %s settling), %d S3 requests in the window (%.0f a day at that rate); seeding took %.0f s, first download %.0f s; %s",
		n, 100*cpu.Seconds()/window.Seconds(), cpu.Seconds(), window.Seconds(), o.ingressSettle, reqs, float64(reqs)*86400/window.Seconds(),
		seeded.Seconds(), download.Seconds(), podNote(pods)), nil
}
