package podman

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultMonitorInterval is the reconcile period when Config leaves it zero.
const DefaultMonitorInterval = 15 * time.Second

// Config is what the Manager needs to know about the device.
type Config struct {
	Socket     string // podman service URI, e.g. unix:///run/podman/podman.sock
	VolumesDir string // host side of every workload's /export: <VolumesDir>/<workload>
	StateDir   string // manifests live here, one <workload>.yaml each
	// FilesDir holds each workload's registry auth file and Secret and
	// ConfigMap volume files (see WorkloadFilesDir); default: "workloads"
	// beside StateDir.
	FilesDir        string
	DeviceID        string        // DEVICE_ID in every container
	MonitorInterval time.Duration // reconcile period; DefaultMonitorInterval if zero
}

// Manager runs the device's workloads as podman pods. Apply sets the wanted
// workloads and reconciles at once; Run reconciles periodically so that what
// died is restarted. Errors from podman are recorded per workload (status
// message and a "warn" Event) and retried on the next reconcile; the Manager
// never gives up and never panics out of Run. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	log   *zap.Logger
	eng   engine
	store manifestStore
	vols  volumes
	files filesStore
	key   []byte // digest key, see ManifestOptions.DigestKey

	intervalCh chan time.Duration

	pass sync.Mutex // serialises Apply, Reconcile and RemoveAll

	mu          sync.Mutex
	desired     []Manifest       // in configuration order; nil until the first Apply
	buildErrs   map[string]error // workloads whose manifest could not be built
	applied     bool             // desired came from an Apply (not the initial state)
	fingerprint string           // of the last Apply's input, to skip unchanged ones
	lastErr     error            // result of the last Apply
	statuses    []WorkloadStatus
	warned      map[string]string // workload → message of its last warn event
	events      []Event
}

// maxEvents bounds the events kept between two Events calls.
const maxEvents = 100

