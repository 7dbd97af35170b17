package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
)

// The worker scenarios measure what a device sees, through the real worker
// (bin/devdispatcher playing yggd, bin/device-worker with default settings,
// a private podman service running the workload) against the bench's
// versitygw:
//
//   - egress latency: one new file a second in the egress source; the time
//     from the file's close until its object answers a HEAD (polled by this
//     process, straight at versitygw, not through the counting proxy);
//   - idle CPU: with N files already uploaded, the worker's utime+stime
//     from /proc/<pid>/stat over a window, and the S3 requests it made then.
//
// They run with -worker, or when -only names them ("-only worker" runs them
// all, "-only 'worker idle'" the idle ones), and
// only use what every worker has: the configuration message and the
// volumes directory, so they measure any version of the engine unchanged.

// workerScenarioNames are the worker scenarios, for -only.
func workerScenarioNames(o options) []string {
	names := []string{"worker egress latency"}
	for _, n := range o.workerIdleFiles {
		names = append(names, fmt.Sprintf("worker idle %d files", n))
	}
	return append(names, ingressScenarioNames(o)...)
}

// selectedWorkerScenarios are the worker scenarios this run includes.
func selectedWorkerScenarios(o options) []string {
	var out []string
	for _, name := range workerScenarioNames(o) {
		// -only must say "worker": "-only egress" keeps meaning the quick
		// tool comparisons.
		if o.worker || (strings.Contains(o.only, "worker") && strings.Contains(name, o.only)) {
			out = append(out, name)
		}
	}
	return out
}

// intList is a comma-separated list of integers flag.
type intList []int

func (l *intList) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return fmt.Errorf("%q: want comma-separated counts", v)
		}
		*l = append(*l, n)
	}
	return nil
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (l *envList) String() string { return strings.Join(*l, " ") }

func (l *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*l = append(*l, v)
	return nil
}

// runWorkerScenarios runs the selected worker scenarios and returns their
// report.
func runWorkerScenarios(o options, srv *server, names []string) (string, error) {
	for _, bin := range []string{"devdispatcher", "device-worker"} {
		if _, err := os.Stat(filepath.Join(o.repo, "bin", bin)); err != nil {
			return "", fmt.Errorf("worker scenarios: %w (run make build)", err)
		}
	}
	log.Printf("worker scenarios: starting a private podman service")
	pods, err := podmantest.Launch()
	if err != nil {
		return "", fmt.Errorf("worker scenarios: %w", err)
	}
	defer pods.Close()

	var b strings.Builder
	settings := "default settings (only FLOTTA_DATA_DIR and FLOTTA_PODMAN_SOCKET set)"
	if len(o.workerEnv) > 0 {
		settings = "default settings except " + o.workerEnv.String() + " (and FLOTTA_DATA_DIR, FLOTTA_PODMAN_SOCKET)"
	}
	fmt.Fprintf(&b, "\nworker scenarios: bin/devdispatcher + bin/device-worker with %s,\n", settings)
	fmt.Fprintf(&b, "one workload (a sleeping busybox pod) with one egress mapping (one ingress mapping in the ingress scenarios), the dispatcher resending the configuration every 5 s as flotta does;\n")
	fmt.Fprintf(&b, "S3 requests are the worker's, counted by the proxy; CPU is the worker's utime+stime from /proc/<pid>/stat.\n")
	for i, name := range names {
		var line string
		var err error
		switch {
		case strings.HasPrefix(name, "worker ingress") || strings.HasPrefix(name, "worker idle ingress"):
			line, err = runIngressScenario(o, srv, pods, i, name)
		case name == "worker egress latency":
			line, err = workerLatency(o, srv, pods, i)
		default:
			var n int
			fmt.Sscanf(name, "worker idle %d files", &n)
			line, err = workerIdle(o, srv, pods, i, n)
		}
		if err != nil {
			line = fmt.Sprintf("%s: FAILED: %v", name, err)
		}
		log.Print(line)
		fmt.Fprintln(&b, line)
		// Each run deploys the workload afresh.
		_, _ = pods.Podman("pod", "rm", "-f", "-a", "-t", "0")
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&b, "load average at the end (1, 5, 15 min): %s\n", strings.Join(strings.Fields(string(la))[:3], " "))
	}
	return b.String(), nil
}

// workerRun is one devdispatcher with its worker.
type workerRun struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	dataDir string
	source  string // the egress source on the host
	bucket  string
	// s3, when set, is the server's host:port instead of the bench's
	// versitygw proxy; ingress, when set, makes the data path an ingress
	// mapping of prefix ingressPrefix into the workload's ingressPrefix.
	s3      string
	ingress bool
	mu      sync.Mutex
	pid     int
	starts  int
	stderr  strings.Builder
	done    chan struct{}
}

