package datasync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// ErrUnknownMapping is returned by SyncNow for an id Configure did not name.
var ErrUnknownMapping = errors.New("unknown mapping")

// Engine runs passes over mappings. Its methods are safe for concurrent use.
type Engine struct {
	opts Options
	log  *zap.Logger
	jr   *journal.DB
	flow *flow // the transfers in flight, engine-wide (flow.go)
	// commits bounds downloads that left their transfer slot to fsync and
	// rename (see executeReleasing): as many again as transfers at most.
	commits chan struct{}

	hooks hooks // test seams and tunables (hooks.go)

	// newBackend makes the Backend of an endpoint (minio-go; tests swap in
	// an in-memory bucket).
	newBackend func(ep *Endpoint) (Backend, error)

	mu       sync.Mutex
	ep       *Endpoint
	backend  Backend
	maps     map[string]*mapState
	base     context.Context // cancelled by Close and RemoveAll
	cancel   context.CancelFunc
	passes   sync.WaitGroup
	closed   bool
	runCount int // passes started, for tests
	// kick wakes Run up when a mapping is owed a prompt pass (mapState.prompt).
	kick chan struct{}

	// noPartCopy is the endpoint that refused UploadPartCopy (growing.go).
	noPartCopy string

	watchers watchSet // the file-system watchers of egress mappings (watchers.go)
	// reconfigured tells the notification listeners (notify.go) that
	// Configure ran.
	reconfigured chan struct{}
}

// mapState is one mapping and what the engine remembers of it in memory:
// status and per-file retry backoff (the journal holds everything else).
type mapState struct {
	id   string     // m.ID, never written after creation: read without locks
	m    Mapping    // guarded by mu (written by Configure)
	pass sync.Mutex // held for a whole pass: never two passes of one mapping
	// prompt (guarded by Engine.mu) says the mapping is new or its endpoint
	// changed and no pass has started since: Run starts one at once instead
	// of at the next interval. Cleared when a pass starts.
	prompt bool
	ctx    context.Context
	cancel context.CancelFunc

	// watched (guarded by Engine.mu) says a healthy watcher reports the
	// mapping's changes (SetWatched): Run's safety-net pass is then due
	// every Options.WatchedInterval instead of every Interval.
	watched bool
	// lastFull and lastReconcile (guarded by Engine.mu) are when Run last
	// started a full pass and a reconcile pass of the mapping.
	lastFull, lastReconcile time.Time
	// poll (guarded by Engine.mu) is an ingress mapping's adaptive schedule (poll.go).
	poll pollState
	// mode (guarded by Engine.mu) is an ingress mapping's push or poll
	// mode (mode.go); zero until the stream was tried.
	mode IngressMode

	mu            sync.Mutex // guards the fields below
	status        MappingStatus
	retry         map[string]*retryState
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

	transfers atomic.Int32 // uploads and downloads in flight, for Throttled
}

type retryState struct {
	first    time.Time // when the change was first seen and failed
	attempts int
	next     time.Time
	// stalls counts the tries that timed out on the link: the next one
	// waits longer for answers and cuts a big file in smaller parts.
	stalls int
}

