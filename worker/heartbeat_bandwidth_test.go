package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

func TestBandwidthLimitHeartbeat(t *testing.T) {
	assert.Nil(t, bandwidthLimitHeartbeat(nil), "no limit: no bandwidth_limit in the heartbeat")

	sched, err := bwlimit.Parse("08:00,1M:256K 23:00,off")
	require.NoError(t, err)
	noon := time.Date(2026, 12, 3, 12, 0, 0, 0, time.Local)
	l := bwlimit.New(sched, bwlimit.WithClock(func() time.Time { return noon }))
	assert.Equal(t, &BandwidthLimitHeartbeat{Setting: "08:00,1M:256K 23:00,off", Up: "1M", Down: "256K"}, bandwidthLimitHeartbeat(l),
		"the rates in force at noon; nothing waited yet")

	// More than the bucket holds must wait: the upload direction is then
	// held at its rate, the download direction is not.
	require.NoError(t, l.WaitN(context.Background(), bwlimit.Up, 3*bwlimit.Burst(1<<20)))
	hb := bandwidthLimitHeartbeat(l)
	assert.True(t, hb.ThrottledUp)
	assert.False(t, hb.ThrottledDown)

	night := bwlimit.New(sched, bwlimit.WithClock(func() time.Time { return noon.Add(12 * time.Hour) }))
	assert.Equal(t, &BandwidthLimitHeartbeat{Setting: "08:00,1M:256K 23:00,off", Up: "off", Down: "off"}, bandwidthLimitHeartbeat(night))
}
