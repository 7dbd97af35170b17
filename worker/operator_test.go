package worker_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// operatorMessage reads a message built by flotta-operator's own code
// (testdata/operator-messages, copied from the shared fixtures).
func operatorMessage(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "operator-messages", name))
	require.NoError(t, err)
	return b
}

// newObservedHarness is newHarness with every log entry recorded, at debug.
func newObservedHarness(t *testing.T) (*harness, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{wl: &fakeWorkloads{}, ds: &fakeDataSync{}, disp: &fakeDispatcher{}, dir: t.TempDir()}
	w, err := worker.New(worker.Options{DataDir: h.dir, Dispatcher: h.disp, Log: zap.New(core), RetryInterval: 50 * time.Millisecond}, h.wl, h.ds)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	h.w = w
	return h, logs
}

// credentials of the fixtures, plain; base64 forms are derived.
var fixtureCredentials = []string{
	"placeholder-token-0001", "placeholder-password-0002", "placeholder-user:placeholder-pass",
	"ydayagi1369", "obc-access", "obc-secret",
}

// assertNoCredentials checks that no log entry and no heartbeat carries a
// fixture credential, plain or base64.
func assertNoCredentials(t *testing.T, h *harness, logs *observer.ObservedLogs) {
	t.Helper()
	var texts []string
	for _, e := range logs.All() {
		texts = append(texts, fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
	}
	for _, d := range h.disp.messages() {
		texts = append(texts, string(d.GetContent()))
	}
	for _, c := range fixtureCredentials {
		b64 := strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(c)), "=")
		for _, text := range texts {
			require.NotContains(t, text, c)
			require.NotContains(t, text, b64)
		}
	}
}

func TestOperatorMessagesAreApplied(t *testing.T) {
	const caPEM = "-----BEGIN CERTIFICATE-----\nMIIBlDCCATugAwIBAgIUdjlZWZW07i/SCg78RObhCpZiAkIwCgYIKoZIzj0EAwIw\n"
	osStatsMappings := func(root string) []datasync.Mapping {
		return []datasync.Mapping{
			{ID: "os-stats/egress/stats", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "stats"), Prefix: "statistics"},
			{ID: "os-stats/ingress/local/download/data", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "local/download/data"), Prefix: "remote/data"},
		}
	}
	cases := map[string]func(t *testing.T, h *harness, w podman.Workload){
		"secret.json": func(t *testing.T, h *harness, w podman.Workload) {
			assert.Equal(t, "secret-consumer", w.Name)
			assert.Equal(t, []podman.Secret{{Name: "app-creds", Data: map[string][]byte{
				"token": []byte("placeholder-token-0001"), "password": []byte("placeholder-password-0002"),
			}}}, w.Secrets)
			assert.Contains(t, w.Specification, "secretName: app-creds")
			assert.Nil(t, h.ds.endpoint, "no storage: sync stays off")
		},
		"configmap.json": func(t *testing.T, h *harness, w podman.Workload) {
			assert.Equal(t, "configmap-consumer", w.Name)
			require.Len(t, w.ConfigMaps, 2)
			assert.Contains(t, w.ConfigMaps[0], "greeting: hello-from-configmap")
			assert.Contains(t, w.ConfigMaps[1], "settings.conf: |\n    mode=edge\n    level=3\n")
			assert.Empty(t, w.Secrets)
		},
		"image-registries.json": func(t *testing.T, h *harness, w podman.Workload) {
			assert.Equal(t, "private-registry", w.Name)
			assert.Equal(t, `{"auths":{"localhost":{"auth":"cGxhY2Vob2xkZXItdXNlcjpwbGFjZWhvbGRlci1wYXNz"}}}`, w.AuthFile)
		},
		"seed-external.json": func(t *testing.T, h *harness, w podman.Workload) {
			assert.Equal(t, "os-stats", w.Name)
			assert.Equal(t, "edgedevice-namespace", w.Namespace)
			require.NotNil(t, h.ds.endpoint)
			assert.Equal(t, datasync.Endpoint{Host: "minio.example.com", Port: 443, Secure: true, Region: "us-east-1",
				AccessKey: "ydayagi1369", SecretKey: "ydayagi1369"}, *h.ds.endpoint)
			ms := osStatsMappings(filepath.Join(h.dir, "volumes", "os-stats"))
			for i := range ms {
				ms[i].Bucket = "device-bucket-6"
			}
			assert.Equal(t, ms, h.ds.mappings)
		},
		"seed-obc.json": func(t *testing.T, h *harness, w podman.Workload) {
			require.NotNil(t, h.ds.endpoint)
			ep := *h.ds.endpoint
			assert.Equal(t, "s3-openshift-storage.apps.cluster.example.com", ep.Host)
			assert.Equal(t, 443, ep.Port)
			assert.True(t, ep.Secure)
			assert.Equal(t, "ignore", ep.Region, "the client discovers the region")
			assert.Equal(t, "obc-access", ep.AccessKey)
			assert.Equal(t, "obc-secret", ep.SecretKey)
			assert.True(t, strings.HasPrefix(string(ep.CAPEM), caPEM), "trusts the router CA")
			ms := osStatsMappings(filepath.Join(h.dir, "volumes", "os-stats"))
			for i := range ms {
				ms[i].Bucket = "a1b2-obc-bucket"
			}
			assert.Equal(t, ms, h.ds.mappings)
		},
	}
	for name, check := range cases {
		t.Run(name, func(t *testing.T) {
			h, logs := newObservedHarness(t)
			require.NoError(t, h.send(t, operatorMessage(t, name)))
			hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "999" })
			assert.Equal(t, "up", hb.Status)
			applies := h.wl.applies()
			require.Len(t, applies, 1)
			require.Len(t, applies[0], 1)
			h.ds.mu.Lock()
			check(t, h, applies[0][0])
			h.ds.mu.Unlock()
			require.Len(t, hb.Workloads, 1)
			assert.Equal(t, "running", hb.Workloads[0].Status)

			// The control plane resends it every poll: nothing happens again.
			require.NoError(t, h.send(t, operatorMessage(t, name)))
			time.Sleep(50 * time.Millisecond)
			assert.Len(t, h.wl.applies(), 1)
			assertNoCredentials(t, h, logs)
		})
	}
}
