// Package e2e_test builds the real device-worker and devdispatcher and runs
// them together over real abstract unix sockets: the dispatcher starts the
// worker the way yggd does, and the tests read its JSON-line record.
package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/worker"
)

const buildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flotta-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-tags", buildTags, "-o", dir+"/", "./cmd/device-worker", "./cmd/devdispatcher")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// record is one JSON line of the dispatcher.
type record map[string]any

func (r record) str(k string) string { s, _ := r[k].(string); return s }

// heartbeat decodes a "send" record's content.
func (r record) heartbeat(t *testing.T) worker.Heartbeat {
	t.Helper()
	b, err := json.Marshal(r["content"])
	require.NoError(t, err)
	var hb worker.Heartbeat
	require.NoError(t, json.Unmarshal(b, &hb))
	return hb
}

type devDispatcher struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	dataDir string
	mu      sync.Mutex
	records []record
	stderr  strings.Builder
}

// startDispatcher runs devdispatcher with the worker's data directory in a
// temporary directory, plus args.
func startDispatcher(t *testing.T, args ...string) *devDispatcher {
	t.Helper()
	d := &devDispatcher{dataDir: filepath.Join(t.TempDir(), "data")}
	args = append([]string{
		"--worker", filepath.Join(binDir, "device-worker"),
		"--env", "FLOTTA_DATA_DIR=" + d.dataDir,
		"--restart-delay", "100ms", "--log-level", "debug",
	}, args...)
	d.cmd = exec.Command(filepath.Join(binDir, "devdispatcher"), args...)
	var err error
	d.stdin, err = d.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := d.cmd.StdoutPipe()
	require.NoError(t, err)
	d.cmd.Stderr = &lockedWriter{mu: &d.mu, b: &d.stderr}
	require.NoError(t, d.cmd.Start())
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				d.mu.Lock()
				d.records = append(d.records, r)
				d.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_, _ = io.WriteString(d.stdin, "quit\n")
		done := make(chan error, 1)
		go func() { <-readDone; done <- d.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			t.Errorf("devdispatcher did not quit")
		}
		if t.Failed() {
			d.mu.Lock()
			t.Logf("devdispatcher stderr:\n%s", d.stderr.String())
			for _, r := range d.records {
				b, _ := json.Marshal(r)
				t.Logf("record: %s", b)
			}
			d.mu.Unlock()
		}
	})
	return d
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (d *devDispatcher) command(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(d.stdin, line+"\n")
	require.NoError(t, err)
}

// count is the number of records so far, a position for waitFrom.
func (d *devDispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.records)
}

func (d *devDispatcher) since(from int) []record {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]record(nil), d.records[from:]...)
}

