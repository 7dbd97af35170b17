package datasync

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// ErrUnknownMapping is returned by SyncNow for an id Configure did not name.
var ErrUnknownMapping = errors.New("unknown mapping")

// Engine runs passes over mappings. Its methods are safe for concurrent use.
// Each mapping is owned by its service loop (mapping.go); the Engine holds
// what is shared by all of them: the endpoint, the journal, the transfers
// in flight, the watchers and the notification streams.
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

	mu      sync.Mutex // guards the fields below
	ep      *Endpoint
	backend Backend
	maps    map[string]*mapping
	base    context.Context // cancelled by Close and RemoveAll
	cancel  context.CancelFunc
	closed  bool
	// runCtx is Run's context while it runs (nil otherwise): the service
	// loops schedule passes only then.
	runCtx context.Context
	// noPartCopy is the endpoint that refused UploadPartCopy (growing.go).
	noPartCopy string

	watchers watchSet // the file-system watchers of egress mappings (watchers.go)
	// reconfigured tells the notification listeners (notify.go) that
	// Configure ran.
	reconfigured chan struct{}
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
		maps:         map[string]*mapping{},
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

// Run runs the mappings' schedules until ctx is done, then waits for the
// scheduled passes in flight and returns nil. Each mapping's service loop
// starts its full passes when they are due (schedule.go); a mapping still
// busy with a pass gets the next one when it ends. While Run runs, egress
// sources are watched (watchers.go, unless Options.NoWatch): their changes
// go to Changed as they settle; ingress mappings listen to bucket
// notifications (notify.go, unless Options.NoNotify).
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	e.startWatching() // before the first pass, so nothing written meanwhile is missed
	defer e.stopWatching()
	if !e.opts.NoNotify {
		wg.Go(func() { e.listenLoop(ctx) })
	}
	if e.opts.MaxStaleness > 0 {
		wg.Go(func() { e.growLoop(ctx) })
	}
	e.mu.Lock()
	e.runCtx = ctx
	list := e.list()
	e.mu.Unlock()
	for _, mp := range list {
		mp.send(msgRun{ctx: ctx})
	}
	<-ctx.Done()
	e.mu.Lock()
	if e.runCtx == ctx {
		e.runCtx = nil
	}
	list = e.list()
	e.mu.Unlock()
	for _, mp := range list {
		stopped := make(chan struct{})
		if mp.send(msgRun{reply: stopped}) {
			wait(mp, stopped)
		}
	}
	return nil
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
	list, err := e.mappings(ids)
	if err != nil {
		return err
	}
	replies := make([]chan error, len(list))
	for i, mp := range list {
		replies[i] = make(chan error, 1)
		if !mp.send(msgSync{ctx: ctx, po: po, reply: replies[i]}) {
			return errClosed
		}
	}
	var errs []error
	for i, mp := range list {
		err, ok := wait(mp, replies[i])
		if !ok {
			err = errClosed
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Changed runs the decision for just the named paths of a mapping (slash
// separated, relative to its directory) and moves what differs, without
// listing the bucket nor walking the rest of the tree: what a watcher calls
// with a batch of changed paths. A path that is a directory, or that is gone,
// covers everything under it. For an ingress mapping the paths are object
// keys relative to its prefix, each looked up with a HEAD (a bucket
// notification, notify.go); a key no longer there has its row pruned. It
// waits for a pass in flight first (changes seen meanwhile go together in
// the next pass). Retry backoff applies.
func (e *Engine) Changed(ctx context.Context, id string, rels []string) error {
	list, err := e.mappings([]string{id})
	if err != nil {
		return err
	}
	names := sortNames(rels)
	if len(names) == 0 {
		return nil
	}
	mp := list[0]
	reply := make(chan error, 1)
	if !mp.send(msgChange{ctx: ctx, names: names, reply: reply}) {
		return errClosed
	}
	err, ok := wait(mp, reply)
	if !ok {
		return errClosed
	}
	return err
}

// SetWatched tells the engine whether a healthy watcher reports the changes
// of a mapping (through Changed). While it does, Run's safety-net pass of the
// mapping runs every Options.WatchedInterval instead of every Interval; a
// watcher that overflowed or failed sets it back to false.
func (e *Engine) SetWatched(id string, healthy bool) {
	e.tell(id, msgWatched{healthy: healthy})
}

// tell sends a message to the loop of mapping id, if there is one.
func (e *Engine) tell(id string, msg any) {
	e.mu.Lock()
	mp := e.maps[id]
	e.mu.Unlock()
	if mp != nil {
		mp.send(msg)
	}
}

// list returns every mapping, by id; the caller holds e.mu.
func (e *Engine) list() []*mapping {
	out := make([]*mapping, 0, len(e.maps))
	for _, mp := range e.maps {
		out = append(out, mp)
	}
	slices.SortFunc(out, func(a, b *mapping) int { return strings.Compare(a.id, b.id) })
	return out
}

// mappings returns the named mappings (all when ids is empty), by id; an id
// not configured is an error.
func (e *Engine) mappings(ids []string) ([]*mapping, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errClosed
	}
	if len(ids) == 0 {
		return e.list(), nil
	}
	out := make([]*mapping, 0, len(ids))
	for _, id := range ids {
		mp := e.maps[id]
		if mp == nil {
			return nil, fmt.Errorf("sync %s: %w", id, ErrUnknownMapping)
		}
		out = append(out, mp)
	}
	return out, nil
}

// Status reports every configured mapping, by id: each as its service loop
// last published it.
func (e *Engine) Status() []MappingStatus {
	e.mu.Lock()
	list := e.list()
	e.mu.Unlock()
	out := make([]MappingStatus, 0, len(list))
	for _, mp := range list {
		st := *mp.published.Load()
		st.OldestUnsent = mp.oldestUnsent(&st)
		st.Throttled = e.throttled(mp, st.Direction)
		out = append(out, st)
	}
	return out
}

// RemoveAll stops every mapping, waits for their passes and deletes all
// journal state (the device was unregistered). The engine stays usable.
func (e *Engine) RemoveAll() error {
	e.mu.Lock()
	e.cancel()
	list := e.list()
	e.maps = map[string]*mapping{}
	e.base, e.cancel = context.WithCancel(context.Background())
	e.mu.Unlock()
	e.updateWatchers()
	e.reconfigure()
	for _, mp := range list {
		mp.close()
	}
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
// Status still reports the mappings as they were.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.cancel()
	list := e.list()
	e.mu.Unlock()
	e.stopWatching()
	for _, mp := range list {
		mp.close()
	}
	return e.jr.Close()
}