const (
	benchWorkload = "bench"
	egressSource  = "out"
	egressTarget  = "egress"
)

// newWorkerRun prepares a data directory and a bucket for run i; the caller
// fills the egress source before start.
func newWorkerRun(o options, srv *server, i int) (*workerRun, error) {
	r := &workerRun{
		dataDir: filepath.Join(o.workDir, fmt.Sprintf("worker-%d", i)),
		bucket:  fmt.Sprintf("worker-%d", i),
		done:    make(chan struct{}),
	}
	r.source = filepath.Join(r.dataDir, "volumes", benchWorkload, egressSource)
	if err := os.MkdirAll(r.source, 0o755); err != nil {
		return nil, err
	}
	return r, srv.makeBucket(r.bucket)
}

// start writes the configuration message and starts the dispatcher, which
// starts the worker and delivers the message.
func (r *workerRun) start(o options, srv *server, pods *podmantest.Service) error {
	hostPort := strings.TrimPrefix(srv.url, "http://")
	if r.s3 != "" {
		hostPort = r.s3
	}
	host, port, _ := strings.Cut(hostPort, ":")
	paths := map[string]any{"egress": []any{map[string]any{"source": egressSource, "target": egressTarget}}}
	if r.ingress {
		paths = map[string]any{"ingress": []any{map[string]any{"source": ingressPrefix, "target": ingressPrefix}}}
	}
	p, _ := strconv.Atoi(port)
	msg := map[string]any{
		"device_id": "bench-device", "version": "1", "workloads_monitoring_interval": 15,
		"configuration": map[string]any{
			"heartbeat": map[string]any{"period_seconds": 60},
			"storage": map[string]any{"s3": map[string]any{
				"bucket_host": "http://" + host, "bucket_port": p, "bucket_name": r.bucket, "bucket_region": "us-east-1",
				"aws_access_key_id":     base64.StdEncoding.EncodeToString([]byte(accessKey)),
				"aws_secret_access_key": base64.StdEncoding.EncodeToString([]byte(secretKey)),
			}},
		},
		"workloads": []any{map[string]any{
			"name": benchWorkload, "namespace": "default",
			"specification": "containers:\n- name: sleeper\n  image: " + podmantest.Image + "\n  imagePullPolicy: Never\n" +
				"  command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n",
			"data": paths,
		}},
		"secrets": []any{},
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	msgFile := filepath.Join(r.dataDir, "..", filepath.Base(r.dataDir)+"-message.json")
	if err := os.WriteFile(msgFile, data, 0o600); err != nil {
		return err
	}
	args := []string{"--worker", filepath.Join(o.repo, "bin", "device-worker"),
		"--config", msgFile,
		"--env", "FLOTTA_DATA_DIR=" + r.dataDir,
		"--env", "FLOTTA_PODMAN_SOCKET=" + pods.URI}
	for _, kv := range o.workerEnv {
		args = append(args, "--env", kv)
	}
	r.cmd = exec.Command(filepath.Join(o.repo, "bin", "devdispatcher"), args...)
	r.cmd.Env = cleanEnv()
	r.cmd.Stderr = &lockedBuilder{mu: &r.mu, b: &r.stderr}
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		return err
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := r.cmd.Start(); err != nil {
		return err
	}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec struct {
				Kind string `json:"kind"`
				Pid  int    `json:"pid"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Kind == "worker-start" {
				r.mu.Lock()
				r.pid = rec.Pid
				r.starts++
				r.mu.Unlock()
			}
		}
	}()
	return nil
}

// workerPid is the running worker's pid and how many times it was started.
func (r *workerRun) workerPid() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid, r.starts
}

// stop quits the dispatcher, which stops the worker.
func (r *workerRun) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_, _ = io.WriteString(r.stdin, "quit\n")
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
	}
	_ = r.cmd.Wait()
}

// tail is the end of the dispatcher's stderr (the worker's log), for errors.
func (r *workerRun) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stderr.String()
	if len(s) > 1500 {
		s = s[len(s)-1500:]
	}
	return s
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 8<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

// backendClient talks to versitygw directly, so that the bench's own polls
// are not counted as the worker's requests.
func (s *server) backendClient() (*minio.Client, error) {
	return minio.New(s.backend, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
}

// waitObject polls HEAD until bucket/key exists.
func waitObject(c *minio.Client, bucket, key string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		_, err := c.StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
		if err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s did not appear within %v: %v", key, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// workerLatency writes one new file a second for o.workerWrites seconds and
// measures how long each takes to appear in the bucket.
func workerLatency(o options, srv *server, pods *podmantest.Service, i int) (string, error) {
	r, err := newWorkerRun(o, srv, i)
	if err != nil {
		return "", err
	}
	if err := r.start(o, srv, pods); err != nil {
		return "", err
	}
	defer r.stop()
	c, err := srv.backendClient()
	if err != nil {
		return "", err
	}
	// Ready: the mapping runs once a first file went up.
	if err := os.WriteFile(filepath.Join(r.source, "warmup.txt"), []byte("warm up\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := waitObject(c, r.bucket, egressTarget+"/warmup.txt", 3*time.Minute); err != nil {
		return "", fmt.Errorf("%w; worker log tail:\n%s", err, r.tail())
	}
	pid0, starts0 := r.workerPid()
	time.Sleep(2 * time.Second)

	lat, missing, err := arrivals(o.workerWrites, 50*time.Millisecond, func(k int) (string, error) {
		name := fmt.Sprintf("lat-%03d.txt", k)
		body := strings.Repeat(fmt.Sprintf("sample %d\n", k), 64)
		return egressTarget + "/" + name, os.WriteFile(filepath.Join(r.source, name), []byte(body), 0o644)
	}, func(key string) bool {
		_, err := c.StatObject(context.Background(), r.bucket, key, minio.StatObjectOptions{})
		return err == nil
	})
	if err != nil {
		return "", err
	}
	if pid, starts := r.workerPid(); pid != pid0 || starts != starts0 {
		return "", fmt.Errorf("the worker restarted during the measurement; log tail:\n%s", r.tail())
	}
	line := fmt.Sprintf("worker egress latency: %d files, 1/s: p50 %.2f s, p95 %.2f s, max %.2f s, min %.2f s (HEAD polled every 50 ms; %s)",
		o.workerWrites, percentile(lat, 50), percentile(lat, 95), lat[len(lat)-1], lat[0], podNote(pods))
	if missing > 0 {
		line += fmt.Sprintf("; %d never appeared within a minute", missing)
	}
	return line, nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p int) float64 {
	k := (p*len(sorted) + 99) / 100
	return sorted[max(k, 1)-1]
}

// workerIdle puts n files in the egress source, lets the worker upload them
// and settle, then measures its CPU and S3 requests over o.workerIdle.
func workerIdle(o options, srv *server, pods *podmantest.Service, i, n int) (string, error) {
	r, err := newWorkerRun(o, srv, i)
	if err != nil {
		return "", err
	}
	// 1,000 files a directory, 64 bytes each.
	for k := range n {
		dir := filepath.Join(r.source, fmt.Sprintf("d%03d", k/1000))
		if k%1000 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", k)), []byte(strings.Repeat("x", 63)+"\n"), 0o644); err != nil {
			return "", err
		}
	}
	if err := r.start(o, srv, pods); err != nil {
		return "", err
	}
	defer r.stop()
	c, err := srv.backendClient()
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	deadline := t0.Add(time.Duration(n/100+300) * time.Second)
	for {
		got := 0
		for obj := range c.ListObjects(context.Background(), r.bucket, minio.ListObjectsOptions{Prefix: egressTarget + "/", Recursive: true}) {
			if obj.Err != nil {
				return "", obj.Err
			}
			got++
		}
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("only %d of %d objects after %v; log tail:\n%s", got, n, time.Since(t0).Round(time.Second), r.tail())
		}
		time.Sleep(5 * time.Second)
	}
	upload := time.Since(t0)
	// Let the worker finish what follows a first upload (journal commits,
	// the next periodic pass) before the window opens.
	time.Sleep(o.workerSettle)
	pid, starts := r.workerPid()
	cpu0, err := procCPU(pid)
	if err != nil {
		return "", err
	}
	req0 := srv.proxy.count()
	w0 := time.Now()
	time.Sleep(o.workerIdle)
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
	return fmt.Sprintf("worker idle %d files: %.2f %% of one core (%.2f s cpu over %.0f s), %d S3 requests in the window; first upload took %.0f s; %s",
		n, 100*cpu.Seconds()/window.Seconds(), cpu.Seconds(), window.Seconds(), reqs, upload.Seconds(), podNote(pods)), nil
}

// podNote says whether the workload's container runs: the idle worker then
// also monitors it, as on a device.
func podNote(pods *podmantest.Service) string {
	out, err := pods.Podman("ps", "--format", "{{.Names}} {{.Status}}")
	if err == nil && strings.Contains(out, benchWorkload) && strings.Contains(out, "Up") {
		return "workload running"
	}
	log.Printf("podman ps: %q %v", out, err)
	return "workload NOT running"
}

// procCPU is a process's utime+stime.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ
}
