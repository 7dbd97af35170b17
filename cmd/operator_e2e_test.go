package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker"
)

// waitFileContent waits until path holds want.
func waitFileContent(t *testing.T, path, want string) {
	t.Helper()
	var got string
	if !assert.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		got = string(b)
		return err == nil && got == want
	}, 90*time.Second, 100*time.Millisecond) {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
}

// TestOperatorMessagesEndToEnd sends flotta-operator's own secret,
// configmap and image-registries messages (testdata/operator-messages) to
// the real worker under the dev dispatcher, on real podman, and checks what
// their README says a device must do.
func TestOperatorMessagesEndToEnd(t *testing.T) {
	dv := startDevice(t, deviceOptions{})
	dv.waitServing(t, 1)
	send := func(name string) int {
		t.Helper()
		path, err := filepath.Abs(filepath.Join("..", "testdata", "operator-messages", name))
		require.NoError(t, err)
		mark := dv.count()
		dv.command(t, "send "+path)
		r, _ := dv.waitFrom(t, mark, "delivery of "+name, isKind("deliver"))
		require.Equal(t, true, r["ok"], "delivery of %s failed: %v", name, r)
		return mark
	}
	runningWith := func(mark int, name string) worker.Heartbeat {
		t.Helper()
		hb, _ := dv.waitHeartbeat(t, mark, name+" running", func(hb worker.Heartbeat) bool {
			return hb.Version == "999" && running(hb, name) && len(hb.Workloads) == 1
		})
		return hb
	}

	// secret.json: TOKEN from the Secret, its keys as files.
	mark := send("secret.json")
	waitFileContent(t, filepath.Join(dv.volume("secret-consumer"), "secret-env.txt"), "placeholder-token-0001")
	waitFileContent(t, filepath.Join(dv.volume("secret-consumer"), "secret-volume.txt"), "placeholder-password-0002")
	runningWith(mark, "secret-consumer")
	out, err := dv.pods.Podman("secret", "ls", "--format", "{{.Name}}")
	require.NoError(t, err)
	assert.Contains(t, out, "flotta-app-creds-")

	// configmap.json: the other workload replaces it; GREETING and the
	// settings file come from its ConfigMaps.
	mark = send("configmap.json")
	waitFileContent(t, filepath.Join(dv.volume("configmap-consumer"), "configmap-env.txt"), "hello-from-configmap")
	waitFileContent(t, filepath.Join(dv.volume("configmap-consumer"), "configmap-volume.txt"), "mode=edge\nlevel=3\n")
	runningWith(mark, "configmap-consumer")
	require.Eventually(t, func() bool {
		out, err := dv.pods.Podman("secret", "ls", "--format", "{{.Name}}")
		return err == nil && !strings.Contains(out, "flotta-")
	}, 30*time.Second, 200*time.Millisecond, "the podman secret no workload uses any more is removed")

	// image-registries.json: accepted, runs, its auth file stored 0600 for it.
	mark = send("image-registries.json")
	waitFileContent(t, filepath.Join(dv.volume("private-registry"), "started.txt"), "started")
	runningWith(mark, "private-registry")
	fi, err := os.Stat(filepath.Join(dv.dataDir, "workloads", "private-registry", "auth.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// No value of the fixtures in logs or heartbeats, nor in the manifests.
	dv.assertNoSecrets(t, "placeholder-token-0001", "placeholder-password-0002", "placeholder-user:placeholder-pass")
	entries, err := os.ReadDir(filepath.Join(dv.dataDir, "manifests"))
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dv.dataDir, "manifests", e.Name()))
		require.NoError(t, err)
		assert.NotContains(t, string(b), "placeholder-")
		assert.NotContains(t, string(b), "cGxhY2Vob2xkZXI")
	}
}
