package datasync

import (
	"math/rand/v2"
	"time"
)

// Adaptive polling: an ingress mapping's full pass is its only way to learn
// of new objects where the server has no working notifications, and each
// one costs a LIST per 1,000 objects. Objects tend to come in bursts, so a
// pass that finds a change brings the next one Options.PollFast later (2 s),
// and after a pass that finds nothing new the wait doubles, up to
// Options.PollMax (5 min): a burst of one object a second is fetched within
// about 2 s of each put, an idle mapping costs about 288 LISTs a day. Each
// wait is jittered by ±10% so that a fleet started together does not list in
// lock step. Egress mappings (whose idle pass costs no request) and
// reconcile passes keep their own schedule.

// pollState is the adaptive schedule of one ingress mapping (guarded by
// Engine.mu). The zero value is the base schedule: a pass every Interval.
type pollState struct {
	every time.Duration // the current step; 0 = Interval
	wait  time.Duration // every, jittered: the pass is due this long after the last one; 0 = every round
	owed  bool          // a pass is owed at the next round (an event could not be applied)
}

// nextPoll is the schedule after a full pass that found a change or not:
// fast after a change (base when fast is not shorter), then doubling up to
// ceiling. A ceiling at base keeps the base schedule.
func nextPoll(s pollState, found bool, fast, base, ceiling time.Duration, rnd func(int64) int64) pollState {
	if ceiling <= base || found && (fast <= 0 || fast >= base) {
		return pollState{}
	}
	every := fast
	if !found {
		every = s.every
		if every == 0 {
			every = base
		}
		every = min(2*every, ceiling)
	}
	return pollState{every: every, wait: every - every/10 + time.Duration(rnd(int64(every/5)+1))}
}

// untilFastPoll is how long Run may wait for its next round (at most
// limit): a mapping polling faster than Interval after a change is due
// earlier.
func (e *Engine) untilFastPoll(now time.Time, limit time.Duration) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ms := range e.maps {
		if ms.watched || ms.poll.wait <= 0 || ms.poll.every >= e.opts.Interval {
			continue
		}
		// Not less than a tenth of the step: a pass running longer than
		// the step is not spun on.
		limit = min(limit, max(ms.lastFull.Add(ms.poll.wait).Sub(now), ms.poll.every/10))
	}
	return limit
}

// fullDue reports whether ms's full pass is due at now (the caller holds
// e.mu): every WatchedInterval for a mapping a healthy watcher or
// notification stream covers, else on its poll schedule. A tenth of the
// interval of slack: Run's jitter must not push a pass to the next round.
func (e *Engine) fullDue(ms *mapState, now time.Time) bool {
	slack := e.opts.Interval / 10
	if ms.poll.wait > 0 {
		slack = min(slack, ms.poll.wait/10)
	}
	since := now.Sub(ms.lastFull)
	switch {
	case ms.poll.owed:
		return true
	case ms.watched:
		return since >= e.opts.WatchedInterval-slack
	case ms.poll.wait > 0:
		return since >= ms.poll.wait-slack
	}
	return true
}

// adaptPoll updates the poll schedule of an ingress mapping after a full
// pass; found says the pass downloaded or pruned something.
func (e *Engine) adaptPoll(ms *mapState, m Mapping, found, partial bool) {
	if m.Direction != Ingress || partial {
		return
	}
	e.mu.Lock()
	ms.poll = nextPoll(ms.poll, found, e.opts.PollFast, e.opts.Interval, e.opts.PollMax, rand.Int64N)
	fast := ms.poll.wait > 0 && ms.poll.every < e.opts.Interval
	e.mu.Unlock()
	if fast {
		e.wake() // Run's timer was set for a round at the interval
	}
}

// pollBase brings a mapping back to its base schedule with a full pass at
// the next round: its notifications stopped, or one could not be applied.
func (e *Engine) pollBase(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ms := e.maps[id]; ms != nil {
		ms.poll = pollState{owed: true}
	}
}

func (p *passStats) prunedOne() { p.mu.Lock(); p.pruned++; p.mu.Unlock() }
