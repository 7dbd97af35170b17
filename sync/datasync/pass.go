package datasync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// A pass is plan then execute: a source (the march of a full pass, or the
// names of a change event) yields items; the direction's decision function
// turns each into an action; actions that move data become jobs run by
// bounded transfers, each returning an outcome; the recorder writes every
// outcome to the journal, the status and the retry backoff. The direction
// only supplies the decision and the transfers (strategy below).

// pass is the context of one pass of one mapping.
type pass struct {
	e       *Engine
	mp      *mapping
	m       Mapping
	be      Backend
	force   bool
	adopt   bool // egress: no journal yet, the remote side is listed to adopt what it holds
	po      PassOptions
	stats   *passStats
	started time.Time

	dir   *safefs.Dir // the mapping's directory (nil when it does not exist)
	w     *journal.Writer
	guard func() (*diskguard.Guard, error) // ingress
	group *groupCommit                     // ingress: small downloads made durable together (nil: one fsync each)
	lp    string                           // keys.ListPrefix(m.Prefix)
	way   strategy

	noRows bool // dry run: the journal holds nothing of this mapping

	// ledger (egress) counts the confirmed files kept and the local bytes
	// during the uploading run; removing says the removal run of the
	// retention is under way (retention.go).
	ledger   *ledger
	removing bool

	problemMu sync.Mutex
	problems  []string // names the walker could not read: nothing under them is assumed gone
	tooMany   bool

	// before is the retry backoff as the pass started (its loop's, which
	// does not change while the pass runs): the planner and the transfers
	// read it. retry are the changes the recorder makes (nil: forget the
	// name), handed back to the loop when the pass ends.
	before map[string]*retryState
	retry  map[string]*retryState
	// notes carries outcomes to the recorder while run runs.
	notes chan note
	// savedByPartCopy counts what growing files' transfers copied
	// server-side instead of sending.
	savedByPartCopy atomic.Int64
}

// note is one outcome for the recorder: a job's, or a name the walker
// could not read.
type note struct {
	j          job
	out        outcome
	unreadable bool
}

// strategy is what a direction adds to the one pass skeleton.
type strategy struct {
	// rowPrefix is what journal keys carry before a name: egress rows are
	// keyed by relative path, ingress rows by object key.
	rowPrefix string
	// decide is the direction's decision function; it may complete the
	// item (ingress: see ingressPlanner).
	decide func(it *item, sc scope) decision
	// transfer moves one name's data; it may call release once it no
	// longer needs the network (see executeReleasing).
	transfer func(ctx context.Context, j job, release func()) outcome
}

func (p *pass) strategy() strategy {
	if p.m.Direction == Egress {
		return strategy{
			decide: func(it *item, sc scope) decision { return decideEgress(*it, sc) },
			transfer: func(ctx context.Context, j job, _ func()) outcome {
				if j.d.act == actConfirm {
					return p.confirmUpload(ctx, j)
				}
				return p.upload(ctx, j)
			},
		}
	}
	return strategy{
		rowPrefix: p.lp,
		decide:    (&ingressPlanner{p: p}).decide,
		transfer:  p.download,
	}
}

// job is one name whose action moves data or refuses it.
type job struct {
	it item
	d  decision
}

// outcome is what was done about a job: a transfer's result, or, for the
// actions that need none (prune, refused earlier, not due yet, a dry run),
// what the planner concluded.
type outcome struct {
	pending bool            // not tried in this pass (its backoff, or the pass stopped)
	dry     bool            // a dry run's: nothing was done
	ahead   bool            // done ahead of its own job (a rotated file): that job accounts it
	bytes   int64           // moved; -1 when an existing copy was adopted
	row     *journal.Record // to store; nil for none
	prune   bool            // drop the row
	// conflict names the conflict copy the local version was kept as
	// (ingress), "" when there was none.
	conflict string
	// removed (egress retention): the file was removed; bytes is its size.
	removed bool
	err     error
}

// maxProblems bounds the names remembered as unreadable in one pass; past
// it, nothing is pruned in that pass.
const maxProblems = 4096