// New opens the journal under opts.StateDir and returns an Engine with no
// mappings.
func New(opts Options, log *zap.Logger) (*Engine, error) {
	if opts.StateDir == "" {
		return nil, errors.New("datasync: Options.StateDir is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Concurrency < 0 {
		opts.Concurrency = 0
	}
	if opts.MaxConcurrency <= 0 {
		opts.MaxConcurrency = DefaultMaxConcurrency
	}
	opts.MaxConcurrency = max(opts.MaxConcurrency, opts.Concurrency, MinConcurrency)
	if opts.WatchedInterval <= 0 {
		opts.WatchedInterval = DefaultWatchedInterval
	}
	opts.WatchedInterval = max(opts.WatchedInterval, opts.Interval)
	if opts.MaxStaleness == 0 {
		opts.MaxStaleness = DefaultMaxStaleness
	}
	if opts.PollFast == 0 {
		opts.PollFast = DefaultPollFast
	}
	if opts.PollMax == 0 {
		opts.PollMax = DefaultPollMax
	}
	if opts.ReconcileInterval == 0 {
		opts.ReconcileInterval = DefaultReconcileInterval
	}
	switch {
	case opts.MinFreeBytes == 0:
		opts.MinFreeBytes = DefaultMinFreeBytes
	case opts.MinFreeBytes < 0:
		opts.MinFreeBytes = 0
	}
	switch {
	case opts.MinFreePercent == 0:
		opts.MinFreePercent = DefaultMinFreePercent
	case opts.MinFreePercent < 0:
		opts.MinFreePercent = 0
	}
	if log == nil {
		log = zap.NewNop()
	}
	jr, err := journal.Open(filepath.Join(opts.StateDir, "sync-journal.db"))
	if err != nil {
		return nil, err
	}
	if jr.SetAside != "" {
		log.Warn("the sync journal was unreadable: set aside, starting a new one (egress adopts what the bucket holds)",
			zap.String("set_aside", jr.SetAside))
	}
	e := &Engine{
		opts: opts, log: log, jr: jr,
		flow:    newFlow(opts.Concurrency, DefaultConcurrency, MinConcurrency, opts.MaxConcurrency),
		commits: make(chan struct{}, opts.MaxConcurrency),
		hooks: hooks{free: diskguard.Statfs, settle: 50 * time.Millisecond, backoffBase: opts.Interval,
			backoffCeiling: 30 * time.Minute, now: time.Now},
		maps:         map[string]*mapState{},
		kick:         make(chan struct{}, 1),
		reconfigured: make(chan struct{}, 1),
	}
	e.newBackend = func(ep *Endpoint) (Backend, error) {
		cfg := s3client.Config{
			Host: ep.Host, Port: ep.Port, Secure: ep.Secure, Region: ep.Region,
			AccessKey: ep.AccessKey, SecretKey: ep.SecretKey, CAPEM: ep.CAPEM,
			Transport: e.opts.Transport, Wrap: e.opts.WrapTransport, Conns: 2 * e.opts.MaxConcurrency, Timeouts: e.opts.Timeouts,
			Limiter: e.opts.Limiter,
		}
		client, rt, err := s3client.NewWithTransport(cfg)
		if err != nil {
			return nil, err
		}
		put, err := s3client.NewSingleTry(cfg, rt)
		if err != nil {
			return nil, err
		}
		return newMinioBackend(client, put, rt, ep), nil
	}
	e.base, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Configure replaces the endpoint and the set of mappings. A nil endpoint
// turns sync off (mappings stay listed in Status but no pass runs). Mappings
// that keep their ID keep their status and journal; the journal of mappings
// no longer named is dropped (unless Options.KeepUnknownMappings). Calling it
// again with the same arguments costs next to nothing. A new mapping, and
// every mapping when the endpoint or its credentials changed, gets its next
// pass from Run at once (after the pass in flight, if any) rather than at
// the next interval.
func (e *Engine) Configure(ep *Endpoint, ms []Mapping) error {
	ms = slices.Clone(ms)
	seen := map[string]bool{}
	for i := range ms {
		m := &ms[i]
		if err := validate(m); err != nil {
			return err
		}
		if seen[m.ID] {
			return fmt.Errorf("mapping %s: duplicate id", m.ID)
		}
		seen[m.ID] = true
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("datasync: engine closed")
	}
	endpointChanged := !sameEndpoint(e.ep, ep)
	if endpointChanged {
		var be Backend
		if ep != nil {
			var err error
			be, err = e.newBackend(ep)
			if err != nil {
				e.mu.Unlock()
				return err
			}
			cp := *ep
			cp.CAPEM = slices.Clone(ep.CAPEM)
			ep = &cp
		}
		e.ep, e.backend = ep, be
		e.log.Info("sync endpoint configured", zap.Stringer("endpoint", endpointString{ep}))
	}
	var removed []*mapState
	next := make(map[string]*mapState, len(ms))
	for _, m := range ms {
		if old := e.maps[m.ID]; old != nil {
			old.mu.Lock()
			old.m = m
			old.status.Direction, old.status.LocalDir, old.status.Bucket, old.status.Prefix = m.Direction, m.LocalDir, m.Bucket, m.Prefix
			old.mu.Unlock()
			old.prompt = old.prompt || endpointChanged
			next[m.ID] = old
			continue
		}
		ms := &mapState{id: m.ID, m: m, retry: map[string]*retryState{}, prompt: true, lastReconcile: time.Now(),
			status: MappingStatus{ID: m.ID, Direction: m.Direction, LocalDir: m.LocalDir, Bucket: m.Bucket, Prefix: m.Prefix}}
		ms.ctx, ms.cancel = context.WithCancel(e.base)
		next[m.ID] = ms
	}
	kick := false
	for _, ms := range next {
		kick = kick || (ms.prompt && e.ep != nil)
	}
	for id, old := range e.maps {
		if next[id] == nil {
			old.cancel()
			removed = append(removed, old)
		}
	}
	e.maps = next
	e.mu.Unlock()
	e.updateWatchers() // before the wake: a new mapping is watched before its first pass
	if kick {
		e.wake()
	}
	e.reconfigure()

	// Wait for removed mappings' passes to stop before forgetting them.
	for _, old := range removed {
		old.pass.Lock()
		old.pass.Unlock() //nolint:staticcheck // waiting for the pass to end
		e.log.Info("sync mapping removed", zap.String("mapping", old.id))
	}
	if e.opts.KeepUnknownMappings {
		return nil
	}
	known, err := e.jr.Mappings()
	if err != nil {
		return fmt.Errorf("list journal: %w", err)
	}
	for _, id := range known {
		if !seen[id] {
			if err := e.jr.Drop(id); err != nil {
				return fmt.Errorf("drop journal of %s: %w", id, err)
			}
		}
	}
	return nil
}

func validate(m *Mapping) error {
	if m.ID == "" {
		return errors.New("mapping without id")
	}
	if m.Direction != Egress && m.Direction != Ingress {
		return fmt.Errorf("mapping %s: direction %q", m.ID, m.Direction)
	}
	if !filepath.IsAbs(m.Root) || !filepath.IsAbs(m.LocalDir) {
		return fmt.Errorf("mapping %s: root and local dir must be absolute", m.ID)
	}
	m.Root, m.LocalDir = filepath.Clean(m.Root), filepath.Clean(m.LocalDir)
	if rel, err := filepath.Rel(m.Root, m.LocalDir); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("mapping %s: %s is outside %s", m.ID, m.LocalDir, m.Root)
	}
	if m.Bucket == "" {
		return fmt.Errorf("mapping %s: no bucket", m.ID)
	}
	switch m.Order {
	case KeyOrder, OldestFirst, NewestFirst:
	default:
		return fmt.Errorf("mapping %s: order %q: want %q or %q", m.ID, m.Order, OldestFirst, NewestFirst)
	}
	if r := m.Retention; r.KeepBytes < 0 || r.KeepAge < 0 {
		return fmt.Errorf("mapping %s: negative retention limit", m.ID)
	}
	if m.Direction == Ingress && (m.Retention.Active() || m.Order != KeyOrder) {
		return fmt.Errorf("mapping %s: retention and order apply to egress only", m.ID)
	}
	m.Prefix = strings.Trim(m.Prefix, "/")
	return nil
}

func sameEndpoint(a, b *Endpoint) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Host == b.Host && a.Port == b.Port && a.Secure == b.Secure && a.Region == b.Region &&
		a.AccessKey == b.AccessKey && a.SecretKey == b.SecretKey && string(a.CAPEM) == string(b.CAPEM)
}

