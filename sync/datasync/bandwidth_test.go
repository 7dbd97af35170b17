package datasync

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

// TestThrottledWhileLimited: with a bandwidth limit, a mapping whose
// transfer waits on the limiter says so in its status, in either direction;
// a mapping with nothing in flight does not, and nothing does once the
// transfers are over.
func TestThrottledWhileLimited(t *testing.T) {
	lim := bwlimit.New(bwlimit.Fixed(bwlimit.Limit{Up: 256 << 10, Down: 256 << 10}))
	f := newFixture(t, func(o *Options) { o.Limiter = lim })
	// 768 KiB at 256 KiB/s: about 3 s in each direction.
	f.write("out/big", bytes.Repeat([]byte("u"), 768<<10))
	f.put("in/big", bytes.Repeat([]byte("d"), 768<<10))
	f.configure(f.egress("up", "out", "out"), f.ingress("down", "in-local", "in"), f.egress("idle", "nothing", "idle"))

	done := make(chan error, 1)
	go func() { done <- f.syncNow() }()
	for _, id := range []string{"up", "down"} {
		require.Eventually(t, func() bool {
			if !f.status(id).Throttled {
				return false
			}
			assert.False(t, f.status("idle").Throttled, "idle has no transfer in flight")
			return true
		}, 30*time.Second, 10*time.Millisecond, "%s is never reported throttled", id)
	}
	require.NoError(t, <-done)
	for _, s := range f.eng.Status() {
		assert.False(t, s.Throttled, "%s: nothing in flight any more", s.ID)
	}
	assert.Equal(t, bytes.Repeat([]byte("d"), 768<<10), f.read("in-local/big"))
	assert.Len(t, f.mustGet("out/big"), 768<<10)
}
