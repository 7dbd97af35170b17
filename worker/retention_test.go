package worker_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// The message flotta-operator sends for an EdgeWorkload annotated
// podman/data-sync.flotta.io/...: the worker parses it as it arrives and
// hands each egress mapping its retention and order; the heartbeat carries
// what retention kept and removed, and says when space runs short.
func TestRetentionAnnotationsReachTheEngineAndHeartbeat(t *testing.T) {
	h := newHarness(t, t.TempDir())
	require.NoError(t, h.send(t, message(t, "retention.json")))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48300" })

	h.ds.mu.Lock()
	ms := h.ds.mappings
	h.ds.mu.Unlock()
	root := filepath.Join(h.dir, "volumes", "telemetry")
	require.Len(t, ms, 3)
	assert.Equal(t, datasync.Mapping{ID: "telemetry/egress/metrics", Direction: datasync.Egress, Root: root,
		LocalDir: filepath.Join(root, "metrics"), Bucket: "device-bucket-6", Prefix: "telemetry/metrics",
		Retention: datasync.Retention{RemoveAfterUpload: true}, Order: datasync.NewestFirst}, ms[0])
	assert.Equal(t, datasync.Retention{KeepBytes: 2 << 30, KeepAge: 24 * time.Hour}, ms[1].Retention)
	assert.Equal(t, datasync.Retention{}, ms[2].Retention, "ingress has none")

	h.ds.mu.Lock()
	h.ds.status = []datasync.MappingStatus{{ID: "telemetry/egress/metrics", Direction: datasync.Egress, Prefix: "telemetry/metrics",
		KeptFiles: 1, KeptBytes: 10, LocalBytes: 30, RemovedFiles: 4, RemovedBytes: 40,
		ShortOfSpace: "the file system of /x lacks 5 bytes of its free-space floor and nothing uploaded is left to remove"}}
	h.ds.mu.Unlock()
	// A new version is applied and reported at once.
	require.NoError(t, h.send(t, edit(t, message(t, "retention.json"), func(m map[string]any) { m["version"] = "48301" })))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48301" && len(hb.DataSync) == 1 })
	d := hb.DataSync[0]
	assert.Equal(t, []int64{1, 10, 30, 4, 40}, []int64{d.KeptFiles, d.KeptBytes, d.LocalBytes, d.RemovedFiles, d.RemovedBytes})
	assert.Contains(t, d.ShortOfSpace, "nothing uploaded is left to remove")
	assert.Equal(t, worker.StatusDegraded, hb.Status)
	var said bool
	for _, e := range hb.Events {
		said = said || e.Reason == "DataSyncShortOfSpace" && e.Type == "warn"
	}
	assert.True(t, said, "short of space is a warn event: %+v", hb.Events)

	// A bad annotation is refused, naming the key; nothing changes.
	err := h.send(t, message(t, "bad/bad-retention-annotation.json"))
	require.Error(t, err)
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "annotations[data-sync.flotta.io/keep-size]")
}
