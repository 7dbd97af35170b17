package worker

import (
	"bytes"
	"context"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// Directive is the directive of configuration messages, and the handler
// name the worker registers with.
const Directive = "device"

// Send receives a message from the control plane. A "device" message is
// parsed and validated before Send returns; a bad one is refused with
// InvalidArgument and changes nothing. A good one equal in content to the
// configuration in force is a no-op; otherwise it is persisted and applied
// in the background.
func (w *Worker) Send(_ context.Context, d *yggdrasil.Data) (*yggdrasil.Response, error) {
	log := w.log.With(zap.String("message_id", d.GetMessageId()), zap.String("directive", d.GetDirective()))
	if d.GetDirective() != Directive {
		log.Warn("refused message with unknown directive")
		return nil, status.Errorf(codes.InvalidArgument, "unknown directive %q: this worker handles only %q", d.GetDirective(), Directive)
	}
	m, err := config.Parse(d.GetContent())
	if err != nil {
		log.Warn("refused invalid configuration message", zap.Error(err))
		w.warn("InvalidConfiguration", fmt.Sprintf("message %s refused: %v", d.GetMessageId(), err))
		return nil, status.Errorf(codes.InvalidArgument, "invalid configuration message: %v", err)
	}
	changed, err := w.accept(m)
	if err != nil {
		log.Error("cannot accept configuration", zap.Error(err))
		w.warn("ConfigurationNotPersisted", err.Error())
		return nil, status.Errorf(codes.Internal, "accept configuration version %q: %v", m.Version, err)
	}
	if changed {
		log.Info("accepted configuration", zap.String("version", m.Version), zap.Int("workloads", len(m.Workloads)))
	} else {
		log.Debug("configuration unchanged", zap.String("version", m.Version))
	}
	return &yggdrasil.Response{}, nil
}

// accept makes m the desired configuration unless it equals the one in
// force. A change is persisted before it is published to the applier.
func (w *Worker) accept(m *config.Message) (bool, error) {
	canon, err := m.Canonical()
	if err != nil {
		return false, err
	}
	w.acceptMu.Lock()
	defer w.acceptMu.Unlock()

	w.mu.Lock()
	same := w.desired != nil && bytes.Equal(w.desiredCanon, canon)
	oldPeriod := int64(0)
	if w.desired != nil {
		oldPeriod = w.desired.Configuration.Heartbeat.Period()
	}
	w.mu.Unlock()
	if same {
		return false, nil
	}
	if err := w.store.save(canon); err != nil {
		return false, fmt.Errorf("persist configuration: %w", err)
	}
	w.mu.Lock()
	w.desired, w.desiredCanon = m, canon
	w.gen++
	w.paused = false
	w.mu.Unlock()
	signal(w.kick)
	if m.Configuration.Heartbeat.Period() != oldPeriod {
		signal(w.rearm)
	}
	return true, nil
}

// NotifyEvent receives connection events from yggd. RECEIVED_DISCONNECT
// means the device is being unregistered: heartbeats stop, the persisted
// configuration is deleted at once, and the applier removes the workloads
// and the synchronisation state.
func (w *Worker) NotifyEvent(_ context.Context, e *yggdrasil.EventNotification) (*yggdrasil.EventReceipt, error) {
	log := w.log.With(zap.Stringer("event", e.GetName()), zap.String("detail", e.GetDetail()))
	switch e.GetName() {
	case yggdrasil.Event_RECEIVED_DISCONNECT:
		log.Info("device unregistered: removing workloads, data synchronisation and state")
		if err := w.disconnect(); err != nil {
			log.Error("cannot remove persisted configuration", zap.Error(err))
			return nil, status.Errorf(codes.Internal, "disconnect: %v", err)
		}
	case yggdrasil.Event_UNEXPECTED_DISCONNECT, yggdrasil.Event_CONNECTION_RESTORED:
		log.Info("connection event")
	default:
		log.Warn("unknown event")
	}
	return &yggdrasil.EventReceipt{}, nil
}

func (w *Worker) disconnect() error {
	w.acceptMu.Lock()
	defer w.acceptMu.Unlock()
	w.mu.Lock()
	w.desired, w.desiredCanon = nil, nil
	w.gen++
	w.removeAll = true
	w.paused = true
	w.mu.Unlock()
	w.events.clear()
	signal(w.kick)
	return w.store.remove()
}
