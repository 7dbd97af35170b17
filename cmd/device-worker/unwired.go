package main

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

// unwiredWorkloads stands in for the podman runner until it is wired into
// this binary: it logs what it is asked to run and reports every workload
// as stopped, saying why. It never pretends a workload runs.
type unwiredWorkloads struct {
	log    *zap.Logger
	mu     sync.Mutex
	names  []string
	events []podman.Event
}

func newUnwiredWorkloads(log *zap.Logger, podmanSocket string) *unwiredWorkloads {
	return &unwiredWorkloads{log: log.With(zap.String("component", "unwired-workloads"), zap.String("podman_socket", podmanSocket))}
}

const unwiredWorkloadsMessage = "podman runner not wired into this build; workload not run"

func (u *unwiredWorkloads) Apply(_ context.Context, ws []podman.Workload) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.names = u.names[:0]
	for _, w := range ws {
		u.names = append(u.names, w.Name)
	}
	u.log.Warn("would run workloads", zap.Strings("workloads", u.names))
	u.events = append(u.events, podman.Event{Reason: "WorkloadsNotRun", Message: unwiredWorkloadsMessage, Type: "warn"})
	return nil
}

func (u *unwiredWorkloads) Statuses() []podman.WorkloadStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]podman.WorkloadStatus, 0, len(u.names))
	for _, n := range u.names {
		out = append(out, podman.WorkloadStatus{Name: n, State: podman.Stopped, Message: unwiredWorkloadsMessage})
	}
	return out
}

func (u *unwiredWorkloads) Events() []podman.Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	evs := u.events
	u.events = nil
	return evs
}

func (u *unwiredWorkloads) RemoveAll(context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.log.Warn("would remove all workloads", zap.Strings("workloads", u.names))
	u.names = nil
	return nil
}

// unwiredDataSync stands in for the S3 synchroniser until it is wired into
// this binary: it logs the endpoint (without credentials) and the mappings
// and reports no mapping status.
type unwiredDataSync struct {
	log *zap.Logger
}

func newUnwiredDataSync(log *zap.Logger, interval time.Duration) *unwiredDataSync {
	return &unwiredDataSync{log: log.With(zap.String("component", "unwired-datasync"), zap.Duration("interval", interval))}
}

func (u *unwiredDataSync) Configure(ep *datasync.Endpoint, ms []datasync.Mapping) error {
	endpoint := "none"
	if ep != nil {
		endpoint = ep.String()
	}
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	u.log.Warn("synchroniser not wired into this build; would synchronise", zap.String("endpoint", endpoint), zap.Strings("mappings", ids))
	return nil
}

func (u *unwiredDataSync) Status() []datasync.MappingStatus { return nil }

func (u *unwiredDataSync) RemoveAll() error {
	u.log.Warn("synchroniser not wired into this build; would remove all synchronisation state")
	return nil
}
