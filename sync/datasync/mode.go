package datasync

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
)

// The ingress mode: whether an ingress mapping learns of new objects from
// the server's notifications (push) or by polling (poll), and why it polls.
// It is part of the mapping's status (heartbeat) and each change is logged
// once at info, so that a server whose notifications do not work is seen
// for what it is instead of taken for a slow one.

// Ingress modes.
const (
	ModePush = "push"
	ModePoll = "poll"
)

// Why an ingress mapping polls.
const (
	ReasonNotifyOff    = "notifications turned off (FLOTTA_INGRESS_NOTIFY=off)"
	ReasonStarting     = "opening the notification stream"
	ReasonUnsupported  = "the server offers no bucket notifications"
	ReasonStreamSilent = "the notification stream sends no ping on time (the server may hold its events back, as MinIO does since upstream PR 21651)"
	ReasonStreamDown   = "the notification stream is down"
)

// IngressMode says how an ingress mapping learns of new objects.
type IngressMode struct {
	Mode   string    `json:"mode"`             // ModePush or ModePoll
	Reason string    `json:"reason,omitempty"` // why it polls
	Since  time.Time `json:"since,omitzero"`   // when this mode and reason began
}

// ingressMode is an ingress mapping's mode as Status shows it.
func (e *Engine) ingressMode(m IngressMode) *IngressMode {
	if m.Mode == "" {
		m = IngressMode{Mode: ModePoll, Reason: ReasonStarting}
		if e.opts.NoNotify {
			m.Reason = ReasonNotifyOff
		}
	}
	return &m
}

// setMode records the ingress mode of the mappings ids and logs a change.
func (e *Engine) setMode(ids []string, push bool, reason string) {
	next := IngressMode{Mode: ModePoll, Reason: reason, Since: e.hooks.now()}
	if push {
		next = IngressMode{Mode: ModePush, Since: next.Since}
	}
	var changed []string
	for _, id := range ids {
		e.mu.Lock()
		mp := e.maps[id]
		e.mu.Unlock()
		if mp == nil {
			continue
		}
		reply := make(chan bool, 1)
		if !mp.send(msgMode{mode: next, reply: reply}) {
			continue
		}
		if ok, _ := wait(mp, reply); ok {
			changed = append(changed, id)
		}
	}
	if len(changed) == 0 {
		return
	}
	if push {
		e.log.Info("ingress mode: push (bucket notifications announce new objects)", zap.Strings("mappings", changed))
	} else {
		e.log.Info("ingress mode: poll", zap.Strings("mappings", changed), zap.String("reason", reason))
	}
}

// streamReason says why a stream could not be opened: a server that answers
// nothing within the progress deadline holds its stream back.
func streamReason(err error) string {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return ReasonStreamSilent
	}
	return ReasonStreamDown
}
