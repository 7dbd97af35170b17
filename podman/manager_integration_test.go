package podman_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
)

// env is a Manager on a private podman service, with its directories.
type env struct {
	svc        *podmantest.Service
	m          *podman.Manager
	volumesDir string
	stateDir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	svc := podmantest.Start(t)
	e := &env{svc: svc, volumesDir: filepath.Join(t.TempDir(), "volumes"), stateDir: filepath.Join(t.TempDir(), "manifests")}
	m, err := podman.NewManager(podman.Config{
		Socket: svc.URI, VolumesDir: e.volumesDir, StateDir: e.stateDir,
		DeviceID: "device-1", MonitorInterval: time.Hour,
	}, zaptest.NewLogger(t))
	require.NoError(t, err)
	e.m = m
	return e
}

// sleeper is a spec whose container writes line into /export/<file> and then
// waits, exiting cleanly on SIGTERM.
func sleeper(image, file, line string) string {
	return `containers:
- name: app
  image: ` + image + `
  command: ["sh", "-c", "trap 'exit 0' TERM; echo ` + line + ` $DEVICE_ID > /export/` + file + `; sleep 3600 & wait"]
`
}

func (e *env) status(t *testing.T, name string) podman.WorkloadStatus {
	t.Helper()
	for _, s := range e.m.Statuses() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for workload %s in %+v", name, e.m.Statuses())
	return podman.WorkloadStatus{}
}

// waitState reconciles until workload name reaches state.
func (e *env) waitState(t *testing.T, name string, state podman.State) podman.WorkloadStatus {
	t.Helper()
	var last podman.WorkloadStatus
	require.Eventually(t, func() bool {
		_ = e.m.Reconcile(context.Background())
		last = e.status(t, name)
		return last.State == state
	}, 60*time.Second, 200*time.Millisecond, "workload %s never became %s", name, state)
	return last
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	require.Eventually(t, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	}, 60*time.Second, 100*time.Millisecond, "file %s never appeared", path)
	return string(b)
}

