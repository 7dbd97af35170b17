package datasync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
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
		s = nextPoll(s, false, 2*time.Second, base, ceiling, noJitter)
		steps = append(steps, s.every)
		assert.Equal(t, s.every, s.wait, "the middle of the jitter band is the step")
	}
	assert.Equal(t, []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}, steps)
	assert.Equal(t, pollState{}, nextPoll(s, true, 0, base, ceiling, noJitter), "without fast polls a change brings the base interval back")
	assert.Equal(t, pollState{}, nextPoll(s, true, base, base, ceiling, noJitter), "fast polls no faster than the base: the base")
	assert.Equal(t, pollState{}, nextPoll(pollState{}, false, 2*time.Second, base, base, noJitter), "a cap at the interval: no growth")

	// After a change: 2 s, then doubling from there to the cap.
	s = nextPoll(s, true, 2*time.Second, base, ceiling, noJitter)
	steps = []time.Duration{s.every}
	for range 8 {
		s = nextPoll(s, false, 2*time.Second, base, ceiling, noJitter)
		steps = append(steps, s.every)
	}
	assert.Equal(t, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
		64 * time.Second, 128 * time.Second, 256 * time.Second, 5 * time.Minute}, steps)

	for range 1000 {
		s := nextPoll(pollState{every: 4 * time.Minute}, false, 2*time.Second, base, ceiling, rand.Int64N)
		require.GreaterOrEqual(t, s.wait, 270*time.Second)
		require.LessOrEqual(t, s.wait, 330*time.Second)
	}
}

// simClock drives the mappings' schedules on a simulated clock: a round is
// every loop acting as if its timer fired, then the clock jumps to the next
// pass due.
type simClock struct {
	t    *testing.T
	f    *memFixture
	at   atomic.Pointer[time.Time]
	mu   sync.Mutex
	full []time.Time // when full passes of the mapping started
}

func newSimClock(f *memFixture) *simClock {
	c := &simClock{t: f.t, f: f}
	c.set(time.Now())
	f.eng.hooks.onPass = func(_ string, _ PassOptions, partial bool) {
		if !partial {
			c.mu.Lock()
			c.full = append(c.full, c.now())
			c.mu.Unlock()
		}
	}
	simulateClock(f.t, f.eng, &c.at)
	return c
}

func (c *simClock) now() time.Time  { return *c.at.Load() }
func (c *simClock) set(t time.Time) { c.at.Store(&t) }

func (c *simClock) fullPasses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.full)
}

// runFor runs rounds for d of simulated time; until, when set, stops earlier.
func (c *simClock) runFor(d time.Duration, until func() bool) {
	end := c.now().Add(d)
	for c.now().Before(end) {
		c.step()
		if until != nil && until() {
			return
		}
	}
}

