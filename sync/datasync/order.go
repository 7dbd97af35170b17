package datasync

import (
	"container/heap"
	"strings"
)

// The catch-up order (Mapping.Order) orders the jobs of an egress pass by
// modification time, oldest or newest first. It orders the backlog only:
// what is uploaded, confirmed or removed is decided as in key order.
//
// Memory stays bounded however big the backlog: a pass runs in rounds, each
// one a walk of the source (local directory and journal rows, no listing
// after the first round) that keeps only the orderBatch first jobs in the
// order (a heap) and sends them in that order; the next round takes the
// next orderBatch jobs after the last one sent. A backlog of N files costs
// ceil(N/orderBatch) walks and at most orderBatch jobs in memory (a few
// hundred bytes each). A file written while the rounds run lands before the
// round's position when it sorts before it (newest-first: always): the next
// pass, or its change event, uploads it.

// orderBatch is how many jobs one round of an ordered pass holds.
var orderBatch = 4096

// ordered reports whether this run sends its jobs in the mapping's order.
func (p *pass) ordered() bool {
	return p.m.Direction == Egress && p.m.Order != KeyOrder && !p.po.DryRun && !p.removing
}

// orderKey places a job in the catch-up order.
type orderKey struct {
	mtime int64
	name  string
}

// before reports whether a comes before b in order o.
func (o Order) before(a, b orderKey) bool {
	if a.mtime != b.mtime {
		if o == NewestFirst {
			return a.mtime > b.mtime
		}
		return a.mtime < b.mtime
	}
	return strings.Compare(a.name, b.name) < 0
}

func keyOf(j *job) orderKey {
	k := orderKey{name: j.it.name}
	if j.it.local != nil {
		k.mtime = j.it.local.MtimeNs
	}
	return k
}

// jobHeap holds the first jobs of a round; its top is the last of them in
// the order (the one dropped when a better one arrives).
type jobHeap struct {
	o    Order
	jobs []job
}

func (h *jobHeap) Len() int           { return len(h.jobs) }
func (h *jobHeap) Less(i, k int) bool { return h.o.before(keyOf(&h.jobs[k]), keyOf(&h.jobs[i])) }
func (h *jobHeap) Swap(i, k int)      { h.jobs[i], h.jobs[k] = h.jobs[k], h.jobs[i] }
func (h *jobHeap) Push(x any)         { h.jobs = append(h.jobs, x.(job)) }
func (h *jobHeap) Pop() any {
	j := h.jobs[len(h.jobs)-1]
	h.jobs[len(h.jobs)-1] = job{}
	h.jobs = h.jobs[:len(h.jobs)-1]
	return j
}

// planOrdered plans src in rounds (see above) and sends each round's jobs
// in the mapping's order. The first round does what plan does for every
// item (prunes, counts); later rounds only look for the jobs after the
// last one sent.
func (p *pass) planOrdered(src source, send func(job) bool) error {
	o := p.m.Order
	var last *orderKey
	for round := 0; ; round++ {
		h := &jobHeap{o: o}
		more := false
		err := src(func(it item, sc scope) bool {
			var j job
			if round == 0 {
				var ok bool
				if j, ok = p.plan(it, sc, false); !ok {
					return true
				}
			} else {
				d := p.decideOne(&it, sc)
				if d.act == actSkip || d.act == actPrune || d.act == actRefused {
					return true
				}
				j = job{it: it, d: d}
			}
			k := keyOf(&j)
			if last != nil && !o.before(*last, k) {
				return true // sent in an earlier round
			}
			if h.Len() == orderBatch {
				more = true
				if !o.before(k, keyOf(&h.jobs[0])) {
					return true // after this round's jobs
				}
				heap.Pop(h)
			}
			heap.Push(h, j)
			return true
		})
		if err != nil {
			return err
		}
		// The round's jobs, last first out of the heap: reverse them.
		out := make([]job, h.Len())
		for i := len(out) - 1; i >= 0; i-- {
			out[i] = heap.Pop(h).(job)
		}
		for i := range out {
			if !p.po.DryRun && !p.due(out[i].it.name) {
				p.tell(note{j: out[i], out: outcome{pending: true}})
				continue
			}
			if !send(out[i]) {
				return nil
			}
		}
		if !more || len(out) == 0 {
			return nil
		}
		k := keyOf(&out[len(out)-1])
		last = &k
		if p.e.hooks.onRound != nil {
			p.e.hooks.onRound(p.m.ID, round)
		}
	}
}
