package config_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

const messagesDir = "../../testdata/messages"

func readMessage(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(messagesDir, name))
	require.NoError(t, err)
	return b
}

func TestParseSeedExample(t *testing.T) {
	m, err := config.Parse(readMessage(t, "os-stats.json"))
	require.NoError(t, err)

	assert.Equal(t, "a1b2", m.DeviceID)
	assert.Equal(t, "48213", m.Version)
	assert.EqualValues(t, 15, m.WorkloadsMonitoringInterval)
	assert.EqualValues(t, 60, m.Configuration.Heartbeat.Period())
	require.Len(t, m.Workloads, 1)
	w := m.Workloads[0]
	assert.Equal(t, "os-stats", w.Name)
	assert.Equal(t, map[string]string{"dc": "home"}, w.Labels)
	assert.Nil(t, w.Annotations, "empty maps are dropped so that {} and absent compare equal")
	require.NotNil(t, w.Data)
	assert.Equal(t, []config.DataPath{{Source: "stats", Target: "statistics"}}, w.Data.Egress)

	ep, err := m.Configuration.Storage.S3.Endpoint()
	require.NoError(t, err)
	assert.Equal(t, "minio.example.com", ep.Host)
	assert.Equal(t, 443, ep.Port)
	assert.True(t, ep.Secure)
	assert.Equal(t, "ydayagi1369", ep.AccessKey)
	assert.Equal(t, "ydayagi1369", ep.SecretKey)
	assert.Nil(t, ep.CAPEM)
}

func TestParseGoodMessages(t *testing.T) {
	for _, name := range []string{"os-stats.json", "bidirectional.json", "no-storage.json", "with-ca-bundle.json"} {
		t.Run(name, func(t *testing.T) {
			m, err := config.Parse(readMessage(t, name))
			require.NoError(t, err)
			// The canonical form parses back to the same message.
			b, err := m.Canonical()
			require.NoError(t, err)
			again, err := config.Parse(b)
			require.NoError(t, err)
			assert.True(t, m.Equal(again))
		})
	}
}

func TestParseCABundle(t *testing.T) {
	m, err := config.Parse(readMessage(t, "with-ca-bundle.json"))
	require.NoError(t, err)
	ep, err := m.Configuration.Storage.S3.Endpoint()
	require.NoError(t, err)
	assert.Contains(t, string(ep.CAPEM), "-----BEGIN CERTIFICATE-----")
}

func TestParseNoStorageAndUnknownFields(t *testing.T) {
	m, err := config.Parse(readMessage(t, "no-storage.json"))
	require.NoError(t, err)
	assert.Nil(t, m.Configuration.Storage)

	m, err = config.Parse([]byte(`{"version":"2","configuration":{"storage":{}},"x":1}`))
	require.NoError(t, err)
	assert.Nil(t, m.Configuration.Storage, `"storage":{} means no storage`)
}

func TestParseBadMessages(t *testing.T) {
	want := map[string]string{
		"dotdot-egress-source.json":     `workloads[0].data.egress[1].source: must not contain ".."`,
		"absolute-ingress-target.json":  `workloads[0].data.ingress[0].target: must be relative`,
		"nul-in-path.json":              `workloads[0].data.egress[1].source: must not contain NUL`,
		"empty-target.json":             `workloads[0].data.egress[1].target: must not be empty`,
		"duplicate-workload-names.json": `workloads[1].name: "os-stats" is already the name of workloads[0]`,
		"bad-workload-name.json":        `workloads[0].name: "OS_Stats" is not a DNS-1123 label`,
		"ingress-inside-egress.json":    `workloads[0].data.ingress[0].target: "stats/incoming" overlaps data.egress[0].source "stats"`,
		"ingress-contains-egress.json":  `workloads[0].data.ingress[0].target: "data" overlaps data.egress[1].source "data/out"`,
		"ingress-equals-egress.json":    `workloads[0].data.ingress[0].target: "stats" overlaps data.egress[0].source "stats"`,
		"bad-base64-key.json":           `configuration.storage.s3.aws_secret_access_key: must be base64`,
		"missing-bucket-name.json":      `configuration.storage.s3.bucket_name: must not be empty`,
		"missing-access-key.json":       `configuration.storage.s3.aws_access_key_id: must not be empty`,
		"ca-bundle-not-pem.json":        `configuration.storage.s3.aws_ca_bundle: must be base64 of PEM certificates`,
		"bad-scheme.json":               `configuration.storage.s3.bucket_host: scheme must be`,
		"empty-specification.json":      `workloads[0].specification: must not be empty`,
		"not-json.json":                 `decode JSON`,
		"bad-retention-annotation.json": `workloads[0].annotations[data-sync.flotta.io/keep-size]: camera/clips: "lots": want a size`,
	}
	entries, err := os.ReadDir(filepath.Join(messagesDir, "bad"))
	require.NoError(t, err)
	require.Len(t, entries, len(want), "every bad message has an expected error")
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			expected, ok := want[e.Name()]
			require.True(t, ok, "no expectation for %s", e.Name())
			m, err := config.Parse(readMessage(t, filepath.Join("bad", e.Name())))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), expected)
			assert.NotContains(t, err.Error(), "eWRheWFnaTEzNjk", "errors never quote credentials")
		})
	}
}

