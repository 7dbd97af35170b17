package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// operatorDir holds flotta-operator's own messages for the objects beside
// them (copied from the shared fixtures; see its README.md).
const operatorDir = "../../testdata/operator-messages/"

// normalized decodes a message into generic JSON with the lists the
// operator builds from maps (secrets, configmaps) sorted.
func normalized(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	if s, ok := m["secrets"].([]any); ok {
		sort.Slice(s, func(i, j int) bool {
			return s[i].(map[string]any)["name"].(string) < s[j].(map[string]any)["name"].(string)
		})
	}
	ws, _ := m["workloads"].([]any)
	for _, w := range ws {
		if cms, ok := w.(map[string]any)["configmaps"].([]any); ok {
			sort.Slice(cms, func(i, j int) bool { return cms[i].(string) < cms[j].(string) })
		}
	}
	return m
}

// TestSameMessagesAsTheOperator builds each fixture's message from its
// objects and compares it, field by field, with what the operator built.
func TestSameMessagesAsTheOperator(t *testing.T) {
	for _, c := range []string{"secret", "configmap", "image-registries", "seed-external", "seed-obc"} {
		t.Run(c, func(t *testing.T) {
			objs, err := readObjects([]string{operatorDir + "objects-" + c + ".yaml"})
			require.NoError(t, err)
			msg, err := buildMessage(objs, settings{version: "999"})
			require.NoError(t, err)
			got, err := json.Marshal(msg)
			require.NoError(t, err)
			want, err := os.ReadFile(operatorDir + c + ".json")
			require.NoError(t, err)
			assert.Equal(t, normalized(t, want), normalized(t, got))
		})
	}
}

func TestOnlyTheDevicesNamespace(t *testing.T) {
	other := writeFile(t, "other.yaml", `apiVersion: management.project-flotta.io/v1alpha1
kind: EdgeWorkload
metadata: {name: elsewhere, namespace: default}
spec:
  type: pod
  pod:
    spec:
      containers: [{name: c, image: busybox}]
`)
	objs, err := readObjects([]string{operatorDir + "objects-seed-external.yaml", other})
	require.NoError(t, err)
	msg, err := buildMessage(objs, settings{version: "1"})
	require.NoError(t, err)
	require.Len(t, msg.Workloads, 1)
	assert.Equal(t, "os-stats", msg.Workloads[0].Name)
}

func TestMissingReferencedObjectsAreErrors(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ from, drop, want string }{
		"secret":   {"objects-secret.yaml", "app-creds", "Secret edgedevice-namespace/app-creds not found"},
		"config":   {"objects-configmap.yaml", "app-env", "ConfigMap edgedevice-namespace/app-env not found"},
		"registry": {"objects-image-registries.yaml", "registry-auth", "Secret edgedevice-namespace/registry-auth not found"},
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := readObjects([]string{operatorDir + c.from})
			require.NoError(t, err)
			for i := range objs.secrets {
				if objs.secrets[i].Name == c.drop {
					objs.secrets = append(objs.secrets[:i], objs.secrets[i+1:]...)
					break
				}
			}
			for i := range objs.configMaps {
				if objs.configMaps[i].Name == c.drop {
					objs.configMaps = append(objs.configMaps[:i], objs.configMaps[i+1:]...)
					break
				}
			}
			_, err = buildMessage(objs, settings{version: "1"})
			require.ErrorContains(t, err, c.want)
		})
	}
	_ = filepath.Join(dir)
}
