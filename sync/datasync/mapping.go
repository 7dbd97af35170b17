package datasync

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
)

// Each mapping is owned by one goroutine, its service loop (serve), as
// Syncthing's folder loop is: the schedule, the status, the ingress mode and
// the retry backoff are fields of serve's loop state, which nothing else
// touches. Everyone else sends it messages (a change seen, a watcher's or a
// stream's health, a pass asked for, the configuration, close) and, where
// they need an answer, waits for a reply. Passes run one at a time in a
// goroutine of their own and report back with a passDone message; requests
// that arrive meanwhile wait in the loop (changes seen are merged into one
// pass). Status reads the snapshot serve publishes after every change.

// mapping is one mapping's service loop and what may be read of it without
// asking it.
type mapping struct {
	id   string
	e    *Engine
	in   chan any      // messages to serve
	done chan struct{} // closed when serve has returned
	// ctx ends when the mapping is removed or the engine closed: the pass
	// in flight stops.
	ctx    context.Context
	cancel context.CancelFunc

	conf      atomic.Pointer[Mapping]       // as last configured (written by Configure only)
	published atomic.Pointer[MappingStatus] // serve's status as of its last change
	transfers atomic.Int32                  // uploads and downloads in flight, for Throttled
	memo      memo                          // what passes remember and share with their transfers
}

// memo is what a mapping's passes remember from one to the next and share
// between the transfers of a pass, the watcher (files held open) and
// growLoop (snapshots due): the one piece of mapping state with a lock.
type memo struct {
	mu            sync.Mutex
	swept         bool // ingress: temp files of a previous run removed
	symlinkNoted  bool // egress: a skipped symlink was logged
	conflictNoted bool // egress: a skipped conflict copy was logged
	// growing (egress) are the files that did not settle, sent as
	// snapshots (growing.go); byInode names the file each inode was last
	// uploaded as in parts, and rotated the rows of renamed files already
	// copied server-side in this run (rotation).
	growing map[string]*growState
	byInode map[uint64]string
	rotated map[string]journal.Record
	rotMu   sync.Mutex // one rotation at a time (growing.go)
}

type retryState struct {
	first    time.Time // when the change was first seen and failed
	attempts int
	next     time.Time
	// stalls counts the tries that timed out on the link: the next one
	// waits longer for answers and cuts a big file in smaller parts.
	stalls int
}

// loopState is what serve owns.
type loopState struct {
	configured bool // Configure's first message came: its watcher is set up
	closing    bool
	sched      schedule
	mode       IngressMode // ingress: push or poll; zero until the stream was tried
	status     MappingStatus
	// retry is the per-file backoff. A pass reads it without a lock
	// (serve does not change it while a pass runs) and hands back its
	// changes in passDone.
	retry map[string]*retryState

	running *passRun    // the pass in flight; nil when none
	changes []changeReq // change requests waiting for a pass
	syncs   []syncReq   // pass requests waiting, in order
	// runCtx is Run's context while it runs: scheduled passes run only
	// then. stopped are Run's waits for its pass in flight to end.
	runCtx  context.Context
	stopped []chan struct{}
	ticks   []chan struct{} // simulated-clock rounds waiting for their pass (tests)
	timer   *time.Timer
}

// passRun is a pass in flight.
type passRun struct {
	scheduled bool
	replies   []chan error // to answer when it ends
	ticks     []chan struct{}
}

