package worker

import (
	"context"
	"time"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

// Workloads runs the device's workloads. The podman package implements it.
type Workloads interface {
	// Apply makes the running workloads exactly ws: creates the missing,
	// replaces the changed, removes the others, and leaves unchanged ones
	// alone (so re-applying the same list costs nothing).
	Apply(ctx context.Context, ws []podman.Workload) error
	// Statuses reports the observed state of each workload.
	Statuses() []podman.WorkloadStatus
	// Events returns the events collected since the last call, and forgets
	// them.
	Events() []podman.Event
	// RemoveAll removes every workload the device runs.
	RemoveAll(ctx context.Context) error
	// SetMonitorInterval sets how often dead workloads are looked for and
	// restarted.
	SetMonitorInterval(d time.Duration)
}

// DataSync keeps the workloads' directories in sync with S3. The sync
// engine implements it.
type DataSync interface {
	// Configure replaces the endpoint and the set of mappings; mappings
	// whose ID is unchanged keep their state. Configure(nil, nil) stops all
	// synchronisation.
	Configure(ep *datasync.Endpoint, ms []datasync.Mapping) error
	// Status reports each configured mapping.
	Status() []datasync.MappingStatus
	// SyncNow runs one pass of the given mappings now and waits for it; it
	// carries the last egress pass of a removed workload or of a shutdown.
	SyncNow(ctx context.Context, ids ...string) error
	// RemoveAll stops synchronising and forgets the journal state.
	RemoveAll() error
}
