package datasync

import (
	"math/rand/v2"
	"time"
)

// Adaptive polling: an ingress mapping's full pass is its only way to learn
// of new objects where the server has no notifications, and each one costs
// a LIST per 1,000 objects. After a pass that finds nothing new the wait
// before the next one doubles, from Options.Interval up to Options.PollMax;
// a pass that finds a change brings it back to Interval. Each wait is
// jittered by ±10% so that a fleet started together does not list in lock
// step. Egress mappings (whose idle pass costs no request) and reconcile
// passes keep their own schedule.

// pollState is the adaptive schedule of one ingress mapping (guarded by
// Engine.mu). The zero value is the base schedule: a pass every Interval.
type pollState struct {
	every time.Duration // the current step; 0 = Interval
	wait  time.Duration // every, jittered: the pass is due this long after the last one; 0 = every round
	owed  bool          // a pass is owed at the next round (an event could not be applied)
}

// nextPoll is the schedule after a full pass that found a change or not.
func nextPoll(s pollState, found bool, base, ceiling time.Duration, rnd func(int64) int64) pollState {
	if found || ceiling <= base {
		return pollState{}
	}
	every := max(s.every, base)
	every = min(2*every, ceiling)
	return pollState{every: every, wait: every - every/10 + time.Duration(rnd(int64(every/5)+1))}
}

// fullDue reports whether ms's full pass is due at now (the caller holds
// e.mu): every WatchedInterval for a mapping a healthy watcher or
// notification stream covers, else on its poll schedule. A tenth of the
// interval of slack: Run's jitter must not push a pass to the next round.
func (e *Engine) fullDue(ms *mapState, now time.Time) bool {
	slack := e.opts.Interval / 10
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
	defer e.mu.Unlock()
	ms.poll = nextPoll(ms.poll, found, e.opts.Interval, e.opts.PollMax, rand.Int64N)
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