func TestParseHostileInline(t *testing.T) {
	wl := func(data string) string {
		return `{"workloads":[{"name":"w","specification":"containers: []","data":` + data + `}]}`
	}
	cases := map[string]struct{ msg, err string }{
		"dotdot inside":          {wl(`{"egress":[{"source":"a/../../b","target":"t"}]}`), `must not contain ".."`},
		"dotdot cleaned away":    {wl(`{"egress":[{"source":"a/../b","target":"t"}]}`), `must not contain ".."`},
		"dot only":               {wl(`{"egress":[{"source":"./","target":"t"}]}`), `not the root itself`},
		"absolute prefix":        {wl(`{"ingress":[{"source":"/bucket","target":"t"}]}`), `data.ingress[0].source: must be relative`},
		"duplicate egress":       {wl(`{"egress":[{"source":"a","target":"t"},{"source":"a/","target":"u"}]}`), `data.egress[1].source: "a" is already`},
		"nested ingress targets": {wl(`{"ingress":[{"source":"p","target":"a"},{"source":"q","target":"a/b"}]}`), `data.ingress[1].target: "a/b" overlaps data.ingress[0].target "a"`},
		"negative period":        {`{"configuration":{"heartbeat":{"period_seconds":-1}}}`, `configuration.heartbeat.period_seconds`},
		"port out of range":      {`{"configuration":{"storage":{"s3":{"bucket_host":"h","bucket_port":70000}}}}`, `bucket_port`},
		"port in host":           {`{"configuration":{"storage":{"s3":{"bucket_host":"h:9000"}}}}`, `must not carry a port`},
		"path in host":           {`{"configuration":{"storage":{"s3":{"bucket_host":"https://h/x"}}}}`, `without path`},
		"missing host":           {`{"configuration":{"storage":{"s3":{"bucket_name":"b"}}}}`, `bucket_host: must not be empty`},
		"spec not a mapping":     {`{"workloads":[{"name":"w","specification":"- a\n- b"}]}`, `specification: must be the YAML`},
		"trailing data":          {`{} {}`, `trailing data`},
		"secret without name":    {`{"secrets":[{"data":"{}"}]}`, `secrets[0].name`},
		"name too long":          {`{"workloads":[{"name":"` + strings.Repeat("a", 64) + `","specification":"a: b"}]}`, `DNS-1123`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.msg))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.err)
		})
	}
}

func TestBucketHostScheme(t *testing.T) {
	s3 := func(host string, port int) string {
		return `{"configuration":{"storage":{"s3":{"bucket_host":"` + host + `","bucket_port":` + strconv.Itoa(port) +
			`,"bucket_name":"b","aws_access_key_id":"YQ==","aws_secret_access_key":"Yg"}}}}`
	}
	cases := []struct {
		host   string
		port   int
		want   string
		secure bool
		wport  int
	}{
		{"http://minio.local", 0, "minio.local", false, 80},
		{"HTTP://minio.local", 9000, "minio.local", false, 9000},
		{"https://s3.example.com", 0, "s3.example.com", true, 443},
		{"s3.example.com", 8443, "s3.example.com", true, 8443},
		{"http://127.0.0.1/", 7070, "127.0.0.1", false, 7070},
		{"http://[::1]", 7070, "::1", false, 7070},
	}
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			m, err := config.Parse([]byte(s3(c.host, c.port)))
			require.NoError(t, err)
			ep, err := m.Configuration.Storage.S3.Endpoint()
			require.NoError(t, err)
			assert.Equal(t, c.want, ep.Host)
			assert.Equal(t, c.secure, ep.Secure)
			assert.Equal(t, c.wport, ep.Port)
			assert.Equal(t, "b", ep.SecretKey, "unpadded base64 is accepted")
		})
	}
}

func TestPathsAreStoredCleaned(t *testing.T) {
	m, err := config.Parse([]byte(`{"workloads":[{"name":"w","specification":"a: b","data":{"egress":[{"source":"./logs//app/","target":"/x/"}]}}]}`))
	require.Error(t, err, "a bucket prefix with a leading slash is absolute")
	assert.Nil(t, m)

	m, err = config.Parse([]byte(`{"workloads":[{"name":"w","specification":"a: b","data":{"egress":[{"source":"./logs//app/","target":"x/y/"}]}}]}`))
	require.NoError(t, err)
	assert.Equal(t, config.DataPath{Source: "logs/app", Target: "x/y"}, m.Workloads[0].Data.Egress[0])
}

func TestEqualIgnoresFormattingNotContent(t *testing.T) {
	a, err := config.Parse(readMessage(t, "os-stats.json"))
	require.NoError(t, err)
	compact, err := a.Canonical()
	require.NoError(t, err)
	b, err := config.Parse(compact)
	require.NoError(t, err)
	assert.True(t, a.Equal(b))

	c, err := config.Parse(readMessage(t, "os-stats.json"))
	require.NoError(t, err)
	c.Workloads[0].Labels["dc"] = "office"
	assert.False(t, a.Equal(c), "a label change is a change even under the same version")

	d, err := config.Parse(readMessage(t, "os-stats.json"))
	require.NoError(t, err)
	d.Secrets = []config.Secret{{Name: "s"}}
	assert.False(t, a.Equal(d), "a secret change is a change")
}