// Messages to serve.
type (
	// msgConfigure: Configure ran (the mapping's conf is current); prompt
	// asks for a pass at once (a new mapping, a new endpoint).
	msgConfigure struct{ prompt bool }
	// msgRun: Run started (ctx) or is stopping (ctx nil: reply once the
	// scheduled pass in flight, if any, has ended).
	msgRun struct {
		ctx   context.Context
		reply chan struct{}
	}
	// msgChange: these names changed (a watcher, a notification, a
	// snapshot due); reply when a pass covered them.
	msgChange changeReq
	// msgSync: a pass with these options (SyncNow, Sync).
	msgSync syncReq
	// msgWatched: a healthy watcher or stream reports the mapping's changes,
	// or stopped doing so. fromWatcher asks serve to also check that
	// nothing failed (see owed); stream tells a stream's health (polling
	// starts from the base interval when it goes down).
	msgWatched  struct{ healthy, fromWatcher, stream bool }
	msgPassSoon struct{} // a full pass at once (events may have been missed)
	msgPollBase struct{} // the base schedule again, a full pass owed
	msgMode     struct {
		mode  IngressMode
		reply chan bool // the mode changed
	}
	msgPassDone struct{ res passResult }
	msgClose    struct{}
	// msgTick: a round of the simulated clock (tests, hooks.manual): act as
	// if the timer fired at hooks.now(); reply once the pass it started,
	// if any, has ended.
	msgTick struct{ reply chan struct{} }
	// msgInspect runs fn in serve (tests: read or set the loop state).
	msgInspect struct {
		fn   func(*loopState)
		done chan struct{}
	}
)

type changeReq struct {
	ctx   context.Context
	names []string
	reply chan error
}

type syncReq struct {
	ctx   context.Context
	po    PassOptions
	reply chan error
}

// errClosed answers requests to a mapping removed or an engine closed.
var errClosed = errors.New("datasync: engine closed")

func (e *Engine) newMapping(m Mapping, runCtx context.Context) *mapping {
	mp := &mapping{id: m.ID, e: e, in: make(chan any, 16), done: make(chan struct{})}
	mp.ctx, mp.cancel = context.WithCancel(e.base)
	mp.conf.Store(&m)
	ls := &loopState{
		sched:  schedule{prompt: true, lastReconcile: e.hooks.now()},
		status: MappingStatus{ID: m.ID},
		retry:  map[string]*retryState{},
		runCtx: runCtx,
	}
	ls.status.configure(m)
	mp.publish(ls)
	go mp.serve(ls)
	return mp
}

// send hands serve a message; false when serve has returned.
func (mp *mapping) send(msg any) bool {
	select {
	case mp.in <- msg:
		return true
	case <-mp.done:
		return false
	}
}

// wait waits for a reply to a message sent, or for serve to return.
func wait[T any](mp *mapping, reply chan T) (T, bool) {
	select {
	case v := <-reply:
		return v, true
	case <-mp.done:
		var zero T
		return zero, false
	}
}

// config is the mapping as last configured.
func (mp *mapping) config() Mapping { return *mp.conf.Load() }

// close stops the pass in flight and serve, and waits for them.
func (mp *mapping) close() {
	mp.cancel()
	mp.send(msgClose{})
	<-mp.done
}

func (s *MappingStatus) configure(m Mapping) {
	s.Direction, s.LocalDir, s.Bucket, s.Prefix = m.Direction, m.LocalDir, m.Bucket, m.Prefix
}

// serve is the mapping's service loop.
func (mp *mapping) serve(ls *loopState) {
	defer close(mp.done)
	e := mp.e
	ls.timer = time.NewTimer(time.Hour)
	ls.timer.Stop()
	defer ls.timer.Stop()
	for {
		select {
		case msg := <-mp.in:
			mp.handle(ls, msg)
		case <-ls.timer.C:
		}
		if ls.closing && ls.running == nil {
			mp.drain(ls)
			return
		}
		mp.advance(ls, e.hooks.now())
		mp.publish(ls)
	}
}

