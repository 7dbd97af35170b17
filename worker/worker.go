package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// ConfigFileName is the file, under the data directory, that holds the last
// good configuration.
const ConfigFileName = "config.json"

// Options configure a Worker. Zero durations take the defaults.
type Options struct {
	// DataDir holds the persisted configuration; the workloads' volumes
	// are DataDir/volumes/<workload>.
	DataDir string
	// Dispatcher is yggd's service, for heartbeats.
	Dispatcher yggdrasil.DispatcherClient
	// Log receives structured logs; nil means no logs.
	Log *zap.Logger
	// RetryInterval is the wait before re-applying a configuration whose
	// application failed; default 30s.
	RetryInterval time.Duration
	// SendTimeout bounds one heartbeat delivery; default 30s (yggd waits
	// up to 20s for its transport).
	SendTimeout time.Duration
	// FinalSyncTimeout bounds the last egress pass of a removed workload;
	// default 60s.
	FinalSyncTimeout time.Duration
	// Bandwidth is the sync engine's bandwidth limit, reported in
	// heartbeats; nil when there is none.
	Bandwidth *bwlimit.Limiter
}

// Worker is yggd's "device" worker. Create it with New, start it with
// Start, and serve it as yggdrasil.WorkerServer.
type Worker struct {
	yggdrasil.UnimplementedWorkerServer

	opts   Options
	wl     Workloads
	ds     DataSync
	log    *zap.Logger
	store  store
	events eventQueue

	// acceptMu serialises accepted changes (persist, then publish).
	acceptMu sync.Mutex

	mu           sync.Mutex
	desired      *config.Message // accepted and persisted; nil when none
	desiredCanon []byte          // desired's canonical form, for no-op detection
	gen          uint64          // bumped by every accepted change and disconnect
	removeAll    bool            // a disconnect waits for the applier
	paused       bool            // heartbeats stop after a disconnect
	applied      *config.Message // last configuration the applier applied
	applyErr     error           // its outcome
	// version is what heartbeats report: the version of the last applied
	// configuration, or of the one loaded from disk until it is applied.
	// hasVersion is false until there is one (heartbeats wait for it).
	version    string
	hasVersion bool
	appliedGen uint64 // the generation the applier last handled
	mappingsOf map[string][]string
	syncOff    bool // the configuration in force has no storage

	// mappings is the set handed to DataSync; only the applier uses it.
	mappings []datasync.Mapping
	// syncSeen is what heartbeats last reported per mapping; only the
	// heartbeat goroutine uses it.
	syncSeen map[string]syncReport

	kick         chan struct{}
	heartbeatNow chan struct{}
	rearm        chan struct{}
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

// New returns a Worker that runs workloads through wl and synchronises data
// through ds.
func New(opts Options, wl Workloads, ds DataSync) (*Worker, error) {
	if opts.DataDir == "" {
		return nil, errors.New("new worker: data directory not set")
	}
	if opts.Dispatcher == nil || wl == nil || ds == nil {
		return nil, errors.New("new worker: dispatcher, workloads and data sync are required")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 30 * time.Second
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 30 * time.Second
	}
	if opts.FinalSyncTimeout <= 0 {
		opts.FinalSyncTimeout = 60 * time.Second
	}
	return &Worker{
		opts:         opts,
		wl:           wl,
		ds:           ds,
		log:          opts.Log,
		store:        store{path: filepath.Join(opts.DataDir, ConfigFileName)},
		kick:         make(chan struct{}, 1),
		heartbeatNow: make(chan struct{}, 1),
		rearm:        make(chan struct{}, 1),
		syncSeen:     map[string]syncReport{},
	}, nil
}

// VolumesDir is where the workloads' /export directories live.
func (w *Worker) VolumesDir() string {
	return VolumesDirOf(w.opts.DataDir)
}

// VolumesDirOf is the volumes directory of a data directory: the host side
// of workload W's /export is VolumesDirOf(dataDir)/W.
func VolumesDirOf(dataDir string) string {
	return filepath.Join(dataDir, "volumes")
}

// Start loads the persisted configuration, if any, and starts applying it
// and sending heartbeats without waiting for yggd. It does not block.
func (w *Worker) Start(ctx context.Context) error {
	if err := os.MkdirAll(w.opts.DataDir, 0o755); err != nil {
		return fmt.Errorf("start worker: create data directory: %w", err)
	}
	w.loadPersisted()
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.runApplier(ctx) }()
	go func() { defer w.wg.Done(); w.runHeartbeats(ctx) }()
	return nil
}

// Stop ends the applier and the heartbeats and waits for them. Workloads
// and synchronisation are left running: stopping the worker is not
// unregistering the device.
func (w *Worker) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// FinalSync runs one last egress pass of every mapping, bounded by ctx, so
// that what the workloads wrote before a shutdown reaches the bucket. Call
// it after Stop: the applier must no longer be changing the mappings.
func (w *Worker) FinalSync(ctx context.Context) error {
	var ids []string
	for _, m := range w.ds.Status() {
		if m.Direction == datasync.Egress {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	w.log.Info("final egress pass", zap.Strings("mappings", ids))
	if err := w.ds.SyncNow(ctx, ids...); err != nil {
		return fmt.Errorf("final egress pass: %w", err)
	}
	return nil
}

// loadPersisted makes the stored configuration the desired one. A stored
// file that no longer parses is reported and left for inspection.
func (w *Worker) loadPersisted() {
	b, err := w.store.load()
	if errors.Is(err, fs.ErrNotExist) {
		w.log.Info("no persisted configuration; waiting for one from yggd", zap.String("path", w.store.path))
		return
	}
	if err != nil {
		w.log.Error("cannot read persisted configuration", zap.Error(err))
		w.warn("PersistedConfigurationUnreadable", err.Error())
		return
	}
	m, err := config.Parse(b)
	if err != nil {
		w.log.Error("persisted configuration is invalid; ignoring it", zap.String("path", w.store.path), zap.Error(err))
		w.warn("PersistedConfigurationInvalid", err.Error())
		return
	}
	w.mu.Lock()
	w.desired, w.desiredCanon = m, canonical(m)
	w.gen++
	// The last good configuration is what the device runs until the
	// applier (re)applies it: report its version, never an empty one.
	w.version, w.hasVersion = m.Version, true
	w.mu.Unlock()
	w.log.Info("loaded persisted configuration", zap.String("version", m.Version), zap.Int("workloads", len(m.Workloads)))
	signal(w.kick)
}

func (w *Worker) warn(reason, message string) {
	w.events.add(Event{Reason: reason, Message: message, Type: EventWarn})
}

func (w *Worker) info(reason, message string) {
	w.events.add(Event{Reason: reason, Message: message, Type: EventInfo})
}

// signal wakes the goroutine reading ch without ever blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func canonical(m *config.Message) []byte {
	b, err := m.Canonical()
	if err != nil {
		return nil // never equal to anything: the next message applies
	}
	return b
}