type endpointString struct{ ep *Endpoint }

func (s endpointString) String() string {
	if s.ep == nil {
		return "none (sync off)"
	}
	return s.ep.String()
}

// Run runs passes until ctx is done, then waits for the passes in flight and
// returns nil. Every Interval (plus up to 10% jitter) each mapping gets a
// full pass: its safety net, which for egress costs no S3 request when
// nothing changed. A mapping whose changes a healthy watcher reports
// (SetWatched) gets it every WatchedInterval instead. Every
// ReconcileInterval the pass is a reconcile (PassOptions.Reconcile). A
// mapping still busy with its previous pass is skipped for that round. A
// mapping Configure added, or whose endpoint changed, gets a pass at once.
// While Run runs, egress sources are watched (watchers.go, unless
// Options.NoWatch): their changes go to Changed as they settle.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	e.startWatching() // before the first round, so nothing written meanwhile is missed
	defer e.stopWatching()
	if !e.opts.NoNotify {
		wg.Go(func() { e.listenLoop(ctx) })
	}
	if e.opts.MaxStaleness > 0 {
		wg.Go(func() { e.growLoop(ctx) })
	}
	timer := time.NewTimer(0) // the first round at once
	defer timer.Stop()
	round := time.Now() // when the next round is due, fast polls aside
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			e.startPasses(ctx, &wg, false)
			jitter := time.Duration(rand.Int64N(int64(e.opts.Interval)/10 + 1))
			round = time.Now().Add(e.opts.Interval + jitter)
		case <-e.kick: // a prompt pass is owed, or a poll schedule got shorter
			e.startPasses(ctx, &wg, true)
		}
		timer.Reset(e.untilFastPoll(e.hooks.now(), time.Until(round)))
	}
}

