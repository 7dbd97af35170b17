package fault_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// deadPodman is a podman socket nobody serves: workloads fail to deploy
// (reported), sync runs regardless.
const deadPodman = "unix:///nonexistent/flotta-fault/podman.sock"

// record is one JSON line of devdispatcher.
type record map[string]any

func (r record) str(k string) string { s, _ := r[k].(string); return s }

func (r record) isHeartbeat() bool {
	return r.str("kind") == "send" && r.str("directive") == "heartbeat"
}

func (r record) heartbeat() (worker.Heartbeat, error) {
	var hb worker.Heartbeat
	b, err := json.Marshal(r["content"])
	if err == nil {
		err = json.Unmarshal(b, &hb)
	}
	return hb, err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// dispatcher is a running devdispatcher with its worker.
type dispatcher struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  syncBuffer // raw JSON lines
	stderr  syncBuffer // the worker's (and dispatcher's) logs
	mu      sync.Mutex
	records []record
	done    chan struct{}
	stopped bool
}

// startDispatcher runs devdispatcher delivering msg (a file) with the
// worker's data directory dataDir, extra worker environment env (K=V) and
// extra dispatcher args.
func startDispatcher(t *testing.T, dataDir, msg string, env []string, args ...string) *dispatcher {
	t.Helper()
	full := []string{"--worker", filepath.Join(binDir, "device-worker"), "--config", msg,
		"--log-level", "DEBUG", "--env", "FLOTTA_DATA_DIR=" + dataDir}
	for _, e := range env {
		full = append(full, "--env", e)
	}
	full = append(full, args...)
	d := &dispatcher{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(filepath.Join(binDir, "devdispatcher"), full...)
	var err error
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start devdispatcher: %v", err)
	}
	go func() {
		defer close(d.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 4<<20), 4<<20)
		for sc.Scan() {
			_, _ = d.stdout.Write(append(sc.Bytes(), '\n'))
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				d.mu.Lock()
				d.records = append(d.records, r)
				d.mu.Unlock()
			}
		}
	}()
	t.Cleanup(d.stop)
	return d
}

// stop quits the dispatcher (SIGTERM to the worker) and scans everything
// the run printed for credentials.
func (d *dispatcher) stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	_, _ = io.WriteString(d.stdin, "quit\n")
	exited := make(chan struct{})
	go func() { <-d.done; _ = d.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-exited
		d.t.Errorf("devdispatcher did not quit within 30s")
	}
	d.scan()
	if d.t.Failed() {
		d.t.Logf("devdispatcher stderr (tail):\n%s", tail(d.stderr.Bytes(), 12000))
		d.t.Logf("devdispatcher records (tail):\n%s", tail(d.stdout.Bytes(), 6000))
	}
}

// scan checks the worker's log lines and the heartbeats it sent.
func (d *dispatcher) scan() (lines int) {
	n, _ := scanSecrets(d.t, "worker log", d.stderr.Bytes())
	var sends bytes.Buffer
	for _, line := range bytes.Split(d.stdout.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte(`"kind":"send"`)) {
			sends.Write(line)
			sends.WriteByte('\n')
		}
	}
	m, _ := scanSecrets(d.t, "heartbeat", sends.Bytes())
	return n + m
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (d *dispatcher) since(from int) []record {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]record(nil), d.records[min(from, len(d.records)):]...)
}

func (d *dispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.records)
}

// wait returns the first record from position from on that matches.
func (d *dispatcher) wait(what string, from int, timeout time.Duration, match func(record) bool) (record, int) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for i, r := range d.since(from) {
			if match(r) {
				return r, from + i
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits for a worker log line containing s.
func (d *dispatcher) waitLog(s string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !bytes.Contains(d.stderr.Bytes(), []byte(s)) {
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %s waiting for the log line %q", timeout, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func kind(k string) func(record) bool { return func(r record) bool { return r.str("kind") == k } }

// workerPID waits for the worker started at or after position from.
func (d *dispatcher) workerPID(from int) int {
	d.t.Helper()
	r, _ := d.wait("worker-start", from, 20*time.Second, kind("worker-start"))
	return int(r["pid"].(float64))
}

// heartbeats decodes the heartbeats from position from on.
func (d *dispatcher) heartbeats(from int) []worker.Heartbeat {
	var out []worker.Heartbeat
	for _, r := range d.since(from) {
		if r.isHeartbeat() {
			if hb, err := r.heartbeat(); err == nil {
				out = append(out, hb)
			}
		}
	}
	return out
}

func (d *dispatcher) command(line string) {
	d.t.Helper()
	if _, err := io.WriteString(d.stdin, line+"\n"); err != nil {
		d.t.Fatalf("dispatcher command %q: %v", line, err)
	}
}

// ---- configuration messages ----

type dataPath struct{ Source, Target string }

// message is a configuration message with storage on srv (with the given
// credentials) and one workload "w" with these data paths.
func message(srv *s3test.Server, version, access, secret string, egress, ingress []dataPath) map[string]any {
	paths := func(ps []dataPath) []any {
		out := []any{}
		for _, p := range ps {
			out = append(out, map[string]any{"source": p.Source, "target": p.Target})
		}
		return out
	}
	enc := base64.StdEncoding.EncodeToString
	return map[string]any{
		"device_id": "fault-device", "version": version, "workloads_monitoring_interval": 15,
		"configuration": map[string]any{
			"heartbeat": map[string]any{"period_seconds": 1},
			"storage": map[string]any{"s3": map[string]any{
				"bucket_host": "http://" + srv.Host, "bucket_port": srv.Port, "bucket_name": bucket,
				"bucket_region": s3test.Region, "aws_access_key_id": enc([]byte(access)),
				"aws_secret_access_key": enc([]byte(secret)),
			}},
		},
		"workloads": []any{map[string]any{
			"name": "w", "namespace": "default",
			"specification": "containers:\n- name: c\n  image: localhost/flotta-fault:none\n",
			"data":          map[string]any{"egress": paths(egress), "ingress": paths(ingress)},
		}},
		"secrets": []any{},
	}
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- processes ----

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name "(...)": state is field 3; utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return u + st, nil
}

const ticksPerSecond = 100.0

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// mount mounts a tmpfs of the given size at dir and unmounts it when the
// test ends. We are root: a failure is fatal, never a skip.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs -o %s tmpfs %s: %v: %s (the fault suite runs as root, see fault/README.md)", opts, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			// Something still holds it: lazy unmount so the host is left clean.
			_ = exec.Command("umount", "-l", dir).Run()
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}
