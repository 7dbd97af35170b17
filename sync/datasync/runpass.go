package datasync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// Running one pass of one mapping: its loop (mapping.go) asks for it with a
// passReq, runPass runs it (pass.go: plan, execute, record) and hands the
// result back, which the loop writes into the status (finishPass).

// passReq is a pass asked of a mapping's loop.
type passReq struct {
	ctx       context.Context // the pass stops when it ends (or the mapping's does)
	release   func()          // when set, called once the pass has ended
	force     bool            // ignore retry backoff (SyncNow)
	po        PassOptions
	names     []string // a change event: only these paths (nil: a full pass)
	scheduled bool     // started by the schedule (Run)
}

// passInput is what a pass gets from its loop.
type passInput struct {
	req     passReq
	m       Mapping
	retry   map[string]*retryState // the loop's backoff, read only during the pass
	started time.Time
}

// passResult is what a pass hands back to its loop.
type passResult struct {
	req      passReq
	m        Mapping
	started  time.Time
	stats    *passStats
	err      error
	recorded bool // not a dry run, and sync was on: the loop records it
	// retry are the backoff changes (nil: forget the name).
	retry map[string]*retryState
}

// runPass runs one pass of mp; its loop started it and waits for the result.
func (e *Engine) runPass(mp *mapping, in passInput) passResult {
	req, m, po := in.req, in.m, in.req.po
	partial := req.names != nil
	res := passResult{req: req, m: m, started: in.started, stats: &passStats{}}
	e.mu.Lock()
	closed := e.closed
	be, ep := e.backend, e.ep
	onPass := e.hooks.onPass
	e.mu.Unlock()
	if closed {
		res.err = errClosed
		return res
	}
	if onPass != nil {
		onPass(mp.id, po, partial)
	}
	if be == nil {
		return res // sync off
	}

	// The pass stops when its caller's ctx ends or the mapping is removed.
	ctx, cancel := context.WithCancelCause(req.ctx)
	defer cancel(nil)
	stop := context.AfterFunc(mp.ctx, func() { cancel(context.Canceled) })
	defer stop()

	st := res.stats
	p := &pass{e: e, mp: mp, m: m, be: countTransfers(be, &mp.transfers), force: req.force, po: po, stats: st,
		started: in.started, lp: keys.ListPrefix(m.Prefix), before: in.retry, retry: map[string]*retryState{}}
	p.way = p.strategy()
	err := p.prepare(ep, partial)
	if err == nil && (p.dir != nil || m.Direction == Ingress) {
		if p.dir != nil {
			defer p.dir.Close()
		}
		src := p.fullSource(ctx)
		if partial {
			if p.dir == nil {
				src = func(func(item, scope) bool) error { return nil }
			} else {
				src = p.changedSource(ctx, req.names)
			}
		}
		var led *ledger
		if m.Direction == Egress && !po.DryRun {
			led = &ledger{}
			p.ledger = led
		}
		err = p.run(ctx, src)
		if err == nil && p.adopt && !partial && !po.DryRun && st.failed == 0 {
			err = e.jr.SetListed(m.ID)
		}
		if led != nil && p.dir != nil && ctx.Err() == nil {
			// The uploads' rows are committed (run flushed): remove what
			// the retention lets go, walking the same names again. Also
			// when the server failed the run (an outage is when space
			// runs short), but then the run's counts are partial: only
			// the limits that look at one file at a time apply.
			rsrc := p.fullSourceOf(ctx, false)
			if partial {
				rsrc = p.changedSource(ctx, req.names)
			}
			p.removing = true
			complete := !partial && err == nil
			rerr := p.retentionRun(ctx, rsrc, !partial, complete)
			if complete && rerr == nil {
				led.mu.Lock()
				st.kept = &keptCount{files: led.files - st.removed, bytes: led.bytes - st.removedB, local: led.localBytes - st.removedB}
				led.mu.Unlock()
			}
			err = errors.Join(err, rerr)
		}
	}
	if err == nil && st.failed > 0 {
		err = fmt.Errorf("%s %s: %d files failed, first: %w", m.Direction, m.ID, st.failed, st.firstErr)
	}
	st.savedByPartCopy = p.savedByPartCopy.Load()
	res.err = err
	if po.DryRun {
		if po.Report != nil {
			// The end of the plan, with what the walk could not read.
			po.Report(Planned{Action: "summary", Why: fmt.Sprintf("%d unreadable", st.unreadable), Size: st.unreadable})
		}
		return res
	}
	res.recorded, res.retry = true, p.retry
	return res
}

