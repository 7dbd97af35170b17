package podman

import (
	"context"
	"errors"
	"fmt"
)

// RemoveAll is for the device's disconnection: it removes every pod this
// worker owns, every stored manifest and every workload volume directory,
// and forgets the applied workloads (until the next Apply, Run only
// observes). It removes what it can and returns what it could not.
func (m *Manager) RemoveAll(ctx context.Context) error {
	m.pass.Lock()
	defer m.pass.Unlock()

	m.mu.Lock()
	m.desired, m.buildErrs, m.applied, m.fingerprint, m.lastErr = nil, nil, false, "", nil
	m.mu.Unlock()

	var errs []error
	pods, err := m.eng.ListPods(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, pod := range pods {
		if err := m.eng.RemovePod(ctx, pod.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		m.record(Event{Reason: ReasonRemoved, Message: fmt.Sprintf("workload %q removed (device disconnected)", pod.Workload), Type: "info"})
		m.mu.Unlock()
	}
	names, err := m.store.Names()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := m.store.Remove(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.vols.RemoveAll(); err != nil {
		errs = append(errs, err)
	}
	if err := m.files.Prune(nil); err != nil {
		errs = append(errs, err)
	}
	if owned, err := m.eng.ListSecrets(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, name := range owned {
			if err := m.eng.RemoveSecret(ctx, name); err != nil {
				errs = append(errs, err)
			}
		}
	}

	m.mu.Lock()
	m.statuses = nil
	m.warned = map[string]string{}
	m.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove all workloads: %w", err)
	}
	return nil
}
