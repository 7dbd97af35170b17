package datasync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNextPoll(t *testing.T) {
	noJitter := func(n int64) int64 { return n / 2 } // the middle of the ±10% band
	base, ceiling := 15*time.Second, 5*time.Minute
	var s pollState
	var steps []time.Duration
	for range 7 {
		s = nextPoll(s, false, base, ceiling, noJitter)
		steps = append(steps, s.every)
		assert.Equal(t, s.every, s.wait, "the middle of the jitter band is the step")
	}
	assert.Equal(t, []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}, steps)
	assert.Equal(t, pollState{}, nextPoll(s, true, base, ceiling, noJitter), "a change brings the base interval back")
	assert.Equal(t, pollState{}, nextPoll(pollState{}, false, base, base, noJitter), "a cap at the interval: no growth")

	for range 1000 {
		s := nextPoll(pollState{every: 4 * time.Minute}, false, base, ceiling, rand.Int64N)
		require.GreaterOrEqual(t, s.wait, 270*time.Second)
		require.LessOrEqual(t, s.wait, 330*time.Second)
	}
}

// simClock drives Run's rounds (startPasses every Interval plus up to 10%
// jitter, as Run does) on a fake clock.
type simClock struct {
	f    *memFixture
	now  time.Time
	mu   sync.Mutex
	full []time.Time // when full passes of the mapping started
}

func newSimClock(f *memFixture) *simClock {
	c := &simClock{f: f, now: time.Now()}
	f.eng.now = func() time.Time { return c.now }
	f.eng.onPass = func(_ string, _ PassOptions, partial bool) {
		if !partial {
			c.mu.Lock()
			c.full = append(c.full, c.now)
			c.mu.Unlock()
		}
	}
	return c
}

// runFor runs rounds for d of simulated time; until, when set, stops earlier.
func (c *simClock) runFor(d time.Duration, until func() bool) {
	ctx := context.Background()
	end := c.now.Add(d)
	iv := c.f.eng.opts.Interval
	for c.now.Before(end) {
		var wg sync.WaitGroup
		c.f.eng.startPasses(ctx, &wg, false)
		wg.Wait()
		if until != nil && until() {
			return
		}
		c.now = c.now.Add(iv + time.Duration(rand.Int64N(int64(iv)/10+1)))
	}
}

// An idle ingress mapping on a server without notifications, over a
// simulated day with the default settings (15 s interval, 5 min cap, hourly
// reconcile): the requests it costs, against the same day without adaptive
// polling; then an object put while polling at the cap arrives within the
// cap and the base interval comes back.
func TestIdleIngressRequestsPerDay(t *testing.T) {
	day := func(pollMax time.Duration) (int64, *simClock, *memFixture) {
		f := newMemFixture(t, func(o *Options) { o.Interval = DefaultInterval; o.PollMax = pollMax; o.ReconcileInterval = 0 })
		f.be.put("in/a.txt", []byte("a"))
		f.configure(f.ingress("in", "in", "in"))
		c := newSimClock(f)
		c.runFor(time.Minute, nil) // the first download
		require.Equal(t, int64(1), f.status("in").FilesTotal)
		before := f.be.requests()
		c.runFor(24*time.Hour, nil)
		return f.be.requests() - before, c, f
	}
	adaptive, c, f := day(0)
	fixed, _, _ := day(DefaultInterval)
	t.Logf("idle ingress mapping, requests per day: %d adaptive (cap %s), %d at a fixed %s", adaptive, DefaultPollMax, fixed, DefaultInterval)
	assert.LessOrEqual(t, adaptive, int64(500))
	assert.GreaterOrEqual(t, fixed, int64(5000))

	// At the cap now: a new object waits at most the cap (plus jitter and
	// a round), then passes come every round again.
	put := c.now
	f.be.put("in/b.txt", []byte("b"))
	arrived := func() bool { _, err := os.Stat(filepath.Join(f.root, "in", "b.txt")); return err == nil }
	c.runFor(10*time.Minute, arrived)
	require.True(t, arrived())
	latency := c.now.Sub(put)
	t.Logf("object put at the cap arrived after %s (simulated)", latency)
	assert.LessOrEqual(t, latency, DefaultPollMax*11/10+2*DefaultInterval)
	n := len(c.full)
	c.now = c.now.Add(DefaultInterval)
	c.runFor(time.Second, nil)
	assert.Equal(t, n+1, len(c.full), "after a change, the next pass one base interval later")
}

// More keys announced than maxEventBatch while a batch is applied: one full
// pass instead of a HEAD each.
func TestEventFloodBecomesAFullPass(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("in", "in", "in"))
	f.eng.mu.Lock()
	f.eng.maps["in"].prompt = false
	f.eng.mu.Unlock()
	a := &applier{id: "in", wake: make(chan struct{}, 1)}
	for i := range maxEventBatch + 1 {
		a.add(fmt.Sprintf("k%05d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.eng.runApplier(ctx, a) }()
	waitFor(t, "full pass asked for", 5*time.Second, func() bool {
		f.eng.mu.Lock()
		defer f.eng.mu.Unlock()
		return f.eng.maps["in"].prompt
	})
	cancel()
	<-done
	assert.Zero(t, f.be.stats.Load(), "no HEAD")
}
