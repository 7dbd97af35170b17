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
	"github.com/project-flotta/flotta-device-worker/sync/journal"
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

// waitLimit bounds every wait for a record: pods start on vfs storage.
const waitLimit = 30 * time.Second

// waitFrom returns the first record at or after position from that
// matches, with its position.
func (d *devDispatcher) waitFrom(t *testing.T, from int, what string, match func(record) bool) (record, int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
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

// configured starts a device, delivers the os-stats message (a waiting
// container, egress stats → statistics) at version, and waits until the
// heartbeat reports the pod running.
func configured(t *testing.T, version string, o deviceOptions) (*device, map[string]any, int) {
	t.Helper()
	if o.args == nil {
		o.args = []string{"--resend", "0"}
	}
	dv := startDevice(t, o)
	dv.waitServing(t, 1)
	msg := dv.message(version, accessKey, secretKey, sleeperWorkload())
	require.Equal(t, true, dv.send(t, msg)["ok"])
	_, at := dv.waitHeartbeat(t, 0, "os-stats running at "+version, func(hb worker.Heartbeat) bool {
		return hb.Version == version && running(hb, "os-stats")
	})
	return dv, msg, at
}

func TestConfigurationIsDeliveredAppliedPersistedAndReported(t *testing.T) {
	dv := newDevice(t, deviceOptions{})
	msg := dv.message("48213", accessKey, secretKey, sleeperWorkload())
	path := writeJSON(t, msg)
	dv.start(t, "--config", path, "--resend", "200ms")
	d := dv

	start, _ := d.waitFrom(t, 0, "worker start", isKind("worker-start"))
	reg, _ := d.waitFrom(t, 0, "registration", isKind("register"))
	assert.Equal(t, true, reg["registered"])
	assert.True(t, strings.HasPrefix(reg.str("address"), "@ygg-device-"))
	t0, _ := time.Parse(time.RFC3339Nano, start.str("time"))
	t1, _ := time.Parse(time.RFC3339Nano, reg.str("time"))
	assert.Less(t, t1.Sub(t0), time.Second, "the worker registers well under a second after it starts")

	r, _ := d.waitFrom(t, 0, "heartbeat of 48213", heartbeatWithVersion(t, "48213"))
	hb := r.heartbeat(t)
	require.Len(t, hb.Workloads, 1)
	assert.Equal(t, "os-stats", hb.Workloads[0].Name)
	applied, ok := event(hb, "ConfigurationApplied")
	assert.True(t, ok, "the first heartbeat of a version says it was applied: %+v", hb.Events)
	assert.Contains(t, applied, "configuration 48213 applied: 1 workloads, 1 data mappings")
	assert.Equal(t, worker.DataSyncOn, hb.DataSyncState)

	hb, at := d.waitHeartbeat(t, 0, "os-stats running", func(hb worker.Heartbeat) bool { return running(hb, "os-stats") })
	assert.Equal(t, "up", hb.Status)
	require.True(t, dv.podExists("os-stats"), "the pod runs on the podman service")
	podID := dv.podID(t, "os-stats")
	out, err := dv.pods.Podman("exec", "os-stats-stats-collector", "sh", "-c", "echo $DEVICE_ID; test -d /export && echo export-mounted")
	require.NoError(t, err)
	assert.Contains(t, out, "dev-device")
	assert.Contains(t, out, "export-mounted")

	m := d.persisted(t)
	assert.Equal(t, "48213", m["version"])
	assert.Equal(t, "os-stats", m["workloads"].([]any)[0].(map[string]any)["name"])
	persistedAt, err := os.Stat(filepath.Join(d.dataDir, worker.ConfigFileName))
	require.NoError(t, err)

	// The resend every 200ms is a no-op: later heartbeats carry no new
	// ConfigurationApplied event, the pod is not replaced, and the
	// configuration file is not rewritten.
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
	assert.Equal(t, podID, dv.podID(t, "os-stats"), "an unchanged configuration does not replace the pod")
	again, err := os.Stat(filepath.Join(d.dataDir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Equal(t, persistedAt.ModTime(), again.ModTime(), "an unchanged configuration is not written again")

	// A changed file is delivered at once and applied.
	msg["version"] = "48214"
	b, err := json.Marshal(msg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))
	d.waitFrom(t, at, "heartbeat of 48214", heartbeatWithVersion(t, "48214"))
	assert.Equal(t, "48214", d.persisted(t)["version"])
	assert.Equal(t, podID, dv.podID(t, "os-stats"), "a new version with the same workload keeps the pod")
}

func TestWorkerRestartReloadsConfigurationFromDisk(t *testing.T) {
	dv, _, _ := configured(t, "777", deviceOptions{})
	podID := dv.podID(t, "os-stats")

	mark := dv.count()
	pid := dv.pids()[0]
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	dv.waitFrom(t, mark, "worker exit", isKind("worker-exit"))
	dv.waitFrom(t, mark, "new registration", func(r record) bool {
		return r.str("kind") == "register" && r["registered"] == true && int(r["pid"].(float64)) != pid
	})
	hb, _ := dv.waitHeartbeat(t, mark, "heartbeat of 777 from the restarted worker, pod running", func(hb worker.Heartbeat) bool {
		return hb.Version == "777" && running(hb, "os-stats")
	})
	assert.Equal(t, "up", hb.Status)
	for _, x := range dv.since(mark) {
		assert.NotEqual(t, "deliver", x.str("kind"), "no message was delivered: the version came from disk")
	}
	assert.Equal(t, podID, dv.podID(t, "os-stats"), "the restarted worker keeps the running pod")
}

func TestBadMessageIsRefusedAndReported(t *testing.T) {
	dv, _, _ := configured(t, "1", deviceOptions{})
	before, err := os.ReadFile(filepath.Join(dv.dataDir, worker.ConfigFileName))
	require.NoError(t, err)
	podID := dv.podID(t, "os-stats")

	mark := dv.count()
	bad, err := filepath.Abs("../testdata/messages/bad/ingress-inside-egress.json")
	require.NoError(t, err)
	dv.command(t, "send "+bad)
	r, _ := dv.waitFrom(t, mark, "refused delivery", isKind("deliver"))
	assert.Equal(t, false, r["ok"])
	assert.Equal(t, "InvalidArgument", r.str("code"))
	assert.Contains(t, r.str("error"), `workloads[0].data.ingress[0].target: "stats/incoming" overlaps data.egress[0].source "stats"`)

	hb, _ := dv.waitHeartbeat(t, mark, "heartbeat with the warning", func(hb worker.Heartbeat) bool {
		for _, e := range hb.Events {
			if e.Type == "warn" && e.Reason == "InvalidConfiguration" {
				return true
			}
		}
		return false
	})
	assert.Equal(t, "1", hb.Version, "the configuration in force is unchanged")
	assert.True(t, running(hb, "os-stats"), "the workload in force keeps running")
	after, err := os.ReadFile(filepath.Join(dv.dataDir, worker.ConfigFileName))
	require.NoError(t, err)
	assert.Equal(t, before, after)
	assert.Equal(t, podID, dv.podID(t, "os-stats"))
}

func TestDisconnectRemovesState(t *testing.T) {
	dv, _, at := configured(t, "5", deviceOptions{})
	require.FileExists(t, filepath.Join(dv.dataDir, worker.ConfigFileName))
	// Something to synchronise, so that the journal holds state.
	require.NoError(t, os.MkdirAll(filepath.Join(dv.volume("os-stats"), "stats"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dv.volume("os-stats"), "stats", "a.txt"), []byte("a\n"), 0o644))
	dv.waitObject(t, "statistics/a.txt", 30*time.Second)
	dv.waitHeartbeat(t, at, "the upload in a heartbeat", func(hb worker.Heartbeat) bool {
		m, ok := mapping(hb, "os-stats/egress/stats")
		return ok && m.FilesTotal > 0
	})
	require.DirExists(t, dv.volume("os-stats"))
	require.FileExists(t, filepath.Join(dv.dataDir, "manifests", "os-stats.yaml"))

	dv.command(t, "restored")
	dv.command(t, "unexpected-disconnect")
	mark := dv.count()
	dv.command(t, "disconnect")
	r, _ := dv.waitFrom(t, mark, "disconnect notification", func(r record) bool {
		return r.str("kind") == "notify" && r.str("event") == "RECEIVED_DISCONNECT"
	})
	assert.Equal(t, true, r["ok"])
	assert.NoFileExists(t, filepath.Join(dv.dataDir, worker.ConfigFileName))

	require.Eventually(t, func() bool { return !dv.podExists("os-stats") }, 30*time.Second, 100*time.Millisecond, "the pod is removed")
	require.Eventually(t, func() bool {
		_, err := os.Stat(dv.volume("os-stats"))
		return os.IsNotExist(err)
	}, 10*time.Second, 50*time.Millisecond, "the workload's volume is removed")
	out, err := dv.pods.Podman("pod", "ls", "--quiet")
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(out), "no pod is left")
	manifests, _ := os.ReadDir(filepath.Join(dv.dataDir, "manifests"))
	assert.Empty(t, manifests, "no manifest is left")

	quiet := dv.count()
	time.Sleep(2500 * time.Millisecond)
	for _, x := range dv.since(quiet) {
		assert.NotEqual(t, "send", x.str("kind"), "no heartbeats after unregistration")
	}

	// The journal is locked while the worker runs: stop it, then look.
	mark = dv.count()
	dv.command(t, "quit")
	dv.waitFrom(t, mark, "worker exit", isKind("worker-exit"))
	jr, err := journal.Open(filepath.Join(dv.dataDir, "sync", "sync-journal.db"))
	require.NoError(t, err)
	defer jr.Close()
	ids, err := jr.Mappings()
	require.NoError(t, err)
	assert.Empty(t, ids, "the sync journal holds no mapping any more")
	assert.NoFileExists(t, filepath.Join(dv.dataDir, worker.ConfigFileName), "not even a shutdown brings the configuration back")
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