// step runs a round, then moves the clock to the next pass due.
func (c *simClock) step() {
	c.f.eng.simRound()
	next := c.f.eng.simNextDue(c.t)
	c.set(maxTime(next, c.now().Add(time.Millisecond)))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// An idle ingress mapping on a server without notifications, over a
// simulated day with the default settings (15 s interval, 5 min cap, hourly
// reconcile): the requests it costs, against the same day without adaptive
// polling; then an object put while polling at the cap arrives within the
// cap and the base interval comes back.
func TestIdleIngressRequestsPerDay(t *testing.T) {
	day := func(pollMax time.Duration) (int64, *simClock, *memFixture) {
		f := newMemFixture(t, func(o *Options) { o.Interval = DefaultInterval; o.PollMax = pollMax; o.ReconcileInterval = 0 })
		c := newSimClock(f)
		f.be.put("in/a.txt", []byte("a"))
		f.configure(f.ingress("in", "in", "in"))
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

	// At the cap now: a new object put just after a pass waits at most the
	// cap (plus jitter), then the polls are fast again.
	f.eng.simRound() // the pass due now
	put := c.now()
	f.be.put("in/b.txt", []byte("b"))
	arrived := func() bool { _, err := os.Stat(filepath.Join(f.root, "in", "b.txt")); return err == nil }
	c.runFor(10*time.Minute, arrived)
	require.True(t, arrived())
	latency := c.now().Sub(put)
	t.Logf("object put at the cap arrived after %s (simulated)", latency)
	assert.LessOrEqual(t, latency, DefaultPollMax*11/10+2*DefaultInterval)
	n := c.fullPasses()
	c.set(c.now().Add(DefaultInterval))
	c.runFor(time.Second, nil)
	assert.Equal(t, n+1, c.fullPasses(), "after a change, the next pass comes fast")
}

// More keys announced than maxEventBatch while a batch is applied: one full
// pass instead of a HEAD each.
func TestEventFloodBecomesAFullPass(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("in", "in", "in"))
	f.eng.inspect(t, "in", func(ls *loopState) { ls.sched.prompt = false })
	a := &applier{id: "in", wake: make(chan struct{}, 1)}
	for i := range maxEventBatch + 1 {
		a.add(fmt.Sprintf("k%05d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.eng.runApplier(ctx, a) }()
	waitFor(t, "full pass asked for", 5*time.Second, func() bool {
		var prompt bool
		f.eng.inspect(t, "in", func(ls *loopState) { prompt = ls.sched.prompt })
		return prompt
	})
	cancel()
	<-done
	assert.Zero(t, f.be.stats.Load(), "no HEAD")
}

// A burst of one object a second on a server without notifications, with
// the default settings: once a pass has found the first object, the next
// passes come every PollFast (2 s) instead of every Interval, so each later
// object waits about 1 s; after the burst the waits grow back to the cap.
func TestBurstIsPolledFast(t *testing.T) {
	f := newMemFixture(t, func(o *Options) { o.Interval = DefaultInterval; o.PollMax = DefaultPollMax; o.ReconcileInterval = 0 })
	c := newSimClock(f)
	f.configure(f.ingress("in", "in", "in"))
	c.runFor(time.Hour, nil) // idle: polling at the cap
	f.eng.simRound()         // the pass due now
	start := c.now()         // just after a pass
	const burst = 420        // 7 min: longer than the wait at the cap
	put := make([]time.Time, burst)
	var lat []time.Duration
	seen := -1 // the objects up to seen have arrived
	next := 0
	for seen < burst-1 && c.now().Sub(start) < 15*time.Minute {
		for ; next < burst && !start.Add(time.Duration(next)*time.Second).After(c.now()); next++ {
			put[next] = start.Add(time.Duration(next) * time.Second)
			f.be.put(fmt.Sprintf("in/%03d", next), []byte("x"))
		}
		f.eng.simRound()
		for seen < next-1 {
			if _, err := os.Stat(filepath.Join(f.root, "in", fmt.Sprintf("%03d", seen+1))); err != nil {
				break
			}
			seen++
			lat = append(lat, c.now().Sub(put[seen]))
		}
		// The next pass due, or the next put, whichever comes first.
		at := maxTime(f.eng.simNextDue(t), c.now().Add(time.Millisecond))
		if next < burst {
			at = minTime(at, start.Add(time.Duration(next)*time.Second))
		}
		c.set(at)
	}
	require.Len(t, lat, burst)
	first := lat[0]
	// The objects put while the first one waited for a pass at the cap
	// came with it; the burst proper is what was put after that pass.
	var during []time.Duration
	for i, l := range lat {
		if put[i].After(start.Add(first)) {
			during = append(during, l)
		}
	}
	require.NotEmpty(t, during)
	slices.Sort(during)
	p50, p95 := during[len(during)/2], during[len(during)*95/100]
	t.Logf("first object after an hour idle: %s; the %d put after it: p50 %s, p95 %s, max %s (simulated)", first, len(during), p50, p95, during[len(during)-1])
	assert.LessOrEqual(t, first, DefaultPollMax*11/10+DefaultInterval)
	assert.LessOrEqual(t, p50, 1500*time.Millisecond)
	assert.LessOrEqual(t, during[len(during)-1], DefaultPollFast*11/10+10*time.Millisecond)

	// After the burst the waits double back up to the cap.
	before := c.fullPasses()
	c.runFor(10*time.Minute, nil)
	passes := c.fullPasses() - before
	t.Logf("passes in the 10 min after the burst: %d", passes)
	assert.LessOrEqual(t, passes, 12) // 2+4+...+256 s, then every 5 min
	assert.GreaterOrEqual(t, passes, 7)
}