// NewManager returns a Manager for cfg. It does not contact podman: the
// service is dialled on the first reconcile and again after failures, so a
// socket that is down at start-up is not an error.
func NewManager(cfg Config, log *zap.Logger) (*Manager, error) {
	if cfg.Socket == "" {
		return nil, errors.New("podman manager: no podman socket configured")
	}
	if cfg.VolumesDir == "" || cfg.StateDir == "" {
		return nil, errors.New("podman manager: volumes and state directories are required")
	}
	if cfg.MonitorInterval <= 0 {
		cfg.MonitorInterval = DefaultMonitorInterval
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.FilesDir == "" {
		cfg.FilesDir = filepath.Join(filepath.Dir(filepath.Clean(cfg.StateDir)), "workloads")
	}
	files := filesStore{dir: cfg.FilesDir}
	key, err := files.digestKey()
	if err != nil {
		return nil, fmt.Errorf("podman manager: %w", err)
	}
	return &Manager{
		cfg:        cfg,
		log:        log,
		eng:        newBindingsEngine(cfg.Socket),
		store:      manifestStore{dir: cfg.StateDir},
		vols:       volumes{dir: cfg.VolumesDir},
		files:      files,
		key:        key,
		intervalCh: make(chan time.Duration, 1),
		warned:     map[string]string{},
	}, nil
}

// Apply makes ws the device's workloads: it renders and stores their
// manifests, then reconciles (plays new pods, replaces changed ones, removes
// pods of workloads no longer listed). Applying the same workloads again
// costs no disk write and no podman call; it returns the previous result.
// The error joins the per-workload failures; they are also in Statuses and
// Events, and are retried by Run.
func (m *Manager) Apply(ctx context.Context, ws []Workload) error {
	manifests, buildErrs := m.build(ws)
	fp := fingerprint(manifests, buildErrs)

	m.pass.Lock()
	defer m.pass.Unlock()
	m.mu.Lock()
	if m.applied && fp == m.fingerprint {
		err := m.lastErr
		m.mu.Unlock()
		return err
	}
	m.mu.Unlock()

	// Build errors are part of every reconcile's result.
	errs := m.saveManifests(manifests)
	keep := map[string]bool{}
	for _, mf := range manifests {
		keep[mf.Name] = true
		// A changed auth file is stored even when the pod stays.
		if _, err := m.files.Materialise(&mf); err != nil {
			errs = append(errs, err)
		}
	}
	for name := range buildErrs { // their pods keep running on their files
		keep[name] = true
	}
	if err := m.files.Prune(keep); err != nil {
		errs = append(errs, err)
	}

	m.mu.Lock()
	m.desired, m.buildErrs, m.applied, m.fingerprint = manifests, buildErrs, true, fp
	m.mu.Unlock()

	errs = append(errs, m.reconcile(ctx))
	err := errors.Join(errs...)
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	return err
}

// build renders every workload's manifest; a duplicate name is an error.
func (m *Manager) build(ws []Workload) ([]Manifest, map[string]error) {
	opts := ManifestOptions{VolumesDir: m.cfg.VolumesDir, DeviceID: m.cfg.DeviceID, FilesDir: m.cfg.FilesDir, DigestKey: m.key}
	manifests := make([]Manifest, 0, len(ws))
	errs := map[string]error{}
	seen := map[string]bool{}
	for _, w := range ws {
		if seen[w.Name] {
			errs[w.Name] = fmt.Errorf("workload %q: duplicate workload name; the first one is used", w.Name)
			continue
		}
		seen[w.Name] = true
		mf, err := BuildManifest(w, opts)
		if err != nil {
			errs[w.Name] = err
			continue
		}
		manifests = append(manifests, mf)
	}
	return manifests, errs
}

// saveManifests stores the wanted manifests and deletes the others.
func (m *Manager) saveManifests(ms []Manifest) []error {
	var errs []error
	want := map[string]bool{}
	for _, mf := range ms {
		want[mf.Name] = true
		if _, err := m.store.Save(mf); err != nil {
			errs = append(errs, err)
		}
	}
	names, err := m.store.Names()
	if err != nil {
		return append(errs, err)
	}
	for _, n := range names {
		if !want[n] {
			if err := m.store.Remove(n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// fingerprint identifies an Apply's input by its manifests and errors.
func fingerprint(ms []Manifest, errs map[string]error) string {
	var b strings.Builder
	for _, mf := range ms {
		b.WriteString(mf.Name + "=" + mf.Hash + " " + mf.authDigest + "\n")
	}
	names := make([]string, 0, len(errs))
	for name := range errs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b.WriteString(name + "!" + errs[name].Error() + "\n")
	}
	return b.String()
}

// Statuses returns the last observed status of every workload, in
// configuration order (before the first Apply: of every managed pod found).
func (m *Manager) Statuses() []WorkloadStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]WorkloadStatus(nil), m.statuses...)
}

// Events returns the events recorded since the previous call and forgets them.
func (m *Manager) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	ev := m.events
	m.events = nil
	return ev
}

// SetMonitorInterval changes the reconcile period of Run; d <= 0 is ignored.
func (m *Manager) SetMonitorInterval(d time.Duration) {
	if d <= 0 {
		return
	}
	for {
		select {
		case m.intervalCh <- d:
			return
		default: // replace a value Run has not picked up yet
			select {
			case <-m.intervalCh:
			default:
			}
		}
	}
}

// Run reconciles at once and then every monitor interval until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	interval := m.cfg.MonitorInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-m.intervalCh:
			if d != interval {
				m.log.Info("workload monitoring interval changed", zap.Duration("interval", d))
				interval = d
				timer.Reset(interval)
			}
		case <-timer.C:
			if err := m.Reconcile(ctx); err != nil {
				m.log.Debug("reconcile workloads", zap.Error(err))
			}
			timer.Reset(interval)
		}
	}
}

// record appends an event, dropping the oldest beyond maxEvents. Callers
// hold m.mu.
func (m *Manager) record(e Event) {
	m.events = append(m.events, e)
	if over := len(m.events) - maxEvents; over > 0 {
		m.events = append(m.events[:0:0], m.events[over:]...)
	}
}