// waitFrom returns the first record at or after position from that
// matches, with its position.
func (d *devDispatcher) waitFrom(t *testing.T, from int, what string, match func(record) bool) (record, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, r := range d.since(from) {
			if match(r) {
				return r, from + i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return nil, 0
}

func isKind(kind string) func(record) bool {
	return func(r record) bool { return r.str("kind") == kind }
}

func heartbeatWithVersion(t *testing.T, v string) func(record) bool {
	return func(r record) bool {
		return r.str("kind") == "send" && r.str("directive") == "heartbeat" && r.heartbeat(t).Version == v
	}
}

// writeMessage writes the seed's os-stats message with a 1 s heartbeat and
// the given version.
func writeMessage(t *testing.T, version string) string {
	t.Helper()
	b, err := os.ReadFile("../testdata/messages/os-stats.json")
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	m["version"] = version
	m["configuration"].(map[string]any)["heartbeat"] = map[string]any{"period_seconds": 1}
	out, err := json.Marshal(m)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "os-stats.json")
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return path
}

func (d *devDispatcher) persisted(t *testing.T) map[string]any {
	t.Helper()
	path := filepath.Join(d.dataDir, worker.ConfigFileName)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestConfigurationIsDeliveredAppliedPersistedAndReported(t *testing.T) {
	msg := writeMessage(t, "48213")
	d := startDispatcher(t, "--config", msg, "--resend", "200ms")

	start, _ := d.waitFrom(t, 0, "worker start", isKind("worker-start"))
	reg, _ := d.waitFrom(t, 0, "registration", isKind("register"))
	assert.Equal(t, true, reg["registered"])
	assert.True(t, strings.HasPrefix(reg.str("address"), "@ygg-device-"))
	t0, _ := time.Parse(time.RFC3339Nano, start.str("time"))
	t1, _ := time.Parse(time.RFC3339Nano, reg.str("time"))
	assert.Less(t, t1.Sub(t0), time.Second, "the worker registers well under a second after it starts")

	r, at := d.waitFrom(t, 0, "heartbeat of 48213", heartbeatWithVersion(t, "48213"))
	hb := r.heartbeat(t)
	assert.Equal(t, "up", hb.Status)
	require.Len(t, hb.Workloads, 1)
	assert.Equal(t, "os-stats", hb.Workloads[0].Name)
	assert.Equal(t, "stopped", hb.Workloads[0].Status, "podman is not wired yet; the worker says so")
	assert.Empty(t, hb.Workloads[0].LastDataUpload)
	assert.Equal(t, "ConfigurationApplied", hb.Events[0].Reason)
	assert.Equal(t, "info", hb.Events[0].Type)
	assert.NotNil(t, hb.DataSync)

	m := d.persisted(t)
	assert.Equal(t, "48213", m["version"])
	assert.Equal(t, "os-stats", m["workloads"].([]any)[0].(map[string]any)["name"])

	// The resend every 200ms is a no-op: later heartbeats carry no new
	// ConfigurationApplied event.
	_, later := d.waitFrom(t, at+1, "three more deliveries", func(r record) bool {
		n := 0
		for _, x := range d.since(at + 1) {
			if x.str("kind") == "deliver" && x["ok"] == true {
				n++
			}
		}
		return n >= 3
	})
	d.waitFrom(t, later, "another heartbeat", heartbeatWithVersion(t, "48213"))
	for _, x := range d.since(at + 1) {
		if x.str("kind") == "send" {
			for _, e := range x.heartbeat(t).Events {
				assert.NotEqual(t, "ConfigurationApplied", e.Reason, "an unchanged configuration is not applied again")
			}
		}
	}

	// A changed file is delivered at once and applied.
	changed := writeMessage(t, "48214")
	b, err := os.ReadFile(changed)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(msg, b, 0o600))
	d.waitFrom(t, at, "heartbeat of 48214", heartbeatWithVersion(t, "48214"))
	assert.Equal(t, "48214", d.persisted(t)["version"])
}

func TestWorkerRestartReloadsConfigurationFromDisk(t *testing.T) {
	d := startDispatcher(t, "--resend", "0")
	reg, _ := d.waitFrom(t, 0, "registration", isKind("register"))
	d.command(t, "send "+writeMessage(t, "777"))
	d.waitFrom(t, 0, "heartbeat of 777", heartbeatWithVersion(t, "777"))

	mark := d.count()
	pid := int(reg["pid"].(float64))
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	d.waitFrom(t, mark, "worker exit", isKind("worker-exit"))
	d.waitFrom(t, mark, "new registration", func(r record) bool {
		return r.str("kind") == "register" && r["registered"] == true && int(r["pid"].(float64)) != pid
	})
	r, _ := d.waitFrom(t, mark, "heartbeat of 777 from the restarted worker", heartbeatWithVersion(t, "777"))
	assert.Equal(t, "up", r.heartbeat(t).Status)
	for _, x := range d.since(mark) {
		assert.NotEqual(t, "deliver", x.str("kind"), "no message was delivered: the version came from disk")
	}
}

func TestBadMessageIsRefusedAndReported(t *testing.T) {
	d := startDispatcher(t, "--resend", "0")
	d.waitFrom(t, 0, "registration", isKind("register"))
	d.command(t, "send "+writeMessage(t, "1"))
	d.waitFrom(t, 0, "heartbeat of 1", heartbeatWithVersion(t, "1"))
	before, err := os.ReadFile(filepath.Join(d.dataDir, worker.ConfigFileName))
	require.NoError(t, err)

	mark := d.count()
	bad, err := filepath.Abs("../testdata/messages/bad/ingress-inside-egress.json")
	require.NoError(t, err)
	d.command(t, "send "+bad)
	r, _ := d.waitFrom(t, mark, "refused delivery", isKind("deliver"))
	assert.Equal(t, false, r["ok"])
	assert.Equal(t, "InvalidArgument", r.str("code"))
	assert.Contains(t, r.str("error"), `workloads[0].data.ingress[0].target: "stats/incoming" overlaps data.egress[0].source "stats"`)

	hbRec, _ := d.waitFrom(t, mark, "heartbeat with the warning", func(r record) bool {
		if r.str("kind") != "send" {
			return false
		}
		for _, e := range r.heartbeat(t).Events {
			if e.Type == "warn" && e.Reason == "InvalidConfiguration" {
				return true
			}
		}
		return false
	})
	assert.Equal(t, "1", hbRec.heartbeat(t).Version, "the configuration in force is unchanged")
	after, err := os.ReadFile(filepath.Join(d.dataDir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Equal(t, before, after)
}

func TestDisconnectRemovesState(t *testing.T) {
	d := startDispatcher(t, "--resend", "0")
	d.waitFrom(t, 0, "registration", isKind("register"))
	d.command(t, "send "+writeMessage(t, "5"))
	d.waitFrom(t, 0, "heartbeat of 5", heartbeatWithVersion(t, "5"))
	require.FileExists(t, filepath.Join(d.dataDir, worker.ConfigFileName))

	d.command(t, "restored")
	d.command(t, "unexpected-disconnect")
	mark := d.count()
	d.command(t, "disconnect")
	r, _ := d.waitFrom(t, mark, "disconnect notification", func(r record) bool {
		return r.str("kind") == "notify" && r.str("event") == "RECEIVED_DISCONNECT"
	})
	assert.Equal(t, true, r["ok"])
	assert.NoFileExists(t, filepath.Join(d.dataDir, worker.ConfigFileName))

	time.Sleep(300 * time.Millisecond) // a heartbeat may have been in flight
	quiet := d.count()
	time.Sleep(2500 * time.Millisecond)
	for _, x := range d.since(quiet) {
		assert.NotEqual(t, "send", x.str("kind"), "no heartbeats after unregistration")
	}
	d.mu.Lock()
	logs := d.stderr.String()
	d.mu.Unlock()
	assert.Contains(t, logs, "would remove all workloads")
	assert.Contains(t, logs, "would remove all synchronisation state")
}

func TestDispatcherRefusesAHandlerAlreadyRegistered(t *testing.T) {
	d := startDispatcher(t, "--resend", "0")
	l, _ := d.waitFrom(t, 0, "listen", isKind("listen"))
	d.waitFrom(t, 0, "registration", isKind("register"))
	conn, err := worker.Dial(l.str("address"))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := yggdrasil.NewDispatcherClient(conn).Register(ctx, &yggdrasil.RegistrationRequest{Handler: "device", Pid: 1})
	require.NoError(t, err)
	assert.False(t, resp.GetRegistered())
}

func TestWorkerWithoutSocketAddressFailsClearly(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, "device-worker"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.NotZero(t, exit.ExitCode())
	assert.Contains(t, string(out), "YGG_SOCKET_ADDR is not set")
}
