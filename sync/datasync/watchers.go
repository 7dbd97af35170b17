package datasync

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/watch"
)

// Egress mappings are watched (sync/watch, inotify) while Run runs, unless
// Options.NoWatch: a file closed after writing or renamed into place reaches
// Changed once it settled, instead of waiting for the next full pass. The
// watcher of a mapping is created before Run's first pass of it (Run's start,
// or Configure adding it before it wakes Run), so nothing written in between
// is missed; replaced when its LocalDir changes; closed when the mapping
// leaves, sync turns off, Run returns or the engine closes. A source that does
// not exist yet is looked for by the watcher every second (a cheap lstat) and
// watched once it appears.
//
// The watcher's health decides the mapping's safety-net interval (SetWatched):
// WatchedInterval while every directory is watched and nothing failed (an
// upload waiting for its retry, a pass that did not succeed), Interval
// otherwise. When events may have been missed (queue overflow, watch limit,
// too many pending files, the source appearing or coming back) the watcher
// asks for a rescan and the mapping gets a full pass at once. The watcher
// reports every change of its health with such a rescan; the health is read
// on each batch and every Interval.

// watchSet is the engine's watchers, by mapping id.
type watchSet struct {
	mu   sync.Mutex
	on   bool // Run is running and watching is enabled
	byID map[string]*mappingWatch
	// loops counts the goroutines reading watchers, for stopWatching.
	loops sync.WaitGroup
}

// mappingWatch is the watcher of one egress mapping and its reader.
type mappingWatch struct {
	id, dir string
	w       *watch.Watcher
	ctx     context.Context // cancelled when the watcher is closed
	cancel  context.CancelFunc
}

// startWatching turns watching on for as long as Run runs and watches the
// egress mappings configured so far.
func (e *Engine) startWatching() {
	if e.opts.NoWatch {
		return
	}
	e.watchers.mu.Lock()
	e.watchers.on = true
	e.watchers.mu.Unlock()
	e.updateWatchers()
}

// updateWatchers makes the watchers follow the configured egress mappings:
// new ones watched, a changed LocalDir watched afresh, the rest closed. The
// caller must not hold e.mu.
func (e *Engine) updateWatchers() {
	ws := &e.watchers
	ws.mu.Lock()
	defer ws.mu.Unlock()
	want := map[string]string{} // id -> LocalDir
	if ws.on {
		e.mu.Lock()
		syncOn := e.ep != nil && !e.closed
		e.mu.Unlock()
		list, _ := e.mappings(nil)
		for _, mp := range list {
			if m := mp.config(); syncOn && m.Direction == Egress {
				want[m.ID] = m.LocalDir
			}
		}
	}
	for id, mw := range ws.byID {
		if want[id] != mw.dir {
			e.closeWatch(mw)
			delete(ws.byID, id)
		}
	}
	for id, dir := range want {
		if ws.byID[id] != nil {
			continue
		}
		if mw := e.openWatch(id, dir); mw != nil {
			if ws.byID == nil {
				ws.byID = map[string]*mappingWatch{}
			}
			ws.byID[id] = mw
		}
	}
}

// stopWatching closes every watcher and waits for their readers.
func (e *Engine) stopWatching() {
	ws := &e.watchers
	ws.mu.Lock()
	ws.on = false
	for id, mw := range ws.byID {
		e.closeWatch(mw)
		delete(ws.byID, id)
	}
	ws.mu.Unlock()
	ws.loops.Wait()
}

// openWatch starts watching dir for mapping id; the caller holds
// e.watchers.mu. It returns nil when no watcher can be made (the mapping
// then keeps its passes every Interval).
func (e *Engine) openWatch(id, dir string) *mappingWatch {
	opts := e.hooks.watch
	if opts.MaxWait == 0 {
		e.mu.Lock()
		mp := e.maps[id]
		e.mu.Unlock()
		if mp != nil {
			opts.MaxWait = e.watchMaxWait(mp)
		}
	}
	w, err := watch.New(dir, opts, e.log.With(zap.String("mapping", id)))
	if err != nil {
		e.log.Warn("cannot watch an egress source, relying on passes", zap.String("mapping", id), zap.Error(err))
		return nil
	}
	mw := &mappingWatch{id: id, dir: dir, w: w}
	mw.ctx, mw.cancel = context.WithCancel(context.Background())
	e.SetWatched(id, w.Healthy())
	e.log.Debug("watching egress source", zap.String("mapping", id), zap.Bool("healthy", w.Healthy()), zap.String("reason", w.Reason()))
	e.watchers.loops.Go(func() { e.readWatch(mw) })
	return mw
}

// closeWatch stops a watcher; its reader returns once a Changed in flight
// (cancelled) returns. The caller holds e.watchers.mu.
func (e *Engine) closeWatch(mw *mappingWatch) {
	mw.cancel()
	_ = mw.w.Close()
	e.SetWatched(mw.id, false)
}

// readWatch hands a watcher's batches to the engine until it is closed, and
// keeps the scheduler told whether the mapping may wait WatchedInterval for
// its full pass: only while the watcher is healthy and nothing failed. Failed
// uploads, and passes that failed as a whole (the server unreachable), are
// retried by full passes (with backoff), which must then come every
// Interval, as without a watcher: a server that was down must not leave
// files waiting minutes once it is back.
func (e *Engine) readWatch(mw *mappingWatch) {
	tick := time.NewTicker(e.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case b, ok := <-mw.w.Events():
			if !ok {
				return
			}
			if mw.ctx.Err() != nil {
				continue // closed: drain until Events closes
			}
			if b.Rescan {
				e.log.Debug("watcher asks for a full pass", zap.String("mapping", mw.id), zap.String("reason", mw.w.Reason()))
				e.passSoon([]string{mw.id})
			} else if err := e.Changed(mw.ctx, mw.id, append(b.Paths, e.newlyGrowing(mw.id, b.Growing)...)); err != nil && mw.ctx.Err() == nil {
				// Status and the log have it (finishPass); retry backoff
				// and the full passes take it from here.
				e.log.Debug("sync of changed files failed", zap.String("mapping", mw.id), zap.Int("paths", len(b.Paths)), zap.Error(err))
			}
		case <-tick.C:
		}
		e.watchHealth(mw)
	}
}

// watchHealth passes the watcher's health on to the mapping's loop, unless
// the watcher was replaced or closed; the loop adds whether something failed
// (mapping.owed).
func (e *Engine) watchHealth(mw *mappingWatch) {
	e.watchers.mu.Lock()
	defer e.watchers.mu.Unlock()
	if e.watchers.byID[mw.id] == mw {
		e.tell(mw.id, msgWatched{healthy: mw.w.Healthy(), fromWatcher: true})
	}
}
