package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

const k8sData = "../../testdata/k8s/"

func build(t *testing.T, files ...string) (*message, error) {
	t.Helper()
	for i, f := range files {
		if !filepath.IsAbs(f) {
			files[i] = k8sData + f
		}
	}
	objs, err := readObjects(files)
	require.NoError(t, err)
	return buildMessage(objs, settings{version: "7"})
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestSeedExternalStorage(t *testing.T) {
	msg, err := build(t, "edgedevice.yaml", "s3-external.yaml", "edgeworkload-os-stats.yaml")
	require.NoError(t, err)
	assert.Equal(t, "a1b2", msg.DeviceID)
	assert.Equal(t, &config.S3{
		BucketHost: "minio.example.com", BucketPort: 443, BucketName: "device-bucket-6", BucketRegion: "us-east-1",
		AccessKeyID: b64("ydayagi1369"), SecretAccessKey: b64("ydayagi1369"),
	}, msg.Configuration.Storage.S3)
	require.Len(t, msg.Workloads, 1)
	w := msg.Workloads[0]
	assert.Equal(t, "os-stats", w.Name)
	assert.Contains(t, w.Specification, "image: quay.io/example/os-stats:v1")
	assert.Equal(t, []config.DataPath{{Source: "stats", Target: "statistics"}}, w.Data.Egress)
	assert.Equal(t, []config.DataPath{{Source: "remote/data", Target: "local/download/data"}}, w.Data.Ingress)
}

func TestObjectBucketClaimWins(t *testing.T) {
	// Without the Route, the claim ConfigMap's host (the operator never
	// does this; flotta-config warns).
	msg, err := build(t, "edgedevice.yaml", "s3-external.yaml", "obc.yaml")
	require.NoError(t, err)
	assert.Equal(t, &config.S3{
		BucketHost: "s3.openshift-storage.svc", BucketPort: 443, BucketName: "a1b2-obc-bucket", BucketRegion: "ignore",
		AccessKeyID: b64("obc-access"), SecretAccessKey: b64("obc-secret"),
	}, msg.Configuration.Storage.S3)
}

func TestObjectBucketClaimRouteHostAndCAFromFlags(t *testing.T) {
	objs, err := readObjects([]string{k8sData + "edgedevice.yaml", k8sData + "s3-external.yaml", k8sData + "obc.yaml"})
	require.NoError(t, err)
	pem := routerCA(t)
	msg, err := buildMessage(objs, settings{version: "7", routeHost: "s3.apps.example.com", routerCA: pem})
	require.NoError(t, err)
	assert.Equal(t, &config.S3{
		BucketHost: "s3.apps.example.com", BucketPort: 443, BucketName: "a1b2-obc-bucket", BucketRegion: "ignore",
		AccessKeyID: b64("obc-access"), SecretAccessKey: b64("obc-secret"), CABundle: b64(pem),
	}, msg.Configuration.Storage.S3)
}

func TestNoStorageLeavesSyncOff(t *testing.T) {
	dev := writeFile(t, "dev.yaml", "apiVersion: v1alpha1\nkind: EdgeDevice\nmetadata: {name: d, namespace: n}\n")
	msg, err := build(t, dev)
	require.NoError(t, err)
	assert.Nil(t, msg.Configuration.Storage)
	data, err := json.Marshal(msg)
	require.NoError(t, err)
	assert.NotContains(t, string(data), "storage")
}

func TestExternalStorageErrors(t *testing.T) {
	cm := func(data string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s3configmap-name, namespace: edgedevice-namespace}\ndata:\n" + data
	}
	const full = "  BUCKET_HOST: h\n  BUCKET_NAME: b\n  BUCKET_PORT: \"9000\"\n  BUCKET_REGION: r\n"
	const sec = "apiVersion: v1\nkind: Secret\nmetadata: {name: s3secret-name, namespace: edgedevice-namespace}\nstringData: {AWS_ACCESS_KEY_ID: a, AWS_SECRET_ACCESS_KEY: s}\n"
	cases := map[string]struct{ objects, want string }{
		"missing region":  {cm("  BUCKET_HOST: h\n  BUCKET_NAME: b\n  BUCKET_PORT: \"1\"\n") + "---\n" + sec, "missing ConfigMap s3configmap-name key BUCKET_REGION"},
		"missing keys":    {cm(full) + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s3secret-name, namespace: edgedevice-namespace}\n", "key AWS_ACCESS_KEY_ID, Secret s3secret-name key AWS_SECRET_ACCESS_KEY"},
		"bad port":        {cm("  BUCKET_HOST: h\n  BUCKET_NAME: b\n  BUCKET_PORT: https\n  BUCKET_REGION: r\n") + "---\n" + sec, `BUCKET_PORT "https" is not a port number`},
		"no configmap":    {sec, "ConfigMap edgedevice-namespace/s3configmap-name not found"},
		"no secret":       {cm(full), "Secret edgedevice-namespace/s3secret-name not found"},
		"ca is not a PEM": {cm(full) + "---\n" + strings.Replace(sec, "s}\n", "s, tls.crt: nope}\n", 1), "tls.crt is not a PEM certificate"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := build(t, "edgedevice.yaml", writeFile(t, "objs.yaml", c.objects))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestUnsupportedKindIsAnError(t *testing.T) {
	_, err := readObjects([]string{writeFile(t, "x.yaml", "apiVersion: v1\nkind: Deployment\n")})
	require.ErrorContains(t, err, `unsupported kind "Deployment"`)
}

func TestRunWritesValidJSONAtomically(t *testing.T) {
	out := filepath.Join(t.TempDir(), "msg.json")
	require.NoError(t, run([]string{k8sData + "edgedevice.yaml", k8sData + "s3-external.yaml"}, settings{version: "3"}, out))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	assert.Equal(t, "3", m["version"])
	entries, _ := os.ReadDir(filepath.Dir(out))
	assert.Len(t, entries, 1, "no temporary file left behind")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestMessagesTheDeviceWouldRefuseAreErrors(t *testing.T) {
	wl := writeFile(t, "wl.yaml", `apiVersion: management.project-flotta.io/v1alpha1
kind: EdgeWorkload
metadata: {name: escape, namespace: edgedevice-namespace}
spec:
  data:
    egress: [{source: ../etc, target: stolen}]
  type: pod
  pod:
    spec:
      containers: [{name: c, image: busybox}]
`)
	_, err := build(t, "edgedevice.yaml", "s3-external.yaml", wl)
	require.ErrorContains(t, err, "would be refused by the device")
	assert.ErrorContains(t, err, "egress[0].source")
}

// routerCA is the throwaway router CA of the operator's seed-obc fixture.
func routerCA(t *testing.T) string {
	t.Helper()
	objs, err := readObjects([]string{operatorDir + "objects-seed-obc.yaml"})
	require.NoError(t, err)
	return string(secretData(objs.secret(routerCANamespace, routerCAName))["tls.crt"])
}