func (p *pass) problem(wp walkProblem) {
	p.tell(note{j: job{it: item{name: wp.name}}, unreadable: true})
	p.problemMu.Lock()
	if len(p.problems) < maxProblems {
		p.problems = append(p.problems, wp.name)
	} else {
		p.tooMany = true
	}
	n := len(p.problems)
	p.problemMu.Unlock()
	log := p.e.log.Debug
	if n <= 10 {
		log = p.e.log.Warn
	}
	log("skipped an entry that cannot be read (retried next pass)", zap.String("mapping", p.m.ID),
		zap.String("path", wp.name), zap.Error(wp.err))
}

// underProblem reports whether name is, or lies under, an entry the walker
// could not read: its absence from the walk says nothing.
func (p *pass) underProblem(name string) bool {
	p.problemMu.Lock()
	defer p.problemMu.Unlock()
	if p.tooMany {
		return true
	}
	for _, d := range p.problems {
		if d == "." || name == d || strings.HasPrefix(name, d+"/") {
			return true
		}
	}
	return false
}

func (p *pass) walker() *walker {
	return &walker{root: p.dir.Root(), problem: p.problem, symlink: p.noteSymlink,
		conflictCopy: p.noteConflictCopy, fault: p.e.hooks.walkFault}
}

func (p *pass) noteSymlink(rel string) {
	memo := &p.mp.memo
	memo.mu.Lock()
	first := !memo.symlinkNoted
	memo.symlinkNoted = true
	memo.mu.Unlock()
	if first {
		p.e.log.Info("symlinks are not followed nor uploaded", zap.String("mapping", p.m.ID),
			zap.String("first", p.m.LocalDir+"/"+rel))
	}
}

// source yields the items of a pass with the scope they were seen in.
type source func(yield func(item, scope) bool) error

// fullSource is the march of a whole pass: local files (egress, and ingress
// when reconciling), journal rows, and the remote listing (ingress, egress
// adoption and reconcile).
func (p *pass) fullSource(ctx context.Context) source {
	return p.fullSourceOf(ctx, p.m.Direction == Ingress || p.adopt || p.po.Reconcile)
}

// fullSourceOf is fullSource, listing the remote side only when listRemote
// (the removal run of the retention does not list).
func (p *pass) fullSourceOf(ctx context.Context, listRemote bool) source {
	walkLocal := p.dir != nil && (p.m.Direction == Egress || p.po.Reconcile)
	sc := scope{localWalked: walkLocal, remoteListed: listRemote}
	return func(yield func(item, scope) bool) error {
		var local iter.Seq[localFile]
		if walkLocal {
			w := p.walker()
			local = func(y func(localFile) bool) { w.walk(".", y) }
		}
		var remote iter.Seq2[Object, error]
		if listRemote {
			remote = p.be.List(ctx, p.m.Bucket, p.lp)
		}
		rows := &rowCursor{jr: p.e.jr, mapping: p.m.ID, prefix: p.way.rowPrefix, strip: p.way.rowPrefix, done: p.noRows}
		err := march(local, rows, remote, p.lp, func(it item, late bool) bool {
			if late {
				// Out of key order: look the other sides up for this name.
				p.lookupRow(&it)
				if walkLocal {
					p.lookupLocal(&it)
				}
			}
			return yield(it, sc)
		})
		if err != nil {
			return fmt.Errorf("%s %s: list %s/%s: %w", p.m.Direction, p.m.ID, p.m.Bucket, p.lp, err)
		}
		return nil
	}
}