// startPasses starts a pass of every mapping that is due (only those owed a
// prompt pass when onlyPrompt) and not busy with one.
func (e *Engine) startPasses(ctx context.Context, wg *sync.WaitGroup, onlyPrompt bool) {
	now := e.hooks.now()
	for _, ms := range e.mappings(nil) {
		e.mu.Lock()
		due := ms.prompt
		if !onlyPrompt && !due {
			due = e.fullDue(ms, now)
		}
		reconcile := e.opts.ReconcileInterval > 0 && now.Sub(ms.lastReconcile) >= e.opts.ReconcileInterval
		e.mu.Unlock()
		if !due && !reconcile {
			continue
		}
		if !ms.pass.TryLock() {
			continue // busy: the pass in flight wakes Run up again when it ends
		}
		e.mu.Lock()
		ms.lastFull = now
		if reconcile {
			ms.lastReconcile = now
		}
		e.mu.Unlock()
		wg.Go(func() {
			defer e.endPass(ms)
			err := e.passLocked(ctx, ms, false, PassOptions{Reconcile: reconcile}, nil)
			if err != nil && ctx.Err() == nil {
				e.log.Debug("sync pass failed", zap.String("mapping", ms.id), zap.Error(err))
			}
		})
	}
}

// endPass releases ms.pass and wakes Run up when the mapping was owed a
// prompt pass while this one ran (Configure changed it meanwhile).
func (e *Engine) endPass(ms *mapState) {
	ms.pass.Unlock()
	e.mu.Lock()
	// A closed engine owes nothing: its passes fail at once, and waking Run
	// for them would spin until Run's ctx ends.
	owed := ms.prompt && !e.closed && e.ep != nil && e.maps[ms.id] == ms
	e.mu.Unlock()
	if owed {
		e.wake()
	}
}

// wake tells Run that a mapping is owed a prompt pass.
func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default: // already pending
	}
}

