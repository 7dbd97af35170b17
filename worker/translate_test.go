package worker_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

func TestTranslateBidirectional(t *testing.T) {
	m, err := config.Parse(message(t, "bidirectional.json"))
	require.NoError(t, err)
	p, err := worker.Translate(m, "/data/volumes")
	require.NoError(t, err)

	require.NotNil(t, p.Endpoint)
	assert.Equal(t, datasync.Endpoint{Host: "127.0.0.1", Port: 7070, Secure: false, Region: "ignore", AccessKey: "minioadmin", SecretKey: "minioadmin"}, *p.Endpoint)
	root := "/data/volumes/collector"
	assert.Equal(t, []datasync.Mapping{
		{ID: "collector/egress/local/upload/log", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "local/upload/log"), Bucket: "device-bucket-6", Prefix: "remote/log"},
		{ID: "collector/egress/local/upload/telemetry", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "local/upload/telemetry"), Bucket: "device-bucket-6", Prefix: "remote/telemetry"},
		{ID: "collector/ingress/local/download/data", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "local/download/data"), Bucket: "device-bucket-6", Prefix: "remote/data"},
	}, p.Mappings)
	assert.Equal(t, map[string][]string{"collector": {
		"collector/egress/local/upload/log", "collector/egress/local/upload/telemetry", "collector/ingress/local/download/data",
	}}, p.MappingsOf)
	assert.Empty(t, p.Warnings)
}

func TestTranslateWithoutStorage(t *testing.T) {
	m, err := config.Parse([]byte(`{"workloads":[{"name":"w","specification":"containers: []","data":{"egress":[{"source":"a","target":"b"}]}}]}`))
	require.NoError(t, err)
	p, err := worker.Translate(m, "/v")
	require.NoError(t, err)
	assert.Nil(t, p.Endpoint)
	assert.Empty(t, p.Mappings)
	require.Len(t, p.Workloads, 1)
	require.Len(t, p.Warnings, 1)
	assert.Contains(t, p.Warnings[0], "no storage")
}

func TestTranslateRetentionAnnotations(t *testing.T) {
	m, err := config.Parse(message(t, "retention.json"))
	require.NoError(t, err)
	p, err := worker.Translate(m, "/data/volumes")
	require.NoError(t, err)
	root := "/data/volumes/telemetry"
	assert.Equal(t, []datasync.Mapping{
		{ID: "telemetry/egress/metrics", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "metrics"), Bucket: "device-bucket-6", Prefix: "telemetry/metrics",
			Retention: datasync.Retention{RemoveAfterUpload: true}, Order: datasync.NewestFirst},
		{ID: "telemetry/egress/camera/clips", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "camera/clips"), Bucket: "device-bucket-6", Prefix: "telemetry/clips",
			Retention: datasync.Retention{KeepBytes: 2 << 30, KeepAge: 24 * time.Hour}, Order: datasync.NewestFirst},
		{ID: "telemetry/ingress/config", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "config"), Bucket: "device-bucket-6", Prefix: "telemetry/config"},
	}, p.Mappings)
	assert.Nil(t, p.Workloads[0].Annotations, "data-sync annotations are not the pod's: changing them restarts nothing")

	m.Workloads[0].Annotations["app.example/x"] = "y"
	p, err = worker.Translate(m, "/data/volumes")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"app.example/x": "y"}, p.Workloads[0].Annotations)

	// The staleness bound of a log held open, for one source.
	m.Workloads[0].Annotations["data-sync.flotta.io/max-staleness"] = "metrics=2m"
	p, err = worker.Translate(m, "/data/volumes")
	require.NoError(t, err)
	assert.Equal(t, 2*time.Minute, p.Mappings[0].MaxStaleness)
	assert.Zero(t, p.Mappings[1].MaxStaleness, "the device's bound")
}