func (mp *mapping) handle(ls *loopState, msg any) {
	e := mp.e
	switch msg := msg.(type) {
	case msgConfigure:
		ls.configured = true
		ls.sched.prompt = ls.sched.prompt || msg.prompt
		ls.status.configure(mp.config())
	case msgRun:
		ls.runCtx = msg.ctx
		if msg.ctx == nil {
			if ls.running != nil && ls.running.scheduled {
				ls.stopped = append(ls.stopped, msg.reply)
			} else {
				close(msg.reply)
			}
		}
	case msgChange:
		ls.changes = append(ls.changes, changeReq(msg))
	case msgSync:
		ls.syncs = append(ls.syncs, syncReq(msg))
	case msgWatched:
		healthy := msg.healthy
		if msg.fromWatcher && healthy {
			healthy = !mp.owed(ls)
		}
		if msg.stream && !healthy && ls.sched.watched {
			ls.sched.poll = pollState{}
		}
		ls.sched.watched = healthy
	case msgPassSoon:
		ls.sched.prompt = true
	case msgPollBase:
		ls.sched.poll = pollState{owed: true}
	case msgMode:
		changed := ls.mode.Mode != msg.mode.Mode || ls.mode.Reason != msg.mode.Reason
		if changed {
			ls.mode = msg.mode
			mp.publish(ls)
		}
		msg.reply <- changed
	case msgPassDone:
		mp.finish(ls, msg.res)
	case msgClose:
		ls.closing = true
	case msgTick:
		ls.ticks = append(ls.ticks, msg.reply)
	case msgInspect:
		msg.fn(ls)
		close(msg.done)
	default:
		e.log.DPanic("unknown message to a mapping's loop", zap.String("mapping", mp.id), zap.Any("message", msg))
	}
}

// advance starts the next pass when none runs: the passes asked for first
// (Sync, then changes seen), then the scheduled one when due; otherwise it
// sets the timer for when the schedule is next due.
func (mp *mapping) advance(ls *loopState, now time.Time) {
	e := mp.e
	ticks := ls.ticks
	ls.ticks = nil
	defer func() {
		// A simulated round is answered once its pass ends (or at once).
		if ls.running != nil && ls.running.scheduled {
			ls.running.ticks = append(ls.running.ticks, ticks...)
			return
		}
		for _, t := range ticks {
			close(t)
		}
	}()
	if ls.running != nil || ls.closing {
		return
	}
	if len(ls.syncs) > 0 {
		r := ls.syncs[0]
		ls.syncs = ls.syncs[1:]
		mp.start(ls, passReq{ctx: r.ctx, force: true, po: r.po}, r.reply)
		return
	}
	if req, replies, ok := mergeChanges(ls); ok {
		mp.start(ls, req, replies...)
		return
	}
	if !ls.configured || ls.runCtx == nil || ls.runCtx.Err() != nil {
		ls.timer.Stop()
		return
	}
	at, reconcile := ls.sched.due(&e.opts, now)
	if !at.After(now) {
		ls.sched.started(now, reconcile, &e.opts)
		mp.start(ls, passReq{ctx: ls.runCtx, po: PassOptions{Reconcile: reconcile}, scheduled: true})
		return
	}
	if !e.hooks.manual {
		ls.timer.Reset(at.Sub(now))
	}
}

// mergeChanges takes the change requests waiting into one pass of all
// their names; a request whose caller gave up is answered at once.
func mergeChanges(ls *loopState) (passReq, []chan error, bool) {
	var names []string
	var replies []chan error
	var ctxs []context.Context
	for _, c := range ls.changes {
		if err := c.ctx.Err(); err != nil {
			c.reply <- err
			continue
		}
		names = append(names, c.names...)
		replies = append(replies, c.reply)
		ctxs = append(ctxs, c.ctx)
	}
	ls.changes = nil
	if len(replies) == 0 {
		return passReq{}, nil, false
	}
	ctx, release := anyLive(ctxs)
	return passReq{ctx: ctx, release: release, names: sortNames(names)}, replies, true
}

