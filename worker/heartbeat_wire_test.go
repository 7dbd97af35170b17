package worker

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

// TestHeartbeatWireFormat pins the JSON of a heartbeat with every field set
// (and one data path with its optional fields empty) to
// testdata/heartbeat/full.json: the control plane reads it, so a change in
// the Go types must not change it. go test ./worker -run WireFormat -update
// rewrites the file after a deliberate change.
func TestHeartbeatWireFormat(t *testing.T) {
	now := time.Date(2026, 12, 2, 19, 0, 0, 0, time.UTC)
	full := datasync.MappingStatus{
		ID: "os-stats/egress/stats", Direction: datasync.Egress, LocalDir: "/v/os-stats/stats", Bucket: "b", Prefix: "statistics",
		LastAttempt: now.Add(-time.Second), LastSuccess: now.Add(-2 * time.Second), FilesTotal: 3, BytesTotal: 96,
		FilesLastPass: 1, BytesLastPass: 32, Pending: 2, Refused: 1, Unreadable: 4, Conflicts: 2, LastError: "upload a: access denied",
		OldestPending: now.Add(-90 * time.Second), Throttled: true, OldestUnsent: now.Add(-90 * time.Second), BytesSavedByPartCopy: 64 << 20,
		LocalBytes: 5000, KeptFiles: 2, KeptBytes: 3000, RemovedFiles: 7, RemovedBytes: 7000,
		ShortOfSpace: "the file system of /v/os-stats/stats lacks 1024 bytes of its free-space floor and nothing uploaded is left to remove",
	}
	empty := datasync.MappingStatus{ID: "os-stats/ingress/local/data", Direction: datasync.Ingress, LocalDir: "/v/os-stats/local/data", Bucket: "b", Prefix: "remote/data"}
	polled := datasync.MappingStatus{ID: "os-stats/ingress/cfg", Direction: datasync.Ingress, LocalDir: "/v/os-stats/cfg", Bucket: "b", Prefix: "cfg",
		Ingress: &datasync.IngressMode{Mode: datasync.ModePoll, Reason: datasync.ReasonUnsupported, Since: now.Add(-time.Hour)}}
	hb := Heartbeat{
		Status: StatusDegraded, Version: "48213",
		Workloads: []WorkloadHeartbeat{
			{Name: "os-stats", Status: string(podman.Running), LastDataUpload: "2026-12-02T18:59:58Z"},
			{Name: "crashy", Status: string(podman.Crashed), Message: "exit 1"},
		},
		Events:        heartbeatEvents(podman.Event{Reason: "Pulled", Message: "image pulled", Type: EventInfo}),
		DataSyncState: DataSyncOn,
		DataSync:      []DataSyncHeartbeat{dataSyncHeartbeat(full, now), dataSyncHeartbeat(empty, now), dataSyncHeartbeat(polled, now)},
		BandwidthLimit: &BandwidthLimitHeartbeat{Setting: "08:00,1M:256K 23:00,off", Up: "1M", Down: "256K",
			ThrottledUp: true, ThrottledDown: false},
	}
	got, err := json.MarshalIndent(hb, "", "  ")
	require.NoError(t, err)
	golden := filepath.Join("..", "testdata", "heartbeat", "full.json")
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
		require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got)+"\n")

	// An empty heartbeat still carries every list, as [] rather than null.
	got, err = json.Marshal(Heartbeat{Status: StatusUp, Workloads: []WorkloadHeartbeat{}, Events: heartbeatEvents(), DataSyncState: DataSyncNoStorage, DataSync: []DataSyncHeartbeat{}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"status":"up","version":"","workloads":[],"events":[],"data_sync_state":"off: no storage configured","data_sync":[]}`, string(got))
}

var update = flag.Bool("update", false, "rewrite testdata/heartbeat/full.json")