func hasEvent(evs []podman.Event, reason, typ, substr string) bool {
	for _, e := range evs {
		if e.Reason == reason && e.Type == typ && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

func podExists(svc *podmantest.Service, id string) bool {
	_, err := svc.Podman("pod", "exists", id)
	return err == nil
}

// TestManagerLifecycle plays a pod that writes into /export, then exercises
// no-op re-apply, replacement on change, restart after death, removal and
// RemoveAll against a real podman service.
func TestManagerLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	web := podman.Workload{Name: "web", Namespace: "default", Labels: map[string]string{"dc": "home"},
		Specification: sleeper(e.svc.Image, "hello", "hi")}
	withInit := podman.Workload{Name: "with-init", Specification: `initContainers:
- name: prepare
  image: ` + e.svc.Image + `
  command: ["sh", "-c", "echo ready > /export/init-done"]
containers:
- name: main
  image: ` + e.svc.Image + `
  command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
`}

	// Deploy: the container writes into /export, which is the host volume dir.
	require.NoError(t, e.m.Apply(ctx, []podman.Workload{web, withInit}))
	assert.Equal(t, "hi device-1\n", waitFile(t, filepath.Join(e.volumesDir, "web", "hello")))
	assert.Equal(t, "ready\n", waitFile(t, filepath.Join(e.volumesDir, "with-init", "init-done")))
	st := e.waitState(t, "web", podman.Running)
	e.waitState(t, "with-init", podman.Running)
	assert.Empty(t, st.Message)
	require.NotEmpty(t, st.PodID)
	assert.True(t, hasEvent(e.m.Events(), podman.ReasonDeployed, "info", `"web"`))
	fi, err := os.Stat(filepath.Join(e.volumesDir, "web"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	manifestPath := filepath.Join(e.stateDir, "web.yaml")
	fi, err = os.Stat(manifestPath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	mtime := fi.ModTime()
	labels, err := e.svc.Podman("pod", "inspect", "--format", "{{.Labels}}", "web")
	require.NoError(t, err)
	assert.Contains(t, labels, "flotta/managed:true")
	assert.Contains(t, labels, "flotta/manifest-hash:"+st.ManifestHash)

	// An exited init container is not a death: nothing is restarted.
	require.NoError(t, e.m.Reconcile(ctx))
	require.NoError(t, e.m.Reconcile(ctx))
	assert.False(t, hasEvent(e.m.Events(), podman.ReasonRestarted, "info", ""))

	// Unchanged apply: same pod, no manifest write, no event.
	require.NoError(t, e.m.Apply(ctx, []podman.Workload{web, withInit}))
	require.NoError(t, e.m.Reconcile(ctx))
	assert.Equal(t, st.PodID, e.status(t, "web").PodID)
	fi, err = os.Stat(manifestPath)
	require.NoError(t, err)
	assert.Equal(t, mtime, fi.ModTime(), "unchanged apply rewrote the manifest")
	assert.Empty(t, e.m.Events())

	// Changed spec: a new pod with a new hash replaces the old one.
	web.Specification = sleeper(e.svc.Image, "hello2", "bye")
	require.NoError(t, e.m.Apply(ctx, []podman.Workload{web, withInit}))
	assert.Equal(t, "bye device-1\n", waitFile(t, filepath.Join(e.volumesDir, "web", "hello2")))
	st2 := e.waitState(t, "web", podman.Running)
	assert.NotEqual(t, st.PodID, st2.PodID)
	assert.NotEqual(t, st.ManifestHash, st2.ManifestHash)
	assert.False(t, podExists(e.svc, st.PodID), "old pod still exists")
	assert.True(t, hasEvent(e.m.Events(), podman.ReasonReplaced, "info", `"web"`))
	assert.FileExists(t, filepath.Join(e.volumesDir, "web", "hello"), "volume content must survive replacement")

	// Death: a killed pod is reported crashed and started again by reconcile.
	_, err = e.svc.Podman("pod", "kill", "web")
	require.NoError(t, err)
	require.NoError(t, e.m.Reconcile(ctx))
	evs := e.m.Events()
	assert.True(t, hasEvent(evs, podman.ReasonRestarted, "info", "was crashed"), "events: %+v", evs)
	st3 := e.waitState(t, "web", podman.Running)
	assert.Equal(t, st2.PodID, st3.PodID, "restart must reuse the pod")

	// Removal: the pod goes, the volume directory (the workload's data) stays.
	require.NoError(t, e.m.Apply(ctx, []podman.Workload{withInit}))
	assert.False(t, podExists(e.svc, st3.PodID), "removed workload's pod still exists")
	assert.DirExists(t, filepath.Join(e.volumesDir, "web"))
	assert.NoFileExists(t, manifestPath)
	assert.True(t, hasEvent(e.m.Events(), podman.ReasonRemoved, "info", `"web"`))
	for _, s := range e.m.Statuses() {
		assert.NotEqual(t, "web", s.Name)
	}

	// RemoveAll: pods, manifests and volume directories are gone.
	initPod := e.status(t, "with-init").PodID
	require.NoError(t, e.m.RemoveAll(ctx))
	assert.False(t, podExists(e.svc, initPod))
	assert.NoDirExists(t, filepath.Join(e.volumesDir, "web"))
	assert.NoDirExists(t, filepath.Join(e.volumesDir, "with-init"))
	assert.NoFileExists(t, filepath.Join(e.stateDir, "with-init.yaml"))
	assert.Empty(t, e.m.Statuses())
	out, err := e.svc.Podman("pod", "ps", "-q")
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(out))
}

// TestManagerExitStates checks crashed (non-zero exit) and stopped (exit 0)
// under restartPolicy Never, which the manager must not restart.
func TestManagerExitStates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	exiting := func(name, code string) podman.Workload {
		return podman.Workload{Name: name, Specification: `restartPolicy: Never
containers:
- name: job
  image: ` + e.svc.Image + `
  command: ["sh", "-c", "touch /export/started; while [ ! -e /export/finish ]; do sleep 0.1; done; exit ` + code + `"]
`}
	}
	ws := []podman.Workload{exiting("crasher", "3"), exiting("finisher", "0")}
	require.NoError(t, e.m.Apply(ctx, ws))
	for _, w := range ws {
		waitFile(t, filepath.Join(e.volumesDir, w.Name, "started"))
		e.waitState(t, w.Name, podman.Running)
		require.NoError(t, os.WriteFile(filepath.Join(e.volumesDir, w.Name, "finish"), []byte("x"), 0o644))
	}
	e.waitState(t, "crasher", podman.Crashed)
	e.waitState(t, "finisher", podman.Stopped)
	require.NoError(t, e.m.Reconcile(ctx))
	assert.Equal(t, podman.Crashed, e.status(t, "crasher").State)
	assert.Equal(t, podman.Stopped, e.status(t, "finisher").State)
	assert.False(t, hasEvent(e.m.Events(), podman.ReasonRestarted, "info", ""), "restartPolicy Never must not be restarted")
}

// TestManagerRunRestartsDeadPods checks the periodic loop and
// SetMonitorInterval.
func TestManagerRunRestartsDeadPods(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := podman.Workload{Name: "loop", Specification: sleeper(e.svc.Image, "hello", "hi")}
	require.NoError(t, e.m.Apply(ctx, []podman.Workload{w}))
	e.waitState(t, "loop", podman.Running)
	e.m.Events()

	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	e.m.SetMonitorInterval(200 * time.Millisecond)
	_, err := e.svc.Podman("pod", "kill", "loop")
	require.NoError(t, err)
	var evs []podman.Event
	require.Eventually(t, func() bool {
		evs = append(evs, e.m.Events()...)
		return hasEvent(evs, podman.ReasonRestarted, "info", `"loop"`)
	}, 30*time.Second, 100*time.Millisecond, "Run never restarted the killed pod")
	require.Eventually(t, func() bool {
		return e.status(t, "loop").State == podman.Running
	}, 30*time.Second, 100*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestManagerReportsErrors checks that a missing image and an invalid spec
// are reported per workload (error, status, warn event) without stopping
// the other workloads, and retried on the next reconcile.
func TestManagerReportsErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good := podman.Workload{Name: "good", Specification: sleeper(e.svc.Image, "hello", "hi")}
	missing := podman.Workload{Name: "missing", Specification: `containers:
- name: app
  image: localhost/flotta-no-such-image:v1
  imagePullPolicy: Never
`}
	invalid := podman.Workload{Name: "invalid", Specification: "containers: []\n"}

	start := time.Now()
	err := e.m.Apply(ctx, []podman.Workload{good, missing, invalid})
	require.Error(t, err)
	assert.Less(t, time.Since(start), 30*time.Second, "a missing image must fail fast")
	assert.Contains(t, err.Error(), `workload "missing"`)
	assert.Contains(t, err.Error(), `workload "invalid"`)
	assert.NotContains(t, err.Error(), `workload "good"`)
	e.waitState(t, "good", podman.Running)

	for _, name := range []string{"missing", "invalid"} {
		st := e.status(t, name)
		assert.Equal(t, podman.Crashed, st.State, name)
		assert.NotEmpty(t, st.Message, name)
	}
	assert.Contains(t, e.status(t, "missing").Message, "flotta-no-such-image")
	assert.Contains(t, e.status(t, "invalid").Message, "no containers")
	evs := e.m.Events()
	assert.True(t, hasEvent(evs, podman.ReasonFailed, "warn", `workload "missing"`), "events: %+v", evs)
	assert.True(t, hasEvent(evs, podman.ReasonFailed, "warn", `workload "invalid"`), "events: %+v", evs)

	// Retried on reconcile; the same error is not reported twice.
	err = e.m.Reconcile(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `workload "missing"`)
	assert.Empty(t, e.m.Events())

	// Once the image exists, the next reconcile deploys the workload.
	_, err = e.svc.Podman("tag", e.svc.Image, "localhost/flotta-no-such-image:v1")
	require.NoError(t, err)
	st := e.waitState(t, "missing", podman.Running)
	assert.Empty(t, st.Message)
	// An unchanged Apply reports the current result, not the stale error.
	err = e.m.Apply(ctx, []podman.Workload{good, missing, invalid})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), `workload "missing"`)
}

// TestManagerSocketDown checks that a manager whose podman service is down
// starts at once, reports the failure per workload and never panics.
func TestManagerSocketDown(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	m, err := podman.NewManager(podman.Config{
		Socket: "unix://" + filepath.Join(dir, "no-such.sock"), VolumesDir: filepath.Join(dir, "volumes"),
		StateDir: filepath.Join(dir, "manifests"), DeviceID: "device-1",
	}, zaptest.NewLogger(t))
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 100*time.Millisecond)

	w := podman.Workload{Name: "web", Specification: sleeper(podmantest.Image, "hello", "hi")}
	ctx := context.Background()
	err = m.Apply(ctx, []podman.Workload{w})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connect to podman")
	st := m.Statuses()
	require.Len(t, st, 1)
	assert.Equal(t, podman.Deploying, st[0].State)
	assert.Contains(t, st[0].Message, "connect to podman at unix://"+filepath.Join(dir, "no-such.sock")+": no such socket: is podman.socket started?")
	evs := m.Events()
	assert.True(t, hasEvent(evs, podman.ReasonFailed, "warn", `workload "web"`), "events: %+v", evs)
	assert.FileExists(t, filepath.Join(dir, "manifests", "web.yaml"), "manifest is stored even while podman is down")

	// Retried, not re-reported; RemoveAll still cleans local state.
	require.Error(t, m.Reconcile(ctx))
	assert.Empty(t, m.Events())
	require.Error(t, m.RemoveAll(ctx))
	assert.NoFileExists(t, filepath.Join(dir, "manifests", "web.yaml"))
}
