package worker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// TestHeartbeatCarriesTheBandwidthLimit: with a limit, heartbeats carry it
// and each data path's throttled flag; without one, no bandwidth_limit.
func TestHeartbeatCarriesTheBandwidthLimit(t *testing.T) {
	sched, err := bwlimit.Parse("1M:256K")
	require.NoError(t, err)
	h := &harness{wl: &fakeWorkloads{}, ds: &fakeDataSync{}, disp: &fakeDispatcher{}, dir: t.TempDir()}
	w, err := worker.New(worker.Options{DataDir: h.dir, Dispatcher: h.disp, Log: zaptest.NewLogger(t),
		Bandwidth: bwlimit.New(sched)}, h.wl, h.ds)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	h.w = w
	h.ds.setStatus([]datasync.MappingStatus{{ID: "os-stats/egress/stats", Direction: datasync.Egress, Throttled: true}})
	require.NoError(t, h.send(t, message(t, "os-stats.json")))
	hb := h.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	require.NotNil(t, hb.BandwidthLimit)
	assert.Equal(t, worker.BandwidthLimitHeartbeat{Setting: "1M:256K", Up: "1M", Down: "256K"}, *hb.BandwidthLimit)
	require.Len(t, hb.DataSync, 1)
	assert.True(t, hb.DataSync[0].Throttled)

	plain := newHarness(t, t.TempDir())
	require.NoError(t, plain.send(t, message(t, "os-stats.json")))
	hb = plain.waitHeartbeat(t, func(hb worker.Heartbeat) bool { return hb.Version == "48213" })
	assert.Nil(t, hb.BandwidthLimit, "no limit: no bandwidth_limit")
}
