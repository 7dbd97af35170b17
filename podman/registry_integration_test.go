package podman

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
)

// registryPackage provides the registry the test runs (Debian's build of
// distribution/distribution).
const registryPackage = "docker-registry"

// testRegistry is a private image registry with one htpasswd user, on
// 127.0.0.1, plain http.
type testRegistry struct {
	addr, user, password string
}

// freePort returns a loopback address nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startRegistry runs docker-registry on addr with htpasswd authentication,
// stopped when the test ends.
func startRegistry(t *testing.T, addr string) *testRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry not found on PATH (%v): install the Debian package %s", err, registryPackage)
	}
	r := &testRegistry{addr: addr, user: "flotta", password: "registry-pass-0004"}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(r.password), bcrypt.MinCost)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(r.user+":"+string(hash)+"\n"), 0o600))
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
auth:
  htpasswd:
    realm: flotta-test
    path: %s
`, filepath.Join(dir, "data"), addr, filepath.Join(dir, "htpasswd"))
	confPath := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o600))
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, "serve", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "registry did not listen on %s", addr)
	return r
}

// authFile is a containers auth file for the registry with user:password.
func (r *testRegistry) authFile(user, password string) string {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	return `{"auths":{"` + r.addr + `":{"auth":"` + auth + `"}}}`
}

// TestPrivateRegistryAuthFile pulls a workload's image from a private
// registry with the workload's auth file, and only for that workload.
func TestPrivateRegistryAuthFile(t *testing.T) {
	addr := freePort(t)
	// The registry is plain http on loopback: the podman service is told
	// so (insecure), as a device would be for such a registry.
	regConf := filepath.Join(t.TempDir(), "registries.conf")
	require.NoError(t, os.WriteFile(regConf, []byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", addr)), 0o644))
	svc := podmantest.StartWithEnv(t, "CONTAINERS_REGISTRIES_CONF="+regConf)
	reg := startRegistry(t, addr)
	image := addr + "/flotta/busybox:private"
	_, err := svc.Podman("push", "--tls-verify=false", "--creds", reg.user+":"+reg.password, svc.Image, image)
	require.NoError(t, err)

	dir := t.TempDir()
	m, err := NewManager(Config{Socket: svc.URI, VolumesDir: filepath.Join(dir, "volumes"), StateDir: filepath.Join(dir, "manifests"),
		DeviceID: "a1b2", MonitorInterval: time.Hour}, zaptest.NewLogger(t))
	require.NoError(t, err)
	spec := func(file string) string {
		return `containers:
- name: app
  image: ` + image + `
  imagePullPolicy: Always
  command: ["sh", "-c", "printf pulled > /export/` + file + `; exec sleep 3600"]
`
	}
	ctx := context.Background()
	private := Workload{Name: "private", Specification: spec("pulled.txt"), AuthFile: reg.authFile(reg.user, reg.password)}
	other := Workload{Name: "other", Specification: spec("pulled.txt")}
	err = m.Apply(ctx, []Workload{private, other})
	waitContent(t, filepath.Join(dir, "volumes", "private", "pulled.txt"), "pulled")

	// The workload without an auth file cannot pull: the credentials went
	// with the other workload's request only.
	require.Error(t, err)
	assert.Contains(t, err.Error(), `workload "other"`)
	assert.NotContains(t, err.Error(), `workload "private"`)
	statuses := map[string]WorkloadStatus{}
	for _, st := range m.Statuses() {
		statuses[st.Name] = st
	}
	assert.Equal(t, Running, statuses["private"].State, statuses["private"].Message)
	assert.Equal(t, Crashed, statuses["other"].State)
	assert.Contains(t, strings.ToLower(statuses["other"].Message), "unauthorized")

	// Wrong credentials are this workload's clear error, without them.
	wrong := Workload{Name: "wrong", Specification: spec("pulled.txt"), AuthFile: reg.authFile(reg.user, "not-the-password")}
	err = m.Apply(ctx, []Workload{private, wrong})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `workload "wrong"`)
	assert.NotContains(t, err.Error(), `workload "private"`)
	for _, ev := range m.Events() {
		assert.NotContains(t, ev.Message, "not-the-password")
		assert.NotContains(t, ev.Message, reg.password)
		assert.NotContains(t, ev.Message, base64.StdEncoding.EncodeToString([]byte(reg.user+":not-the-password")))
	}
	for _, st := range m.Statuses() {
		if st.Name == "wrong" {
			assert.Equal(t, Crashed, st.State)
			assert.Contains(t, strings.ToLower(st.Message), "unauthorized")
		}
	}
}
