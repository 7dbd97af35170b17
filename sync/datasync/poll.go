package datasync

import (
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

// pollState is the adaptive schedule of one ingress mapping (part of its
// schedule, owned by its service loop). The zero value is the base schedule: a pass every Interval.
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