// anyLive is a context that ends when all of ctxs have ended: a merged pass
// goes on while one of its callers still waits. release forgets it (the
// callers' contexts may live long: a watcher's, Run's).
func anyLive(ctxs []context.Context) (ctx context.Context, release func()) {
	if len(ctxs) == 1 {
		return ctxs[0], func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int32
	left.Store(int32(len(ctxs)))
	stops := make([]func() bool, 0, len(ctxs))
	for _, c := range ctxs {
		stops = append(stops, context.AfterFunc(c, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// start runs a pass in a goroutine of its own; it reports in passDone.
func (mp *mapping) start(ls *loopState, req passReq, replies ...chan error) {
	if req.names == nil && !req.po.DryRun {
		ls.sched.prompt = false // this pass uses the current endpoint and mapping
	}
	started := time.Now()
	if !req.po.DryRun {
		ls.status.LastAttempt = started
	}
	ls.running = &passRun{scheduled: req.scheduled, replies: replies}
	in := passInput{req: req, m: mp.config(), retry: ls.retry, started: started}
	go func() {
		res := mp.e.runPass(mp, in)
		mp.in <- msgPassDone{res} // serve does not return while a pass runs
	}()
}

// finish records what a pass did and answers those who waited for it.
func (mp *mapping) finish(ls *loopState, res passResult) {
	e := mp.e
	run := ls.running
	ls.running = nil
	if res.req.release != nil {
		res.req.release()
	}
	if res.recorded {
		for name, r := range res.retry {
			if r == nil {
				delete(ls.retry, name)
			} else {
				ls.retry[name] = r
			}
		}
		e.finishPass(mp, ls, res)
		if res.m.Direction == Ingress && res.req.names == nil {
			// Only an idle pass that worked lets the poll grow: a failure
			// or files still pending keep the base interval, so that the
			// mapping converges within one interval once the server is back.
			st := res.stats
			busy := res.err != nil || st.files > 0 || st.removed > 0 || st.pruned > 0 || st.pending > 0 || st.failed > 0
			ls.sched.poll = nextPoll(ls.sched.poll, busy, e.opts.PollFast, e.opts.Interval, e.opts.PollMax, randInt64N)
		}
	}
	mp.publish(ls) // what the callers read next
	for _, r := range run.replies {
		r <- res.err
	}
	for _, t := range run.ticks {
		close(t)
	}
	if run.scheduled {
		if res.err != nil && ls.runCtx != nil && ls.runCtx.Err() == nil {
			e.log.Debug("sync pass failed", zap.String("mapping", mp.id), zap.Error(res.err))
		}
		for _, s := range ls.stopped {
			close(s)
		}
		ls.stopped = nil
	}
}

// drain answers every request still waiting once serve is closing.
func (mp *mapping) drain(ls *loopState) {
	for _, c := range ls.changes {
		c.reply <- errClosed
	}
	for _, s := range ls.syncs {
		s.reply <- errClosed
	}
	for _, s := range ls.stopped {
		close(s)
	}
	for _, t := range ls.ticks {
		close(t)
	}
	ls.changes, ls.syncs, ls.stopped, ls.ticks = nil, nil, nil, nil
	mp.publish(ls)
}

// owed reports whether an egress mapping has failures to retry: files whose
// upload failed (it forgets those that are gone: nothing is owed for them,
// and no pass would clear them, the march never sees them again), or a pass
// that ended without success. A pass in flight is neither: its attempt is
// newer than its success until it ends.
func (mp *mapping) owed(ls *loopState) bool {
	if ls.running == nil {
		dir := mp.config().LocalDir
		for name := range ls.retry {
			if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(name))); errors.Is(err, fs.ErrNotExist) {
				delete(ls.retry, name)
			}
		}
	}
	return len(ls.retry) > 0 || (ls.running == nil && ls.status.LastAttempt.After(ls.status.LastSuccess))
}

// publish makes the loop's status what Status reads.
func (mp *mapping) publish(ls *loopState) {
	st := ls.status
	if st.Direction == Ingress {
		st.Ingress = mp.e.ingressMode(ls.mode)
	}
	mp.published.Store(&st)
}
