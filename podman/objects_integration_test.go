package podman

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

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
)

// objEnv is a Manager on a private podman service, with its directories.
type objEnv struct {
	svc                            *podmantest.Service
	m                              *Manager
	volumesDir, stateDir, filesDir string
}

func newObjEnv(t *testing.T) *objEnv {
	t.Helper()
	svc := podmantest.Start(t)
	dir := t.TempDir()
	e := &objEnv{svc: svc, volumesDir: filepath.Join(dir, "volumes"), stateDir: filepath.Join(dir, "manifests"), filesDir: filepath.Join(dir, "workloads")}
	m, err := NewManager(Config{Socket: svc.URI, VolumesDir: e.volumesDir, StateDir: e.stateDir,
		DeviceID: "a1b2", MonitorInterval: time.Hour}, zaptest.NewLogger(t))
	require.NoError(t, err)
	assert.Equal(t, e.filesDir, m.cfg.FilesDir, "files live beside the manifests by default")
	e.m = m
	return e
}

// waitContent waits until path holds want.
func waitContent(t *testing.T, path, want string) {
	t.Helper()
	var got string
	ok := assert.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		got = string(b)
		return err == nil && got == want
	}, 60*time.Second, 100*time.Millisecond)
	if !ok {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
}

func (e *objEnv) status(t *testing.T, name string) WorkloadStatus {
	t.Helper()
	for _, s := range e.m.Statuses() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s in %+v", name, e.m.Statuses())
	return WorkloadStatus{}
}

func (e *objEnv) secrets(t *testing.T) []string {
	t.Helper()
	names, err := e.m.eng.ListSecrets(context.Background())
	require.NoError(t, err)
	return names
}

// secretValues are the fixtures' secret values, plain and base64.
var secretValues = []string{
	"placeholder-token-0001", "placeholder-password-0002", "rotated-token-0003",
	"cGxhY2Vob2xkZXItdG9rZW4tMDAwMQ", "cGxhY2Vob2xkZXItcGFzc3dvcmQtMDAwMg", "cGxhY2Vob2xkZXItdXNlcjpwbGFjZWhvbGRlci1wYXNz",
}

// assertNoSecretIn fails when text holds a secret value of the fixtures.
func assertNoSecretIn(t *testing.T, what, text string) {
	t.Helper()
	for _, v := range secretValues {
		assert.NotContains(t, text, v, "secret value in %s", what)
	}
}