// changedSource yields the items of the named paths only: each path's local
// stat and journal row (ingress: and its object, a HEAD), and for a
// directory (or a path now gone) everything under it. The remote side is
// not listed.
func (p *pass) changedSource(ctx context.Context, names []string) source {
	return func(yield func(item, scope) bool) error {
		sc := scope{localWalked: true}
		for _, name := range names {
			it := item{name: name}
			p.lookupRow(&it)
			isc := sc
			if p.m.Direction == Ingress {
				if err := p.lookupObject(ctx, &it); err != nil {
					return err
				}
				isc.remoteListed = true
			}
			st, ok, isDir, err := statLocal(p.dir.Root(), name)
			if err != nil {
				p.problem(walkProblem{name: name, err: err})
				continue
			}
			if ok {
				it.local = &st
			}
			if (it.local != nil || it.row != nil || it.remote != nil) && !yield(it, isc) {
				return nil
			}
			if ok {
				continue
			}
			// A directory, or gone: the subtree, walked against its rows.
			var local iter.Seq[localFile]
			if isDir {
				w := p.walker()
				local = func(y func(localFile) bool) { w.walk(name, y) }
			}
			rows := &rowCursor{jr: p.e.jr, mapping: p.m.ID, prefix: p.way.rowPrefix + name + "/", strip: p.way.rowPrefix}
			stop := false
			if err := march(local, rows, nil, p.lp, func(it item, _ bool) bool {
				stop = !yield(it, sc)
				return !stop
			}); err != nil {
				return err
			}
			if stop {
				return nil
			}
		}
		return nil
	}
}

func (p *pass) lookupRow(it *item) {
	if p.noRows {
		return
	}
	recs, found := make([]journal.Record, 1), make([]bool, 1)
	if p.e.jr.Lookup(p.m.ID, journal.Files, []string{p.way.rowPrefix + it.name}, recs, found) == nil && found[0] {
		it.row = &recs[0]
	}
}

func (p *pass) lookupLocal(it *item) {
	if st, ok, _, err := statLocal(p.dir.Root(), it.name); err == nil && ok {
		it.local = &st
	}
}

