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
//   - ingress latency on MinIO (bucket notifications) and on versitygw
//     (polling): one new object a second under the ingress prefix; the time
//     from the PUT's answer until the file is on the device (os.Stat polled
//     every 10 ms);
//   - idle ingress: N objects under the prefix, downloaded, then the
//     worker's CPU and S3 requests over a window once adaptive polling has
//     reached its cap.

const ingressPrefix = "in"

func ingressScenarioNames(o options) []string {
	names := []string{"worker ingress latency minio", "worker ingress latency versitygw"}
	for _, n := range o.ingressObjects {
		names = append(names, fmt.Sprintf("worker idle ingress %d objects", n))
	}
	return names
}

func runIngressScenario(o options, srv *server, pods *podmantest.Service, i int, name string) (string, error) {
	switch name {
	case "worker ingress latency minio":
		m, err := s3server.StartMinIO(s3server.Options{Binary: filepath.Join(o.repo, "bin", "minio"), Dir: filepath.Join(o.workDir, "minio")})
		if err != nil {
			return "", err
		}
		defer m.Stop()
		return ingressLatency(o, srv, pods, i, m.Endpoint(), "MinIO, bucket notifications")
	case "worker ingress latency versitygw":
		return ingressLatency(o, srv, pods, i, "", "versitygw, polling")
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