// SyncNow runs one pass of the given mappings (all when none are given) now,
// ignoring retry backoff, and waits for them. A pass already running is waited
// for first, so SyncNow always covers changes made before it was called.
func (e *Engine) SyncNow(ctx context.Context, ids ...string) error {
	return e.Sync(ctx, PassOptions{}, ids...)
}

// Sync is SyncNow with options: a reconcile, or a dry run that only reports
// (through po.Report) what a pass would do and changes nothing.
func (e *Engine) Sync(ctx context.Context, po PassOptions, ids ...string) error {
	list := e.mappings(ids)
	if len(ids) > 0 && len(list) != len(ids) {
		for _, id := range ids {
			if !slices.ContainsFunc(list, func(ms *mapState) bool { return ms.id == id }) {
				return fmt.Errorf("sync %s: %w", id, ErrUnknownMapping)
			}
		}
	}
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, ms := range list {
		wg.Go(func() {
			ms.pass.Lock()
			defer e.endPass(ms)
			errs[i] = e.passLocked(ctx, ms, true, po, nil)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Changed runs the decision for just the named paths of a mapping (slash
// separated, relative to its directory) and moves what differs, without
// listing the bucket nor walking the rest of the tree: what a watcher calls
// with a batch of changed paths. A path that is a directory, or that is gone,
// covers everything under it. For an ingress mapping the paths are object
// keys relative to its prefix, each looked up with a HEAD (a bucket
// notification, notify.go); a key no longer there has its row pruned. It
// waits for a pass in flight first. Retry backoff applies.
func (e *Engine) Changed(ctx context.Context, id string, rels []string) error {
	list := e.mappings([]string{id})
	if len(list) == 0 {
		return fmt.Errorf("sync %s: %w", id, ErrUnknownMapping)
	}
	names := sortNames(rels)
	if len(names) == 0 {
		return nil
	}
	ms := list[0]
	ms.pass.Lock()
	defer e.endPass(ms)
	return e.passLocked(ctx, ms, false, PassOptions{}, names)
}

// SetWatched tells the engine whether a healthy watcher reports the changes
// of a mapping (through Changed). While it does, Run's safety-net pass of the
// mapping runs every Options.WatchedInterval instead of every Interval; a
// watcher that overflowed or failed sets it back to false.
func (e *Engine) SetWatched(id string, healthy bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ms := e.maps[id]; ms != nil {
		ms.watched = healthy
	}
}

// mappings returns the named mapping states (all when ids is empty), by id.
func (e *Engine) mappings(ids []string) []*mapState {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*mapState
	for id, ms := range e.maps {
		if len(ids) == 0 || slices.Contains(ids, id) {
			out = append(out, ms)
		}
	}
	slices.SortFunc(out, func(a, b *mapState) int { return strings.Compare(a.id, b.id) })
	return out
}

// Status reports every configured mapping, by id.
func (e *Engine) Status() []MappingStatus {
	list := e.mappings(nil)
	out := make([]MappingStatus, 0, len(list))
	for _, ms := range list {
		ms.mu.Lock()
		st := ms.status
		st.OldestUnsent = ms.oldestUnsent()
		ms.mu.Unlock()
		st.Throttled = e.throttled(ms, st.Direction)
		if st.Direction == Ingress {
			e.mu.Lock()
			st.Ingress = e.ingressMode(ms)
			e.mu.Unlock()
		}
		out = append(out, st)
	}
	return out
}

// RemoveAll stops every mapping, waits for their passes and deletes all
// journal state (the device was unregistered). The engine stays usable.
func (e *Engine) RemoveAll() error {
	e.mu.Lock()
	e.cancel()
	maps := e.maps
	e.maps = map[string]*mapState{}
	e.base, e.cancel = context.WithCancel(context.Background())
	e.mu.Unlock()
	e.updateWatchers()
	e.reconfigure()
	for _, ms := range maps {
		ms.pass.Lock()
		ms.pass.Unlock() //nolint:staticcheck // waiting for the pass to end
	}
	e.passes.Wait()
	ids, err := e.jr.Mappings()
	if err != nil {
		return fmt.Errorf("remove sync state: %w", err)
	}
	for _, id := range ids {
		if err := e.jr.Drop(id); err != nil {
			return fmt.Errorf("remove sync state of %s: %w", id, err)
		}
	}
	e.log.Info("sync state removed")
	return nil
}

// Close stops passes in flight, waits for them and closes the journal.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.cancel()
	maps := e.maps
	e.mu.Unlock()
	e.stopWatching()
	for _, ms := range maps {
		ms.pass.Lock()
		ms.pass.Unlock() //nolint:staticcheck // waiting for the pass to end
	}
	e.passes.Wait()
	return e.jr.Close()
}

// passStats collects what one pass did; its methods are safe for concurrent use.
type passStats struct {
	mu         sync.Mutex
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
}

// keptCount is what an egress pass leaves on the device: confirmed files
// and their bytes, and the bytes of all files.
type keptCount struct{ files, bytes, local int64 }

func (p *passStats) moved(n int64) {
	p.mu.Lock()
	p.files++
	p.bytes += n
	p.mu.Unlock()
}

func (p *passStats) addPending() { p.mu.Lock(); p.pending++; p.mu.Unlock() }

func (p *passStats) unreadableOne() { p.mu.Lock(); p.unreadable++; p.mu.Unlock() }

func (p *passStats) conflict() { p.mu.Lock(); p.conflicts++; p.mu.Unlock() }

func (p *passStats) removedOne(n int64) { p.mu.Lock(); p.removed++; p.removedB += n; p.mu.Unlock() }

func (p *passStats) setShort(s string) { p.mu.Lock(); p.short = s; p.mu.Unlock() }

func (p *passStats) refuse(err error) {
	p.mu.Lock()
	p.refused++
	if p.refusal == nil {
		p.refusal = err
	}
	p.mu.Unlock()
}

func (p *passStats) fail(err error) {
	p.mu.Lock()
	p.failed++
	p.pending++
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.mu.Unlock()
}

// passLocked runs one pass of ms; the caller holds ms.pass. names, when not
// nil, limits the pass to those paths (Changed).
func (e *Engine) passLocked(ctx context.Context, ms *mapState, force bool, po PassOptions, names []string) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("datasync: engine closed")
	}
	be, ep := e.backend, e.ep
	if names == nil && !po.DryRun {
		ms.prompt = false // this pass uses the current endpoint and mapping
	}
	ms.mu.Lock()
	m := ms.m
	ms.mu.Unlock()
	e.passes.Add(1)
	e.runCount++
	onPass := e.hooks.onPass
	e.mu.Unlock()
	if onPass != nil {
		onPass(ms.id, po, names != nil)
	}
	defer e.passes.Done()
	if be == nil {
		return nil // sync off
	}

	// The pass stops when the caller's ctx ends or the mapping is removed.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ms.ctx, func() { cancel(context.Canceled) })
	defer stop()

	started := time.Now()
	if !po.DryRun {
		ms.mu.Lock()
		ms.status.LastAttempt = started
		ms.mu.Unlock()
	}

	st := &passStats{}
	p := &pass{e: e, ms: ms, m: m, be: countTransfers(be, &ms.transfers), force: force, po: po, stats: st, started: started, lp: keys.ListPrefix(m.Prefix)}
	p.way = p.strategy()
	err := p.prepare(ep, names != nil)
	if err == nil && (p.dir != nil || m.Direction == Ingress) {
		if p.dir != nil {
			defer p.dir.Close()
		}
		src := p.fullSource(ctx)
		if names != nil {
			if p.dir == nil {
				src = func(func(item, scope) bool) error { return nil }
			} else {
				src = p.changedSource(ctx, names)
			}
		}
		var led *ledger
		if m.Direction == Egress && !po.DryRun {
			led = &ledger{}
			p.ledger = led
		}
		err = p.run(ctx, src)
		if err == nil && p.adopt && names == nil && !po.DryRun && st.failed == 0 {
			err = e.jr.SetListed(m.ID)
		}
		if led != nil && p.dir != nil && ctx.Err() == nil {
			// The uploads' rows are committed (run flushed): remove what
			// the retention lets go, walking the same names again. Also
			// when the server failed the run (an outage is when space
			// runs short), but then the run's counts are partial: only
			// the limits that look at one file at a time apply.
			rsrc := p.fullSourceOf(ctx, false)
			if names != nil {
				rsrc = p.changedSource(ctx, names)
			}
			p.removing = true
			complete := names == nil && err == nil
			rerr := p.retentionRun(ctx, rsrc, names == nil, complete)
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
	if po.DryRun {
		if po.Report != nil {
			// The end of the plan, with what the walk could not read.
			po.Report(Planned{Action: "summary", Why: fmt.Sprintf("%d unreadable", st.unreadable), Size: st.unreadable})
		}
		return err
	}
	e.finishPass(ms, m, st, started, names != nil, err)
	// Only an idle pass that worked lets the poll grow: a failure or files
	// still pending keep the base interval, so the mapping converges within
	// one interval once the server is back.
	busy := err != nil || st.files > 0 || st.removed > 0 || st.pruned > 0 || st.pending > 0 || st.failed > 0
	e.adaptPoll(ms, m, busy, names != nil)
	return err
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

func (e *Engine) finishPass(ms *mapState, m Mapping, st *passStats, started time.Time, partial bool, err error) {
	now := time.Now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	s := &ms.status
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
	for _, r := range ms.retry {
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
	fields := []zap.Field{zap.String("mapping", ms.id), zap.String("direction", string(m.Direction)),
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

// executeReleasing runs do for every job from jobs, as many at a time
// engine-wide as the flow allows (Options.Concurrency, or the adaptive
// limit), and returns when jobs is closed and all are done. do may call
// release once its transfer is over, to hand its slot to the next job while
// it finishes locally (ingress: fsync and rename). Callers bound that
// finishing work themselves (Engine.commits). do returns the bytes it moved
// and its error, which the adaptive limit learns from.
func executeReleasing[T any](ctx context.Context, e *Engine, jobs <-chan T, do func(j T, release func()) (int64, error)) {
	var wg sync.WaitGroup
	for j := range jobs {
		tok := e.flow.acquire(ctx)
		if tok == nil {
			continue // drain: the planner stops on ctx too
		}
		wg.Go(func() {
			n, err := do(j, tok.free)
			tok.done(n, err)
		})
	}
	wg.Wait()
}

// bufPool holds copy buffers: one per transfer would otherwise be allocated
// (io.Copy's 32 KiB) for every small file.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyBuffered is io.Copy with a pooled buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
}

// onlyWriter and onlyReader hide ReadFrom and WriteTo, so that CopyBuffer
// really uses the pooled buffer instead of allocating its own.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// serverWide reports whether err means the server cannot be used at all right
// now (unreachable, credentials refused, bucket missing), so the rest of the
// pass is pointless.
func serverWide(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch s3wire.Kind(err) {
	case s3wire.NoSuchBucket, s3wire.AccessDenied, s3wire.SlowDown, s3wire.Transient, s3wire.Timeout:
		return true
	case s3wire.NotFound, s3wire.Precondition:
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return false // refused for this object alone (a bad key, a part too small ...)
	}
	// The server is not answering in a way Kind names (TLS, DNS, a proxy).
	// Not any error with a Timeout method (nor net.Error): a local
	// *fs.PathError has one too, and one file the device cannot write (a
	// name too long, a permission) must not stop the whole pass.
	var ue *url.Error
	var de *net.DNSError
	return errors.As(err, &ue) || errors.As(err, &de)
}