// run is the one pass skeleton of both directions: plan (src and decide) in
// one goroutine, execute (bounded transfers) in others, and record every
// outcome in one more: the recorder, the one writer of the journal rows,
// the pass statistics and the retry backoff. Actions that move no data
// (prunes, refusals, names not due, a dry run's) go from the planner to the
// recorder without taking a transfer slot.
func (p *pass) run(ctx context.Context, src source) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.notes = make(chan note, 64)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		for n := range p.notes {
			if n.unreadable {
				p.stats.unreadableOne()
				continue
			}
			if p.record(n.j, n.out) {
				cancel(n.out.err)
			}
		}
	}()
	jobs := make(chan job)
	send := func(j job) bool {
		if p.po.DryRun {
			// The executor that does nothing.
			p.tell(note{j: j, out: p.dryRun(j)})
			return true
		}
		if j.d.act == actRefuse {
			// Refused: no transfer, no slot taken.
			n := p.sizeOf(j.it)
			p.po.Progress.planned(n)
			p.po.Progress.begin()
			out := p.dryRun(j)
			p.po.Progress.end(n, out.err)
			p.tell(note{j: j, out: out})
			return ctx.Err() == nil
		}
		p.po.Progress.planned(p.sizeOf(j.it))
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var planErr error
	go func() {
		defer close(jobs)
		if p.ordered() {
			planErr = p.planOrdered(src, send)
			return
		}
		planErr = src(func(it item, sc scope) bool {
			j, ok := p.plan(it, sc, true)
			return !ok || send(j)
		})
	}()
	executeReleasing(ctx, p.e, jobs, func(j job, release func()) (int64, error) {
		if ctx.Err() != nil {
			p.tell(note{j: j, out: outcome{pending: true}})
			return 0, nil
		}
		p.po.Progress.begin()
		out := p.way.transfer(ctx, j, release)
		p.po.Progress.end(p.sizeOf(j.it), out.err)
		p.tell(note{j: j, out: out})
		return out.bytes, out.err
	})
	close(p.notes)
	<-recorded
	p.notes = nil
	var flushErr error
	if !p.po.DryRun {
		flushErr = p.w.Flush()
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%s %s: %w", p.m.Direction, p.m.ID, cause)
	}
	if planErr != nil {
		return planErr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if flushErr != nil {
		return fmt.Errorf("write journal: %w", flushErr)
	}
	return nil
}

// tell hands an outcome to the recorder.
func (p *pass) tell(n note) { p.notes <- n }

// decideOne completes the scope of an item and decides on it.
func (p *pass) decideOne(it *item, sc scope) decision {
	if sc.localWalked && it.local == nil && p.underProblem(it.name) {
		sc.localWalked = false // not seen is not gone
	}
	sc.confirm = p.m.Direction == Egress && p.m.Retention.Active()
	return p.way.decide(it, sc)
}

// plan decides on one item. It returns the job to execute, if any; what
// needs no executor (a skip, a prune, a name refused earlier, a job whose
// retry backoff has not passed) goes to the recorder at once. checkDue
// leaves a job whose backoff has not passed pending (an ordered pass checks
// it when the job's turn comes).
func (p *pass) plan(it item, sc scope, checkDue bool) (job, bool) {
	d := p.decideOne(&it, sc)
	if p.ledger != nil && !p.removing {
		p.ledger.see(it, d)
	}
	j := job{it: it, d: d}
	switch {
	case d.act == actSkip:
		return job{}, false
	case d.act == actRefused || d.act == actPrune:
		p.tell(note{j: j})
		return job{}, false
	case checkDue && !p.po.DryRun && d.act != actRefuse && !p.due(it.name):
		p.tell(note{j: j, out: outcome{pending: true}})
		return job{}, false
	}
	return j, true
}

// record is the one place an outcome is written down: journal row, pass
// statistics (the status), retry backoff, log. It reports whether the error
// means the server cannot be used, so that the pass stops.
func (p *pass) record(j job, out outcome) (serverDown bool) {
	name, key := j.it.name, p.lp+j.it.name
	err := out.err
	switch {
	case j.d.act == actRefused:
		p.stats.refuse(fmt.Errorf("%w %q (refused earlier)", keys.ErrHostile, key))
		p.report(j.it, j.d)
		return false
	case j.d.act == actPrune:
		p.report(j.it, j.d)
		if !p.po.DryRun {
			p.writeRow(journal.Entry{Key: p.way.rowPrefix + name, Delete: true})
			p.succeeded(name)
			p.stats.prunedOne()
		}
		return false
	case out.pending:
		p.stats.addPending()
		return false
	case out.dry && err == nil:
		p.stats.addPending() // what the real run would move
		p.report(j.it, j.d)
		return false
	}
	if errors.Is(err, s3client.ErrServerSilent) {
		p.stalled(name)
	}
	switch {
	case err == nil:
		if out.row != nil {
			p.writeRow(journal.Entry{Key: p.way.rowPrefix + name, Record: *out.row})
		} else if out.prune {
			p.writeRow(journal.Entry{Key: p.way.rowPrefix + name, Delete: true})
		}
		p.succeeded(name)
		if out.bytes >= 0 && out.row != nil {
			p.stats.moved(out.bytes)
		}
		if out.row != nil && p.ledger != nil && !p.removing && !out.ahead {
			p.ledger.uploaded(out.row)
		}
		if out.removed {
			p.stats.removedOne(out.bytes)
			p.report(j.it, j.d)
			p.e.log.Debug("removed after upload", zap.String("mapping", p.m.ID), zap.String("path", name), zap.String("why", j.d.why))
		}
		if p.m.Direction == Ingress && j.d.act != actRemove {
			p.report(j.it, j.d) // what was done: the dry run reports the same
		}
		if out.conflict != "" {
			p.stats.conflict()
			p.e.log.Warn("file changed on the device and in the bucket: the device's version is kept as a conflict copy",
				zap.String("mapping", p.m.ID), zap.String("key", key), zap.String("copy", p.m.LocalDir+"/"+out.conflict))
		}
	case errors.Is(err, keys.ErrHostile) || errors.Is(err, safefs.ErrUnsafe):
		// Refused for its key or path: remembered, so that it is logged
		// once per version of the object.
		p.stats.refuse(err)
		p.report(j.it, j.d)
		if !p.po.DryRun {
			o := j.it.remote0()
			p.writeRow(journal.Entry{Key: p.way.rowPrefix + name, Record: journal.Record{Size: o.Size, ETag: o.ETag, Refused: true}})
			p.e.log.Warn("object not written", zap.String("mapping", p.m.ID), zap.String("key", key), zap.Error(err))
		}
	case errors.Is(err, diskguard.ErrQuota) || errors.Is(err, diskguard.ErrFreeSpace):
		p.stats.refuse(err) // retried every pass
		p.reportAs(j.it, "disk-guard", err.Error())
		if !p.po.DryRun {
			p.e.log.Warn("object not written", zap.String("mapping", p.m.ID), zap.String("key", key), zap.Error(err))
		}
	case errors.Is(err, stablefile.ErrChanged) && !errors.Is(err, errTorn):
		if p.m.Direction == Egress {
			p.markGrowing(name) // sent as snapshots from now on
		}
		p.stats.addPending()
		p.failed(name, true)
		p.e.log.Debug("file changed during upload, retrying later", zap.String("mapping", p.m.ID), zap.String("key", key))
	case errors.Is(err, errLocalChanged):
		// Kept as it is: the next pass decides on what the file is then.
		p.stats.addPending()
		p.failed(name, true)
		p.e.log.Info("local file changed since the plan, not overwritten", zap.String("mapping", p.m.ID), zap.String("key", key))
	case errors.Is(err, errObjectMoved):
		p.stats.addPending() // the next listing sees the new version
		p.failed(name, true)
	case errors.Is(err, fs.ErrNotExist) && p.m.Direction == Egress:
		// Deleted since the walk: the next pass prunes its row.
	case errors.Is(err, fs.ErrPermission) && p.m.Direction == Egress:
		// A file the engine may not read: skipped like an unreadable
		// directory, retried with backoff; the pass goes on.
		p.stats.unreadableOne()
		p.failed(name, false)
		p.e.log.Warn("skipped a file that cannot be read", zap.String("mapping", p.m.ID), zap.String("key", key), zap.Error(err))
	case serverWide(err):
		p.stats.fail(err)
		p.failed(name, true)
		return true
	case j.d.act == actRemove:
		p.stats.fail(err)
		p.failed(name, false)
		p.e.log.Warn("remove after upload failed (the file is kept)", zap.String("mapping", p.m.ID), zap.String("path", name), zap.Error(err))
	default:
		p.stats.fail(err)
		p.failed(name, false)
		p.e.log.Warn(p.m.Direction.verb()+" failed", zap.String("mapping", p.m.ID), zap.String("key", key), zap.Error(err))
	}
	return false
}

// errObjectMoved means the object changed or vanished between the listing and
// the download.
var errObjectMoved = errors.New("object changed since it was listed")

func (d Direction) verb() string {
	if d == Egress {
		return "upload"
	}
	return "download"
}

// writeRow adds a journal row to the pass's batch (none in a dry run).
func (p *pass) writeRow(en journal.Entry) {
	if p.w != nil {
		p.w.Add(en)
	}
}

// due reports whether name may be tried now (its backoff has passed).
func (p *pass) due(name string) bool {
	if p.force {
		return true
	}
	r := p.before[name]
	return r == nil || !p.started.Before(r.next)
}

// retryOf is the recorder's copy of name's backoff, made on first use.
func (p *pass) retryOf(name string) *retryState {
	if r, ok := p.retry[name]; ok && r != nil {
		return r
	}
	r := &retryState{first: p.started}
	if old := p.before[name]; old != nil {
		cp := *old
		r = &cp
	}
	p.retry[name] = r
	return r
}

// failed records a failure of name and schedules its next try with
// exponential backoff; transient says the next pass may try again at once.
func (p *pass) failed(name string, transient bool) {
	r := p.retryOf(name)
	if transient {
		r.next = time.Time{}
		return
	}
	r.attempts++
	d := p.e.hooks.backoffBase << min(r.attempts-1, 16)
	d = min(d, p.e.hooks.backoffCeiling)
	r.next = time.Now().Add(d)
}

// stalled records that a try of name timed out on the link.
func (p *pass) stalled(name string) { p.retryOf(name).stalls++ }

// stalls is the number of earlier tries of name that timed out on the link.
func (p *pass) stalls(name string) int {
	if r := p.before[name]; r != nil {
		return r.stalls
	}
	return 0
}

// firstFailed is when name first failed, if it has.
func (p *pass) firstFailed(name string) (time.Time, bool) {
	if r, ok := p.retry[name]; ok {
		if r == nil {
			return time.Time{}, false
		}
		return r.first, true
	}
	if r := p.before[name]; r != nil {
		return r.first, true
	}
	return time.Time{}, false
}

func (p *pass) succeeded(name string) {
	if _, ok := p.before[name]; ok {
		p.retry[name] = nil
	} else {
		delete(p.retry, name)
	}
}

// PassOptions change what one pass does.
type PassOptions struct {
	// Reconcile compares both sides, not only each with the journal: the
	// remote prefix is listed (one LIST per 1,000 objects) and, for ingress,
	// the local directory walked. An egress object deleted or replaced in
	// the bucket is uploaded again; a file deleted from an ingress target is
	// downloaded again.
	Reconcile bool
	// DryRun plans and reports without moving anything nor writing the
	// journal or any local file.
	DryRun bool
	// Report, when set, receives every planned action that is not a skip
	// (for dry runs; also called during real passes: ingress reports each
	// action once it is done, with the same names a dry run plans).
	Report func(Planned)
	// Progress, when set, counts the pass's transfers as they happen.
	Progress *Progress
	// Restore (ingress, a pass that does not walk the directory) looks up
	// the local file of every object the journal says was downloaded and
	// has not changed, and downloads again those deleted locally: one lstat
	// each, no request. A reconcile finds them by its walk anyway.
	Restore bool
}

// Planned is one action a pass decided on.
type Planned struct {
	Action string // upload, adopt, confirm, remove, download, conflict, refuse, refused, prune, disk-guard; "summary" ends a dry run (Size: entries that could not be read)
	Key    string // object key
	Path   string // local path relative to the mapping's directory
	Size   int64
	Why    string
}

func (p *pass) report(it item, d decision) {
	if p.po.Report == nil {
		return
	}
	p.po.Report(Planned{Action: d.act.String(), Key: p.lp + it.name, Path: it.name, Size: p.sizeOf(it), Why: d.why})
}

// dryRun is the executor of the jobs that move no data: a dry run's (it
// reads, the disk guard measures the directory, but writes nothing) and a
// refusal's.
func (p *pass) dryRun(j job) outcome {
	if j.d.act == actRefuse {
		return outcome{dry: p.po.DryRun, err: p.refusal(j)}
	}
	if j.d.act == actDownload || j.d.act == actConflict {
		if _, err := keys.Rel(p.m.Prefix, j.it.remote0().Key); err == nil {
			guard, err := p.guard()
			if err == nil {
				var res *diskguard.Reservation
				existing := int64(0)
				if j.it.local != nil {
					existing = j.it.local.Size
				}
				res, err = guard.Reserve(j.it.remote0().Size, existing)
				if err == nil {
					res.Commit() // counted as written, for the next ones
				}
			}
			if err != nil {
				return outcome{dry: true, err: err}
			}
		}
	}
	return outcome{dry: true}
}

func (p *pass) reportAs(it item, act, why string) {
	if p.po.Report == nil {
		return
	}
	p.po.Report(Planned{Action: act, Key: p.lp + it.name, Path: it.name, Size: it.remote0().Size, Why: why})
}

// remote0 is the object of an ingress item: listed, or as the journal row
// last saw it (change events do not list).
func (it item) remote0() Object {
	if it.remote != nil {
		return *it.remote
	}
	if it.row != nil {
		return Object{Size: it.row.Size, ETag: it.row.ETag}
	}
	return Object{}
}

// sortNames sorts and dedups the paths of a change event, dropping those that
// are not clean relative paths.
func sortNames(rels []string) []string {
	out := make([]string, 0, len(rels))
	for _, r := range rels {
		r = strings.Trim(r, "/")
		if r == "" || r == "." || strings.HasPrefix(r, "../") || r == ".." || strings.Contains(r, "/../") ||
			strings.Contains(r, "//") || strings.Contains(r, "/./") {
			continue
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