// TestOperatorWorkloadsOnPodman runs the operator's secret, configmap and
// image-registries messages' workloads on a real podman service, as their
// README says a device must.
func TestOperatorWorkloadsOnPodman(t *testing.T) {
	e := newObjEnv(t)
	ctx := context.Background()
	sec := operatorWorkload(t, "secret.json")
	cm := operatorWorkload(t, "configmap.json")
	reg := operatorWorkload(t, "image-registries.json")

	// envFrom takes every key of a Secret and of a ConfigMap.
	envFrom := Workload{Name: "env-from", Secrets: sec.Secrets, ConfigMaps: cm.ConfigMaps, Specification: `containers:
- name: app
  image: ` + e.svc.Image + `
  imagePullPolicy: Never
  command: ["sh", "-c", "printf '%s %s %s' \"$token\" \"$password\" \"$greeting\" > /export/env.txt; exec sleep 3600"]
  envFrom:
  - secretRef: {name: app-creds}
  - configMapRef: {name: app-env}
`}
	require.NoError(t, e.m.Apply(ctx, []Workload{sec, cm, reg, envFrom}))
	vol := func(w, f string) string { return filepath.Join(e.volumesDir, w, f) }
	waitContent(t, vol("env-from", "env.txt"), "placeholder-token-0001 placeholder-password-0002 hello-from-configmap")
	waitContent(t, vol("secret-consumer", "secret-env.txt"), "placeholder-token-0001")
	waitContent(t, vol("secret-consumer", "secret-volume.txt"), "placeholder-password-0002")
	waitContent(t, vol("configmap-consumer", "configmap-env.txt"), "hello-from-configmap")
	waitContent(t, vol("configmap-consumer", "configmap-volume.txt"), "mode=edge\nlevel=3\n")
	waitContent(t, vol("private-registry", "started.txt"), "started")
	require.NoError(t, e.m.Reconcile(ctx))
	for _, name := range []string{"secret-consumer", "configmap-consumer", "private-registry"} {
		st := e.status(t, name)
		assert.Equal(t, Running, st.State, "%s: %s", name, st.Message)
	}
	// The containers read their Secret and ConfigMap files above; where
	// SELinux is enforcing, that needs the label podman gave them.
	assertRelabelledForContainers(t, e.m, []Workload{sec, cm, reg, envFrom})

	// The auth file is stored 0600 under the data dir, for this workload only.
	auth := filepath.Join(e.filesDir, "private-registry", "auth.json")
	fi, err := os.Stat(auth)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	b, err := os.ReadFile(auth)
	require.NoError(t, err)
	assert.Equal(t, reg.AuthFile, string(b))
	assert.NoFileExists(t, filepath.Join(e.filesDir, "secret-consumer", "auth.json"))
	fi, err = os.Stat(e.filesDir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "secret files are root's only on the host")

	// One podman secret, named by the worker; no secret value on disk in
	// manifests, nor in statuses and events.
	owned := e.secrets(t)
	require.Len(t, owned, 1)
	assert.True(t, strings.HasPrefix(owned[0], "flotta-app-creds-"), owned[0])
	manifests, err := os.ReadDir(e.stateDir)
	require.NoError(t, err)
	require.Len(t, manifests, 4)
	for _, f := range manifests {
		b, err := os.ReadFile(filepath.Join(e.stateDir, f.Name()))
		require.NoError(t, err)
		assertNoSecretIn(t, f.Name(), string(b))
	}
	podSec := e.status(t, "secret-consumer").PodID
	podCM := e.status(t, "configmap-consumer").PodID
	podReg := e.status(t, "private-registry").PodID

	// A resend changes nothing.
	require.NoError(t, e.m.Apply(ctx, []Workload{operatorWorkload(t, "secret.json"), operatorWorkload(t, "configmap.json"), operatorWorkload(t, "image-registries.json"), envFrom}))
	require.NoError(t, e.m.Reconcile(ctx))
	assert.Equal(t, podSec, e.status(t, "secret-consumer").PodID)

	// A rotated secret replaces the pod and its podman secret; a changed
	// ConfigMap alone replaces its pod; a changed auth file is stored
	// without replacing the running pod.
	sec.Secrets = []Secret{{Name: "app-creds", Data: map[string][]byte{
		"token": []byte("rotated-token-0003"), "password": []byte("placeholder-password-0002")}}}
	cm.ConfigMaps = append([]string(nil), cm.ConfigMaps...)
	cm.ConfigMaps[0] = strings.Replace(cm.ConfigMaps[0], "hello-from-configmap", "changed-greeting", 1)
	reg.AuthFile = `{"auths":{"localhost":{"auth":"b3RoZXI6dXNlcg=="}}}`
	require.NoError(t, os.Remove(vol("secret-consumer", "secret-env.txt")))
	envFrom.Secrets, envFrom.ConfigMaps = sec.Secrets, cm.ConfigMaps
	require.NoError(t, e.m.Apply(ctx, []Workload{sec, cm, reg, envFrom}))
	waitContent(t, vol("secret-consumer", "secret-env.txt"), "rotated-token-0003")
	waitContent(t, vol("env-from", "env.txt"), "rotated-token-0003 placeholder-password-0002 changed-greeting")
	waitContent(t, vol("configmap-consumer", "configmap-env.txt"), "changed-greeting")
	require.NoError(t, e.m.Reconcile(ctx))
	assert.NotEqual(t, podSec, e.status(t, "secret-consumer").PodID)
	assert.NotEqual(t, podCM, e.status(t, "configmap-consumer").PodID)
	assert.Equal(t, podReg, e.status(t, "private-registry").PodID)
	b, err = os.ReadFile(auth)
	require.NoError(t, err)
	assert.Equal(t, reg.AuthFile, string(b))
	now := e.secrets(t)
	require.Len(t, now, 1, "the old podman secret is removed once unused")
	assert.NotEqual(t, owned[0], now[0])

	// A wrong auth file is this workload's error, reported, never its content.
	bad := reg
	bad.AuthFile = "user:placeholder-pass"
	err = e.m.Apply(ctx, []Workload{sec, cm, bad, envFrom})
	require.ErrorContains(t, err, `workload "private-registry": imageRegistries.authFile: not a JSON auth file`)
	assert.NotContains(t, err.Error(), "placeholder-pass")
	st := e.status(t, "private-registry")
	assert.Contains(t, st.Message, "imageRegistries.authFile")
	assert.Equal(t, Running, e.status(t, "secret-consumer").State)
	var warned bool
	for _, ev := range e.m.Events() {
		assertNoSecretIn(t, "event", ev.Message)
		assert.NotContains(t, ev.Message, "placeholder-pass")
		if ev.Reason == ReasonFailed && strings.Contains(ev.Message, `"private-registry"`) && strings.Contains(ev.Message, "authFile") {
			warned = true
		}
	}
	assert.True(t, warned, "a WorkloadFailed warn event names the workload and the auth file")

	// Removing the workloads removes their files and podman secrets.
	require.NoError(t, e.m.Apply(ctx, []Workload{cm}))
	assert.NoDirExists(t, filepath.Join(e.filesDir, "private-registry"))
	assert.NoDirExists(t, filepath.Join(e.filesDir, "secret-consumer"))
	assert.Empty(t, e.secrets(t))
	require.NoError(t, e.m.RemoveAll(ctx))
	assert.NoDirExists(t, filepath.Join(e.filesDir, "configmap-consumer"))
}
