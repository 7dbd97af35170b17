package datasync

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// flow bounds the transfers in flight engine-wide. With a fixed limit
// (Options.Concurrency) it is a semaphore. Otherwise the limit follows the
// link: it measures the goodput of each window of completed transfers and
// climbs while a larger limit moves more (small files on a long round trip
// are bound by round trips, not by the link), steps back when it does not
// (big files on a thin link then run a few at a time instead of starving
// each other), probes now and then in both directions, and halves at once
// when a transfer times out (a link that cannot carry what is in flight).
type flow struct {
	fixed    bool
	min, max int
	now      func() time.Time

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when a slot frees or the limit grows
	limit    int
	inflight int
	idleFrom time.Time // when inflight last fell to 0: idle time is not measured
	// epoch counts the halvings: a timeout of a transfer started before
	// the last one does not halve again (it was sent under the old limit).
	epoch    int
	halvedAt time.Time

	// the window being measured
	winStart  time.Time
	winBytes  int64
	winDone   int
	winStalls int
	full      bool // the limit was reached in the window: there was demand for more

	// hill climbing
	state    climb
	base     int     // the limit the probe started from
	baseRate float64 // goodput at base
	steady   int     // windows since the last probe
	probeUp  bool    // the next probe goes up
}

type climb int

const (
	climbStart climb = iota // doubling while doubling pays
	climbHold               // at the best limit seen; probing now and then
	climbProbe              // trying a limit other than base for one window
)

// Tuning of the adaptive limit.
const (
	// flowOverhead is what a transfer costs beside its bytes, in bytes of
	// goodput: the request and answer headers. It makes the goodput of
	// small files count their number.
	flowOverhead = 2 << 10
	// flowWindowMin is the shortest measurement window.
	flowWindowMin = 500 * time.Millisecond
	// flowWindowMax closes a window that saw a completion but not many.
	flowWindowMax = 20 * time.Second
	// flowGain is the improvement a larger limit must bring to be kept.
	flowGain = 1.15
	// flowKeep is the share of goodput a smaller limit must keep to be kept.
	flowKeep = 0.95
	// flowProbeEvery is the number of windows between two probes.
	flowProbeEvery = 4
)

func newFlow(fixed, start, minimum, maximum int) *flow {
	f := &flow{min: max(minimum, 1), now: time.Now, changed: make(chan struct{})}
	if fixed > 0 {
		f.fixed, f.limit, f.min, f.max = true, fixed, fixed, fixed
		return f
	}
	f.max = max(maximum, f.min)
	f.limit = min(max(start, f.min), f.max)
	return f
}

// token is one transfer's slot.
type token struct {
	f        *flow
	epoch    int
	halvedAt time.Time
	once     sync.Once
}

// acquire waits for a slot; nil when ctx ends first.
func (f *flow) acquire(ctx context.Context) *token {
	for {
		f.mu.Lock()
		if f.inflight < f.limit {
			if f.inflight == 0 {
				now := f.now()
				if f.winStart.IsZero() {
					f.winStart = now
				} else if !f.idleFrom.IsZero() {
					f.winStart = f.winStart.Add(now.Sub(f.idleFrom)) // the idle time is not the link's
				}
			}
			f.inflight++
			if f.inflight >= f.limit {
				f.full = true
			}
			tok := &token{f: f, epoch: f.epoch}
			f.mu.Unlock()
			return tok
		}
		f.full = true
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// free gives the slot back (once): the transfer no longer needs the
// network.
func (t *token) free() {
	t.once.Do(func() {
		t.f.mu.Lock()
		t.f.inflight--
		if t.f.inflight == 0 {
			t.f.idleFrom = t.f.now()
		}
		t.f.wakeLocked()
		t.f.mu.Unlock()
	})
}

// done frees the slot if still held and reports what the transfer moved.
func (t *token) done(bytes int64, err error) {
	t.free()
	t.f.observe(bytes, err, t.epoch)
}

func (f *flow) wakeLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Limit is the number of transfers allowed in flight now.
func (f *flow) Limit() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limit
}

// backOff halves the limit at once when a request of a transfer timed out
// on the link and is sent again; one halving per window at most.
func (f *flow) backOff() {
	if f.fixed {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if !f.halvedAt.IsZero() && now.Sub(f.halvedAt) < flowWindowMin {
		return
	}
	f.halveLocked(now)
}

func (f *flow) halveLocked(now time.Time) {
	f.setLocked(max(f.min, f.limit/2))
	f.epoch++
	f.halvedAt = now
	f.state, f.baseRate, f.steady = climbHold, 0, 0
	f.base = f.limit
	f.resetWindowLocked(now)
}

// stalledLink says err is a timeout of a server or link that moved nothing
// for too long: a sign that what is in flight is more than the link carries.
func stalledLink(err error) bool {
	return errors.Is(err, s3client.ErrServerSilent)
}

func (f *flow) observe(bytes int64, err error, epoch int) {
	if f.fixed {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case stalledLink(err):
		if epoch != f.epoch {
			return // already halved for it
		}
		f.winStalls++
	case err == nil:
		f.winDone++
		f.winBytes += max(bytes, 0) + flowOverhead
	default:
		return // a refusal, a file that changed: says nothing of the link
	}
	now := f.now()
	el := now.Sub(f.winStart)
	if f.winStalls > 0 {
		f.halveLocked(now) // fewer in flight at once, and measured afresh
		return
	}
	if el < flowWindowMin || (f.winDone < max(4, f.limit) && el < flowWindowMax) {
		return
	}
	rate := float64(f.winBytes) / el.Seconds()
	full := f.full
	f.resetWindowLocked(now)
	if !full {
		return // fewer transfers than the limit: nothing learnt about it
	}
	switch f.state {
	case climbStart:
		switch {
		case f.baseRate == 0:
			f.base, f.baseRate = f.limit, rate
			f.setLocked(f.limit * 2)
		case rate >= f.baseRate*flowGain:
			f.base, f.baseRate = f.limit, rate
			f.setLocked(f.limit * 2)
		default:
			f.setLocked(f.base) // doubling did not pay: back, and hold
			f.state, f.steady = climbHold, 0
		}
		if f.limit == f.base && f.state == climbStart { // at the maximum
			f.state = climbHold
		}
	case climbHold:
		if f.baseRate == 0 || f.limit != f.base {
			f.base, f.baseRate = f.limit, rate
			return
		}
		f.baseRate = (f.baseRate + rate) / 2
		f.steady++
		if f.steady < flowProbeEvery {
			return
		}
		f.steady = 0
		step := max(1, f.limit/4)
		next := f.limit + step
		if !f.probeUp {
			next = f.limit - step
		}
		f.probeUp = !f.probeUp
		if next = min(max(next, f.min), f.max); next != f.limit {
			f.state = climbProbe
			f.setLocked(next)
		}
	case climbProbe:
		keep := (f.limit > f.base && rate >= f.baseRate*flowGain) || (f.limit < f.base && rate >= f.baseRate*flowKeep)
		if keep {
			f.base, f.baseRate = f.limit, rate
		} else {
			f.setLocked(f.base)
		}
		f.state = climbHold
	}
}

func (f *flow) setLocked(n int) {
	n = min(max(n, f.min), f.max)
	grew := n > f.limit
	f.limit = n
	if grew {
		f.wakeLocked()
	}
}

func (f *flow) resetWindowLocked(now time.Time) {
	f.winStart, f.winBytes, f.winDone, f.winStalls = now, 0, 0, 0
	f.full = f.inflight >= f.limit
}
