package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/project-flotta/flotta-device-worker/podman"
	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

// fakeWorkloads is an in-memory Workloads.
type fakeWorkloads struct {
	mu        sync.Mutex
	applied   [][]podman.Workload
	removed   int
	statuses  []podman.WorkloadStatus
	events    []podman.Event
	failNext  int
	blockNext chan struct{} // when set, the next Apply waits for it
	interval  time.Duration
}

func (f *fakeWorkloads) SetMonitorInterval(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.interval = d
}

func (f *fakeWorkloads) Apply(ctx context.Context, ws []podman.Workload) error {
	f.mu.Lock()
	block := f.blockNext
	f.blockNext = nil
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, ws)
	if f.failNext > 0 {
		f.failNext--
		return errors.New("podman is not answering")
	}
	f.statuses = nil
	for _, w := range ws {
		f.statuses = append(f.statuses, podman.WorkloadStatus{Name: w.Name, State: podman.Running})
	}
	return nil
}

func (f *fakeWorkloads) Statuses() []podman.WorkloadStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]podman.WorkloadStatus(nil), f.statuses...)
}

func (f *fakeWorkloads) Events() []podman.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	evs := f.events
	f.events = nil
	return evs
}

func (f *fakeWorkloads) RemoveAll(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	f.statuses = nil
	return nil
}

func (f *fakeWorkloads) applies() [][]podman.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]podman.Workload(nil), f.applied...)
}

// fakeDataSync is an in-memory DataSync.
type fakeDataSync struct {
	mu         sync.Mutex
	configured int
	endpoint   *datasync.Endpoint
	mappings   []datasync.Mapping
	status     []datasync.MappingStatus
	removed    int
	// calls records "sync:<ids>" and "configure:<ids>" in order.
	calls []string
}

func (f *fakeDataSync) SyncNow(_ context.Context, ids ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "sync:"+strings.Join(ids, ","))
	return nil
}

func (f *fakeDataSync) history() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDataSync) Configure(ep *datasync.Endpoint, ms []datasync.Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configured++
	f.endpoint, f.mappings = ep, ms
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	f.calls = append(f.calls, "configure:"+strings.Join(ids, ","))
	return nil
}

func (f *fakeDataSync) Status() []datasync.MappingStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]datasync.MappingStatus(nil), f.status...)
}

func (f *fakeDataSync) RemoveAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	f.endpoint, f.mappings, f.status = nil, nil, nil
	return nil
}

func (f *fakeDataSync) setStatus(s []datasync.MappingStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
}

// fakeDispatcher records what the worker sends to yggd.
type fakeDispatcher struct {
	mu   sync.Mutex
	sent []*yggdrasil.Data
	fail bool
}

func (f *fakeDispatcher) Register(context.Context, *yggdrasil.RegistrationRequest, ...grpc.CallOption) (*yggdrasil.RegistrationResponse, error) {
	return &yggdrasil.RegistrationResponse{Registered: true, Address: "@test"}, nil
}

func (f *fakeDispatcher) Send(_ context.Context, d *yggdrasil.Data, _ ...grpc.CallOption) (*yggdrasil.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("yggd is away")
	}
	f.sent = append(f.sent, d)
	return &yggdrasil.Response{}, nil
}

func (f *fakeDispatcher) GetConfig(context.Context, *yggdrasil.Empty, ...grpc.CallOption) (*yggdrasil.Config, error) {
	return &yggdrasil.Config{}, nil
}

func (f *fakeDispatcher) messages() []*yggdrasil.Data {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*yggdrasil.Data(nil), f.sent...)
}

func (f *fakeDispatcher) setFail(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = b
}