// prepare checks the journal belongs to the mapping and opens its directory.
// An egress source that does not exist leaves p.dir nil: nothing written yet
// is normal for a workload.
func (p *pass) prepare(ep *Endpoint, partial bool) error {
	m := p.m
	fp := strings.Join([]string{string(m.Direction), ep.Host, fmt.Sprint(ep.Port), m.Bucket, m.Prefix, m.LocalDir}, "\x00")
	if p.po.DryRun {
		matches, listed, err := p.e.jr.Peek(m.ID, fp)
		if err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		if !matches {
			// The journal holds nothing of this mapping: plan against an
			// empty one (a mapping no journal knows is not in it).
			p.noRows = true
		}
		p.adopt = !listed
	} else {
		listed, err := p.e.jr.Prepare(m.ID, fp)
		if err != nil {
			return err
		}
		p.adopt = !listed && !partial
		p.w = p.e.jr.NewWriter(m.ID, journal.Files)
	}
	if m.Direction == Ingress {
		return p.openIngress()
	}
	dir, err := safefs.Open(m.Root, m.LocalDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing written yet: normal
	}
	if err != nil {
		return fmt.Errorf("source directory: %w", err)
	}
	p.dir = dir
	return nil
}

// passStats collects what one pass did. While run runs, the recorder is its
// one writer (pass.record); then runPass adds what the retention left
// (kept, short), and the loop reads it once the pass has ended.
type passStats struct {
	files      int64
	bytes      int64
	pending    int64
	refused    int64
	failed     int64
	unreadable int64
	pruned     int64 // journal rows of deleted files or objects dropped
	conflicts  int64
	removed    int64 // files removed by retention, and their bytes
	removedB   int64
	short      string     // retention: what is short of space, "" for nothing
	kept       *keptCount // egress: what a complete pass leaves on the device
	firstErr   error      // of a failure
	refusal    error      // the first refusal
	// savedByPartCopy are the bytes growing files did not send again
	// (server-side part copies).
	savedByPartCopy int64
}

// keptCount is what an egress pass leaves on the device: confirmed files
// and their bytes, and the bytes of all files.
type keptCount struct{ files, bytes, local int64 }

func (p *passStats) moved(n int64) {
	p.files++
	p.bytes += n
}

func (p *passStats) addPending() { p.pending++ }

func (p *passStats) unreadableOne() { p.unreadable++ }

func (p *passStats) conflict() { p.conflicts++ }

func (p *passStats) prunedOne() { p.pruned++ }

func (p *passStats) removedOne(n int64) { p.removed++; p.removedB += n }

func (p *passStats) setShort(s string) { p.short = s }

func (p *passStats) refuse(err error) {
	p.refused++
	if p.refusal == nil {
		p.refusal = err
	}
}

func (p *passStats) fail(err error) {
	p.failed++
	p.pending++
	if p.firstErr == nil {
		p.firstErr = err
	}
}

// finishPass writes what a pass did into the loop's status, and logs it.
func (e *Engine) finishPass(mp *mapping, ls *loopState, res passResult) {
	m, st, started, err := res.m, res.stats, res.started, res.err
	partial := res.req.names != nil
	now := time.Now()
	s := &ls.status
	s.BytesSavedByPartCopy += st.savedByPartCopy
	s.FilesTotal += st.files
	s.BytesTotal += st.bytes
	s.Conflicts += st.conflicts
	s.RemovedFiles += st.removed
	s.RemovedBytes += st.removedB
	if k := st.kept; k != nil {
		s.KeptFiles, s.KeptBytes, s.LocalBytes = k.files, k.bytes, k.local
	}
	if !partial && m.Direction == Egress {
		s.ShortOfSpace = st.short
	}
	if partial {
		// A change event: it adds to what the last full pass found.
		s.FilesLastPass += st.files
		s.BytesLastPass += st.bytes
	} else {
		s.FilesLastPass, s.BytesLastPass = st.files, st.bytes
		s.Pending, s.Refused, s.Unreadable = st.pending, st.refused, st.unreadable
	}
	s.OldestPending = time.Time{}
	for _, r := range ls.retry {
		if s.OldestPending.IsZero() || r.first.Before(s.OldestPending) {
			s.OldestPending = r.first
		}
	}
	switch {
	case err != nil:
		s.LastError = err.Error()
	case partial:
	case st.refusal != nil:
		s.LastError = st.refusal.Error() // the pass did what it could
	case st.unreadable > 0:
		s.LastError = fmt.Sprintf("%d entries could not be read (see the log)", st.unreadable)
	default:
		s.LastError = ""
	}
	if err == nil {
		s.LastSuccess = now
	}
	fields := []zap.Field{zap.String("mapping", mp.id), zap.String("direction", string(m.Direction)),
		zap.Int64("files", st.files), zap.Int64("bytes", st.bytes), zap.Int64("pending", st.pending),
		zap.Int64("refused", st.refused), zap.Int64("unreadable", st.unreadable), zap.Int64("conflicts", st.conflicts),
		zap.Int64("removed", st.removed),
		zap.Duration("took", now.Sub(started))}
	switch {
	case err != nil:
		e.log.Warn("sync pass failed", append(fields, zap.Error(err))...)
	case st.files > 0 || st.refused > 0 || st.pending > 0 || st.unreadable > 0 || st.removed > 0:
		e.log.Info("sync pass done", fields...)
	default:
		e.log.Debug("sync pass idle", fields...)
	}
}
