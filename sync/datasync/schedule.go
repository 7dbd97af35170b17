package datasync

import (
	"math/rand/v2"
	"time"
)

// schedule is when a mapping's next full pass is due; its service loop
// owns it. Every Interval (plus up to 10% jitter, drawn at each pass, so
// that a fleet started together does not pass in lock step) a mapping gets
// a full pass: its safety net, which for egress costs no S3 request when
// nothing changed. A mapping whose changes a healthy watcher or
// notification stream reports gets it every WatchedInterval instead; an
// ingress mapping polling adaptively (poll.go) when its poll wait is over.
// Every ReconcileInterval the pass is a reconcile. A new mapping, a new
// endpoint, or a watcher or stream that may have missed events (prompt),
// gets one at once.
type schedule struct {
	prompt  bool // a full pass is owed at once
	watched bool // a healthy watcher or stream reports the changes
	// lastFull and lastReconcile are when the last full pass and the last
	// reconcile pass started.
	lastFull, lastReconcile time.Time
	jitter                  time.Duration // of the current interval
	poll                    pollState     // ingress: the adaptive poll
}

// due is when the next full pass is due, and whether it is a reconcile.
func (s *schedule) due(o *Options, now time.Time) (time.Time, bool) {
	var at time.Time
	switch {
	case s.prompt || s.poll.owed:
		at = time.Time{}
	case s.watched:
		at = s.lastFull.Add(o.WatchedInterval)
	case s.poll.wait > 0:
		at = s.lastFull.Add(s.poll.wait)
	default:
		at = s.lastFull.Add(o.Interval + s.jitter)
	}
	if o.ReconcileInterval <= 0 {
		return at, false
	}
	rec := s.lastReconcile.Add(o.ReconcileInterval)
	if !rec.After(now) {
		return time.Time{}, true
	}
	return minTime(at, rec), false
}

// started notes a full pass starting at now.
func (s *schedule) started(now time.Time, reconcile bool, o *Options) {
	s.lastFull = now
	if reconcile {
		s.lastReconcile = now
	}
	s.poll.owed = false
	s.jitter = time.Duration(randInt64N(int64(o.Interval)/10 + 1))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

var randInt64N = rand.Int64N
