package datasync

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
)

// Retention (Mapping.Retention) removes uploaded files from an egress
// source. It is a decision and an outcome like any other, in two steps:
//
//  1. The pass that uploads a file records a confirmed row (journal.Record
//     Confirmed: the server's ETag was checked against what was read). A row
//     uploaded without confirmation (a multipart upload before retention was
//     set) is confirmed by actConfirm: one HEAD and a local hash.
//  2. Once those rows are committed (the pass flushed its journal writer),
//     a removal run goes over the same names again (retentionRun): a file
//     whose row is confirmed and whose stat is still the row's, and which
//     the limits let go, is removed (actRemove) after one last stat (inode,
//     size, mtime, ctime), and its row is pruned with it.
//
// A kill -9 between the two steps leaves confirmed rows of files still
// there: the next pass removes them (every pass of a mapping with an active
// retention ends with a removal run when something may be removed). A kill
// between a removal and the commit of its pruned row leaves a row without a
// file, pruned by the next pass ("file deleted"). Egress never deletes
// objects, so a removed file's object stays; a reconcile or a lost journal
// does not upload it again (no local file) nor mind it (no row).
//
// Which confirmed files go is one cut-off time (retentionCut): every
// confirmed file modified before it is removed, so every file removed is
// older than every one kept. The pass learns the bytes kept per modification
// time in a bounded histogram (mtimeHistogram) and picks the cut-off that
// brings them under Retention.KeepBytes (or frees what the file system lacks
// below its floor), removing at most one histogram bin more than needed.

// retentionCut says which confirmed files the removal run removes.
type retentionCut struct {
	all    bool  // every confirmed file (RemoveAfterUpload)
	before int64 // files modified before this (Unix ns); math.MinInt64 for none
	why    string
}

func (c retentionCut) any() bool { return c.all || c.before != math.MinInt64 }

// decideRetention is the decision of the removal run for one name. It is
// pure: it looks at nothing but its arguments.
func decideRetention(it item, cut retentionCut) decision {
	l, r := it.local, it.row
	switch {
	case l == nil || r == nil:
		return decision{actSkip, "not an uploaded file"}
	case !sameStat(r, l):
		return decision{actSkip, "changed since it was uploaded: uploaded again first"}
	case !r.Confirmed:
		return decision{actSkip, "upload not confirmed"}
	case cut.all:
		return decision{actRemove, cut.why}
	case l.MtimeNs < cut.before:
		return decision{actRemove, cut.why}
	}
	return decision{actSkip, "kept"}
}

// remove is the removal transfer: one last look at the file, then unlink.
// The file must still be the version the confirmed row describes (same
// inode, size, mtime and ctime): a file rewritten since stays, and its next
// pass uploads it again. The window between this stat and the unlink is a
// system call wide; a writer that keeps a file open after it settled and
// writes into it later is not covered (see docs/retention.md).
func (p *pass) remove(_ context.Context, j job) outcome {
	if hook := p.e.hooks.beforeRemove; hook != nil {
		hook(j.it.name)
	}
	st, ok, _, err := statLocal(p.dir.Root(), j.it.name)
	switch {
	case err != nil:
		return outcome{err: fmt.Errorf("remove %s: %w", j.it.name, err)}
	case !ok:
		return outcome{prune: true} // gone already: forget it
	case !sameStat(j.it.row, &st):
		p.e.log.Debug("file changed since it was uploaded: kept", zap.String("mapping", p.m.ID), zap.String("path", j.it.name))
		return outcome{}
	}
	if err := p.dir.Root().Remove(j.it.name); err != nil {
		if isNotExist(err) {
			return outcome{prune: true}
		}
		return outcome{err: fmt.Errorf("remove %s: %w", j.it.name, err)}
	}
	return outcome{prune: true, removed: true, bytes: st.Size}
}

// ledger counts, during a pass, the uploaded files that stay on the device,
// the confirmed ones among them by modification time (the candidates for
// removal), and all local bytes. Safe for concurrent use.
type ledger struct {
	mu         sync.Mutex
	hist       mtimeHistogram // confirmed files
	confirmed  int64          // files in hist
	files      int64          // uploaded files kept (confirmed or not)
	bytes      int64          // their bytes
	localBytes int64          // every local file the pass saw
}

// see accounts one item the pass decided on.
func (l *ledger) see(it item, d decision) {
	if it.local == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.localBytes += it.local.Size
	if d.act == actSkip && it.row != nil && sameStat(it.row, it.local) {
		l.addLocked(it.row)
	}
}

// uploaded accounts a file whose upload (or confirmation) was just recorded.
func (l *ledger) uploaded(r *journal.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addLocked(r)
}

func (l *ledger) addLocked(r *journal.Record) {
	l.files++
	l.bytes += r.Size
	if r.Confirmed {
		l.confirmed++
		l.hist.add(r.MtimeNs, r.Size)
	}
}

