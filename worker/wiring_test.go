package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
)

func TestRemovedWorkloadGetsALastEgressPassBeforeItsMappingsStop(t *testing.T) {
	h := newHarness(t, t.TempDir())
	both := edit(t, message(t, "os-stats.json"), func(m map[string]any) {
		ws := m["workloads"].([]any)
		other := map[string]any{"name": "logger", "specification": "containers:\n- name: c\n  image: busybox\n",
			"data": map[string]any{"egress": []any{map[string]any{"source": "logs", "target": "logs"}},
				"ingress": []any{map[string]any{"source": "remote/cfg", "target": "cfg"}}}}
		m["workloads"] = append(ws, other)
	})
	require.NoError(t, h.send(t, both))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return len(hb.Workloads) == 2 })

	onlyStats := edit(t, both, func(m map[string]any) { m["workloads"] = m["workloads"].([]any)[:1] })
	require.NoError(t, h.send(t, onlyStats))
	require.Eventually(t, func() bool { return len(h.ds.history()) == 3 }, waitFor, 10*time.Millisecond)
	assert.Equal(t, []string{
		"configure:os-stats/egress/stats,logger/egress/logs,logger/ingress/cfg",
		"sync:logger/egress/logs", // the last upload of the removed workload, ingress needs none
		"configure:os-stats/egress/stats",
	}, h.ds.history())
}

func TestMonitoringIntervalReachesTheWorkloadRunner(t *testing.T) {
	h := newHarness(t, t.TempDir())
	msg := edit(t, message(t, "os-stats.json"), func(m map[string]any) { m["workloads_monitoring_interval"] = 7 })
	require.NoError(t, h.send(t, msg))
	require.Eventually(t, func() bool {
		h.wl.mu.Lock()
		defer h.wl.mu.Unlock()
		return h.wl.interval == 7*time.Second
	}, waitFor, 10*time.Millisecond)
}

func TestHeartbeatSaysWhenSyncIsOff(t *testing.T) {
	h := newHarness(t, t.TempDir())
	require.NoError(t, h.send(t, message(t, "no-storage.json")))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version != "" })
	assert.Equal(t, worker.DataSyncNoStorage, hb.DataSyncState)

	h2 := newHarness(t, t.TempDir())
	require.NoError(t, h2.send(t, message(t, "os-stats.json")))
	hb = h2.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version != "" })
	assert.Equal(t, worker.DataSyncOn, hb.DataSyncState)
}

func TestSyncFailuresAndRefusalsBecomeWarnEventsOnce(t *testing.T) {
	h := newHarness(t, t.TempDir())
	fast := edit(t, message(t, "os-stats.json"), func(m map[string]any) {
		m["configuration"].(map[string]any)["heartbeat"] = map[string]any{"period_seconds": 1}
	})
	require.NoError(t, h.send(t, fast))
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version != "" })

	h.ds.setStatus([]datasync.MappingStatus{{ID: "os-stats/egress/stats", Direction: datasync.Egress, LastError: "upload a: access denied"}})
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hasEvent(hb, "DataSyncFailed") })
	assert.Equal(t, "degraded", hb.Status)

	h.ds.setStatus([]datasync.MappingStatus{{ID: "os-stats/egress/stats", Direction: datasync.Egress, Refused: 2, LastError: "disk guard: 10 MiB would leave less than 512 MiB free"}})
	hb = h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hasEvent(hb, "DataSyncRefused") })
	for _, e := range hb.Events {
		if e.Reason == "DataSyncRefused" {
			assert.Equal(t, "warn", e.Type)
			assert.Contains(t, e.Message, "2 file(s) not written: disk guard")
		}
	}

	h.ds.setStatus([]datasync.MappingStatus{{ID: "os-stats/egress/stats", Direction: datasync.Egress, Refused: 2}})
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hasEvent(hb, "DataSyncRecovered") })

	// A conflict copy is news too.
	h.ds.setStatus([]datasync.MappingStatus{{ID: "os-stats/egress/stats", Direction: datasync.Egress, Refused: 2},
		{ID: "os-stats/ingress/local/data", Direction: datasync.Ingress, Conflicts: 1}})
	hb = h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hasEvent(hb, "DataSyncConflict") })
	for _, e := range hb.Events {
		if e.Reason == "DataSyncConflict" {
			assert.Equal(t, "warn", e.Type)
			assert.Contains(t, e.Message, "1 file(s) changed on the device and in the bucket")
		}
	}
	h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return !hasEvent(hb, "DataSyncConflict") })

	count, conflicts := 0, 0
	for _, hb := range h.heartbeats(t) {
		for _, e := range hb.Events {
			switch e.Reason {
			case "DataSyncFailed":
				count++
			case "DataSyncConflict":
				conflicts++
			}
		}
	}
	assert.Equal(t, 1, count, "an error is reported once, not in every heartbeat")
	assert.Equal(t, 1, conflicts, "a conflict is reported once")
}

func TestFinalSyncUploadsEveryEgressMapping(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.ds.setStatus([]datasync.MappingStatus{
		{ID: "a/egress/x", Direction: datasync.Egress},
		{ID: "a/ingress/y", Direction: datasync.Ingress},
		{ID: "b/egress/z", Direction: datasync.Egress},
	})
	require.NoError(t, h.w.FinalSync(context.Background()))
	assert.Equal(t, []string{"sync:a/egress/x,b/egress/z"}, h.ds.history())
}

func hasEvent(hb worker.Heartbeat, reason string) bool {
	for _, e := range hb.Events {
		if e.Reason == reason {
			return true
		}
	}
	return false
}

func TestHeartbeatDataSyncNamesThePathsAndTheLag(t *testing.T) {
	h := newHarness(t, t.TempDir())
	oldest := time.Now().Add(-90 * time.Second)
	h.ds.setStatus([]datasync.MappingStatus{
		{ID: "os-stats/egress/stats", Direction: datasync.Egress, Prefix: "statistics", Pending: 3, OldestPending: oldest},
		{ID: "os-stats/ingress/local/download/data", Direction: datasync.Ingress, Prefix: "remote/data"},
	})
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version != "" })
	require.Len(t, hb.DataSync, 2)
	eg, in := hb.DataSync[0], hb.DataSync[1]
	assert.Equal(t, []string{"os-stats", "stats", "statistics"}, []string{eg.Workload, eg.Source, eg.Target})
	assert.InDelta(t, 90, eg.LagSeconds, 5)
	assert.Equal(t, []string{"os-stats", "remote/data", "local/download/data"}, []string{in.Workload, in.Source, in.Target})
	assert.Zero(t, in.LagSeconds, "nothing pending, no lag")
}
