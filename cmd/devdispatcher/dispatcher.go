package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/worker"
)

// registration is a worker that registered a handler.
type registration struct {
	pid     int64
	address string
	conn    *grpc.ClientConn
}

// dispatcher plays yggd's Dispatcher service.
type dispatcher struct {
	yggdrasil.UnimplementedDispatcherServer

	rec    *recorder
	config *yggdrasil.Config

	mu       sync.Mutex
	handlers map[string]*registration
}

func newDispatcher(rec *recorder, cfg *yggdrasil.Config) *dispatcher {
	return &dispatcher{rec: rec, config: cfg, handlers: map[string]*registration{}}
}

// Register gives the worker an abstract socket address to listen on, and
// refuses a handler that is already registered, as yggd does.
func (d *dispatcher) Register(_ context.Context, r *yggdrasil.RegistrationRequest) (*yggdrasil.RegistrationResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.handlers[r.GetHandler()]; ok {
		d.rec.record("register", map[string]any{"handler": r.GetHandler(), "pid": r.GetPid(), "registered": false,
			"error": fmt.Sprintf("handler already registered by pid %d", old.pid)})
		return &yggdrasil.RegistrationResponse{Registered: false}, nil
	}
	addr := "@ygg-" + r.GetHandler() + "-" + randomHex(6)
	conn, err := worker.Dial(addr)
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", r.GetHandler(), err)
	}
	d.handlers[r.GetHandler()] = &registration{pid: r.GetPid(), address: addr, conn: conn}
	d.rec.record("register", map[string]any{"handler": r.GetHandler(), "pid": r.GetPid(), "registered": true, "address": addr})
	return &yggdrasil.RegistrationResponse{Registered: true, Address: addr}, nil
}

// Send records what the worker sends for the control plane.
func (d *dispatcher) Send(_ context.Context, m *yggdrasil.Data) (*yggdrasil.Response, error) {
	fields := map[string]any{
		"directive":   m.GetDirective(),
		"message_id":  m.GetMessageId(),
		"response_to": m.GetResponseTo(),
		"metadata":    m.GetMetadata(),
	}
	if json.Valid(m.GetContent()) {
		fields["content"] = json.RawMessage(m.GetContent())
	} else {
		// yggd would drop it; show it so the mistake is visible.
		fields["content"] = string(m.GetContent())
		fields["invalid_json"] = true
	}
	d.rec.record("send", fields)
	return &yggdrasil.Response{}, nil
}

// GetConfig returns the configuration the worker was started with.
func (d *dispatcher) GetConfig(context.Context, *yggdrasil.Empty) (*yggdrasil.Config, error) {
	return d.config, nil
}

// worker returns the connection to the worker registered as handler.
func (d *dispatcher) worker(handler string) (yggdrasil.WorkerClient, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.handlers[handler]
	if !ok {
		return nil, false
	}
	return yggdrasil.NewWorkerClient(r.conn), true
}

// forget drops the registrations of a worker process that ended.
func (d *dispatcher) forget(pid int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for h, r := range d.handlers {
		if r.pid == int64(pid) {
			_ = r.conn.Close()
			delete(d.handlers, h)
		}
	}
}