// cut picks what the removal run removes, given the retention, the time
// now, whether the pass saw the whole directory (the byte bound needs the
// total), and the bytes the file system lacks below its floor (0 when it is
// not short). From a partial count, the cut-off that frees lacking bytes may
// remove more than needed: never anything unconfirmed.
func (l *ledger) cut(r Retention, now time.Time, full bool, lacking int64) retentionCut {
	c := retentionCut{before: math.MinInt64}
	if !r.Active() {
		return c
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.confirmed == 0 {
		return c
	}
	if r.RemoveAfterUpload {
		return retentionCut{all: true, before: math.MinInt64, why: "uploaded and confirmed: removed after upload"}
	}
	if r.KeepAge > 0 {
		c.before, c.why = now.Add(-r.KeepAge).UnixNano(), fmt.Sprintf("uploaded, older than %s", r.KeepAge)
	}
	need, why := int64(0), ""
	if full && r.KeepBytes > 0 && l.bytes > r.KeepBytes {
		need, why = l.bytes-r.KeepBytes, fmt.Sprintf("uploaded, oldest beyond the %d bytes kept", r.KeepBytes)
	}
	if lacking > need {
		need, why = lacking, "uploaded, oldest removed: the file system is short of space"
	}
	if need > 0 {
		if t := l.hist.cutoff(need); t > c.before {
			c.before, c.why = t, why
		}
	}
	return c
}

// removable reports whether the cut removes at least one counted file.
func (l *ledger) removable(c retentionCut) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.confirmed == 0 {
		return false
	}
	return c.all || c.before != math.MinInt64 && l.hist.oldest() < c.before
}

// mtimeHistogram is bytes and files per modification-time bin, in bounded
// memory: bins are one second wide at first and double in width whenever
// there are more than maxBins of them.
type mtimeHistogram struct {
	width int64 // ns
	bins  map[int64]int64
}

// maxBins bounds the histogram (about 40 bytes a bin).
const maxBins = 4096

func (h *mtimeHistogram) add(mtime, size int64) {
	if h.bins == nil {
		h.width, h.bins = int64(time.Second), map[int64]int64{}
	}
	h.bins[floorDiv(mtime, h.width)] += max(size, 1) // an empty file still counts for order
	for len(h.bins) > maxBins {
		h.width *= 2
		old := h.bins
		h.bins = make(map[int64]int64, len(old)/2+1)
		for k, v := range old {
			h.bins[floorDiv(k, 2)] += v
		}
	}
}

// cutoff returns the earliest bin boundary t such that the files modified
// before t hold at least need bytes (the end of the last bin when they all
// hold less).
func (h *mtimeHistogram) cutoff(need int64) int64 {
	keys := make([]int64, 0, len(h.bins))
	for k := range h.bins {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	sum := int64(0)
	for _, k := range keys {
		sum += h.bins[k]
		if sum >= need {
			return (k + 1) * h.width
		}
	}
	return (keys[len(keys)-1] + 1) * h.width
}

// oldest returns the start of the oldest bin.
func (h *mtimeHistogram) oldest() int64 {
	first := int64(math.MaxInt64)
	for k := range h.bins {
		first = min(first, k*h.width)
	}
	return first
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// lacking returns the bytes the file system of the mapping's directory
// lacks below the engine's free-space floor (0 when it has enough, or
// cannot be measured).
func (p *pass) lacking() int64 {
	floor := p.e.opts.MinFreeBytes
	avail, total, err := p.e.hooks.free(p.m.LocalDir)
	if err != nil {
		return 0
	}
	floor = max(floor, int64(p.e.opts.MinFreePercent/100*float64(total)))
	if short := floor - int64(avail); short > 0 {
		return short
	}
	return 0
}

// retentionRun is the removal run of a pass, once the pass's journal writer
// was flushed (the confirmations it removes on are committed): src again,
// with decideRetention. It reports what is short of space after it.
//
// full says src is the whole directory (not a change event): the free space
// is then checked. complete says the uploading run saw all of it (it did not
// stop on a server error), so that its byte count may be trusted.
func (p *pass) retentionRun(ctx context.Context, src source, full, complete bool) error {
	r := p.m.Retention
	lack := int64(0)
	if full {
		lack = p.lacking()
	}
	cut := p.ledger.cut(r, time.Now(), complete, lack)
	if cut.any() && p.ledger.removable(cut) {
		p.way = strategy{
			decide: func(it *item, _ scope) decision { return decideRetention(*it, cut) },
			transfer: func(ctx context.Context, j job, _ func()) outcome {
				return p.remove(ctx, j)
			},
		}
		if err := p.run(ctx, src); err != nil {
			return err
		}
	}
	if full {
		short := ""
		if lack > 0 {
			if after := p.lacking(); after > 0 {
				short = fmt.Sprintf("the file system of %s lacks %d bytes of its free-space floor and nothing uploaded is left to remove", p.m.LocalDir, after)
				if !r.Active() {
					short = fmt.Sprintf("the file system of %s lacks %d bytes of its free-space floor and the mapping sets no retention", p.m.LocalDir, after)
				}
			}
		}
		p.stats.setShort(short) // also during an outage, when it matters most
	}
	return nil
}
