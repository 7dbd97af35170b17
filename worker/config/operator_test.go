package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// operatorDir holds messages built by flotta-operator's own code (copied
// from the shared fixtures; see its README.md).
const operatorDir = "../../testdata/operator-messages"

func operatorMessage(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(operatorDir, name))
	require.NoError(t, err)
	return b
}

func TestParseOperatorMessages(t *testing.T) {
	for _, name := range []string{"secret.json", "configmap.json", "image-registries.json", "seed-external.json", "seed-obc.json"} {
		t.Run(name, func(t *testing.T) {
			m, err := config.Parse(operatorMessage(t, name))
			require.NoError(t, err)
			assert.Equal(t, "a1b2", m.DeviceID)
			assert.Equal(t, "999", m.Version)
			assert.Zero(t, m.WorkloadsMonitoringInterval, "the operator never sets it")
			require.Len(t, m.Workloads, 1)
			b, err := m.Canonical()
			require.NoError(t, err)
			again, err := config.Parse(b)
			require.NoError(t, err)
			assert.True(t, m.Equal(again), "the canonical form round-trips")
		})
	}
}

func TestOperatorSecretIsDecoded(t *testing.T) {
	m, err := config.Parse(operatorMessage(t, "secret.json"))
	require.NoError(t, err)
	require.Len(t, m.Secrets, 1)
	assert.Equal(t, "app-creds", m.Secrets[0].Name)
	vals, err := m.Secrets[0].Values()
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{
		"token":    []byte("placeholder-token-0001"),
		"password": []byte("placeholder-password-0002"),
	}, vals)
	assert.EqualValues(t, 3, m.Configuration.Heartbeat.Period())
}

func TestOperatorConfigMapsAndAuthFile(t *testing.T) {
	m, err := config.Parse(operatorMessage(t, "configmap.json"))
	require.NoError(t, err)
	w := m.Workloads[0]
	require.Len(t, w.ConfigMaps, 2)
	assert.Contains(t, w.ConfigMaps[0], "name: app-env")
	assert.Contains(t, w.ConfigMaps[1], "name: app-files")

	m, err = config.Parse(operatorMessage(t, "image-registries.json"))
	require.NoError(t, err)
	require.NotNil(t, m.Workloads[0].ImageRegistries)
	assert.JSONEq(t, `{"auths":{"localhost":{"auth":"cGxhY2Vob2xkZXItdXNlcjpwbGFjZWhvbGRlci1wYXNz"}}}`, m.Workloads[0].ImageRegistries.AuthFile)
}

// The operator builds secrets and configmaps from maps: a resend in another
// order is the same configuration (no re-apply, no disk write).
func TestOrderOfSecretsAndConfigMapsDoesNotMatter(t *testing.T) {
	var raw map[string]any
	require.NoError(t, json.Unmarshal(operatorMessage(t, "configmap.json"), &raw))
	w := raw["workloads"].([]any)[0].(map[string]any)
	cms := w["configmaps"].([]any)
	w["configmaps"] = []any{cms[1], cms[0]}
	raw["secrets"] = []any{
		map[string]any{"name": "b", "data": `{"k":"dg=="}`},
		map[string]any{"name": "a", "data": `{"k":"dg=="}`},
	}
	swapped, err := json.Marshal(raw)
	require.NoError(t, err)
	raw["secrets"] = []any{raw["secrets"].([]any)[1], raw["secrets"].([]any)[0]}
	w["configmaps"] = cms
	straight, err := json.Marshal(raw)
	require.NoError(t, err)

	a, err := config.Parse(swapped)
	require.NoError(t, err)
	b, err := config.Parse(straight)
	require.NoError(t, err)
	assert.True(t, a.Equal(b))
}

func TestBadSecretsAreRefusedWithoutTheirValues(t *testing.T) {
	base := operatorMessage(t, "secret.json")
	for name, c := range map[string]struct {
		secret any
		want   string
	}{
		"not an object":  {map[string]any{"name": "s", "data": `"c2VjcmV0LXZhbHVl"`}, `secrets[0].data (secret "s"): must be a JSON object`},
		"not base64":     {map[string]any{"name": "s", "data": `{"k":"secret-value!"}`}, `secrets[0].data (secret "s"): key "k": value is not base64`},
		"bad key":        {map[string]any{"name": "s", "data": `{"../k":"c2VjcmV0LXZhbHVl"}`}, `key "../k"`},
		"bad name":       {map[string]any{"name": "../s", "data": `{}`}, `secrets[0].name: "../s" is not a valid Secret name`},
		"value not text": {map[string]any{"name": "s", "data": `{"k":1}`}, `must be a JSON object`},
	} {
		t.Run(name, func(t *testing.T) {
			var raw map[string]any
			require.NoError(t, json.Unmarshal(base, &raw))
			raw["secrets"] = []any{c.secret}
			b, err := json.Marshal(raw)
			require.NoError(t, err)
			_, err = config.Parse(b)
			require.ErrorContains(t, err, c.want)
			assert.NotContains(t, err.Error(), "secret-value")
			assert.NotContains(t, err.Error(), "c2VjcmV0LXZhbHVl")
		})
	}
}
