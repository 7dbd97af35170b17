package podman

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
)

// Event reasons the Manager records.
const (
	ReasonDeployed  = "WorkloadDeployed"  // info: pod played for the first time
	ReasonReplaced  = "WorkloadReplaced"  // info: pod played again for a changed manifest
	ReasonRestarted = "WorkloadRestarted" // info: a crashed or stopped pod was started
	ReasonRemoved   = "WorkloadRemoved"   // info: pod of a workload no longer configured removed
	ReasonFailed    = "WorkloadFailed"    // warn: the workload could not be deployed or observed
)

// Reconcile runs one pass: it lists the pods this worker owns and makes them
// match the applied workloads, restarting what died. Before the first Apply
// it only observes. It returns the joined per-workload errors.
func (m *Manager) Reconcile(ctx context.Context) error {
	m.pass.Lock()
	defer m.pass.Unlock()
	err := m.reconcile(ctx)
	m.mu.Lock()
	m.lastErr = err // what an unchanged Apply reports from now on
	m.mu.Unlock()
	return err
}

// pass collects what one reconcile pass did.
type pass struct {
	events []Event
	errs   map[string]error // workload → what failed
}

func (p *pass) info(reason, format string, args ...any) {
	p.events = append(p.events, Event{Reason: reason, Message: fmt.Sprintf(format, args...), Type: "info"})
}

func (m *Manager) reconcile(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("reconcile workloads: recovered from panic", zap.Any("panic", r))
			err = fmt.Errorf("reconcile workloads: internal error: %v", r)
		}
	}()
	m.mu.Lock()
	desired, buildErrs, applied := m.desired, m.buildErrs, m.applied
	m.mu.Unlock()

	found, err := m.eng.ListPods(ctx)
	if err != nil {
		m.publishUnreachable(desired, buildErrs, err)
		return errors.Join(err, joinWorkloadErrors(buildErrs))
	}
	if !applied {
		m.publishObserved(found)
		return nil
	}

	p := &pass{errs: map[string]error{}}
	for name, e := range buildErrs {
		p.errs[name] = e
	}
	byWorkload := map[string][]podInfo{}
	for _, pod := range found {
		byWorkload[pod.Workload] = append(byWorkload[pod.Workload], pod)
	}
	acted := m.removeUnwanted(ctx, p, found, desired, buildErrs)
	owned, secretsErr := m.eng.ListSecrets(ctx)
	if secretsErr == nil {
		m.createSecrets(ctx, p, desired, owned)
	}
	for i := range desired {
		if m.converge(ctx, p, &desired[i], byWorkload[desired[i].Name]) {
			acted = true
		}
	}
	if secretsErr == nil {
		m.removeUnusedSecrets(ctx, desired, buildErrs, owned)
	} else {
		m.log.Warn("list podman secrets", zap.Error(secretsErr))
	}
	if acted { // observe the result of what was done
		if again, err := m.eng.ListPods(ctx); err == nil {
			found = again
		} else {
			m.log.Debug("list pods after reconcile", zap.Error(err))
		}
	}
	m.publish(p, desired, buildErrs, found)
	return joinWorkloadErrors(p.errs)
}

// removeUnwanted removes every managed pod whose workload is not configured
// any more. Pods of workloads whose new specification is invalid are kept.
func (m *Manager) removeUnwanted(ctx context.Context, p *pass, found []podInfo, desired []Manifest, buildErrs map[string]error) bool {
	want := map[string]bool{}
	for _, mf := range desired {
		want[mf.Name] = true
	}
	for name := range buildErrs {
		want[name] = true
	}
	acted := false
	for _, pod := range found {
		if want[pod.Workload] {
			continue
		}
		acted = true
		if err := m.eng.RemovePod(ctx, pod.ID); err != nil {
			m.log.Warn("remove pod of unconfigured workload", zap.String("pod", pod.Name), zap.Error(err))
			continue
		}
		p.info(ReasonRemoved, "workload %q removed (pod %s)", pod.Workload, pod.Name)
	}
	return acted
}

// converge makes one workload's pod match its manifest: play it when missing,
// replace it when its hash differs or it is incomplete, start it when it died.
// It reports whether it changed anything.
func (m *Manager) converge(ctx context.Context, p *pass, mf *Manifest, pods []podInfo) bool {
	var current *podInfo
	var stale []podInfo
	for i := range pods {
		if current == nil && pods[i].Hash == mf.Hash && pods[i].Name == mf.Name && complete(pods[i], mf) {
			current = &pods[i]
			continue
		}
		stale = append(stale, pods[i])
	}
	for _, pod := range stale {
		if err := m.eng.RemovePod(ctx, pod.ID); err != nil {
			p.errs[mf.Name] = fmt.Errorf("replace pod %s: %w", pod.Name, err)
			return true
		}
	}
	if current == nil {
		if p.errs[mf.Name] != nil { // e.g. its podman secrets could not be made
			return len(stale) > 0
		}
		if err := m.vols.Ensure(mf.Name); err != nil {
			p.errs[mf.Name] = err
			return len(stale) > 0
		}
		authFile, err := m.files.Materialise(mf)
		if err != nil {
			p.errs[mf.Name] = err
			return len(stale) > 0
		}
		if err := m.eng.Play(ctx, mf.YAML, authFile); err != nil {
			p.errs[mf.Name] = err
			return true
		}
		if len(stale) > 0 {
			p.info(ReasonReplaced, "workload %q replaced: manifest %s", mf.Name, mf.Hash)
		} else {
			p.info(ReasonDeployed, "workload %q deployed: manifest %s", mf.Name, mf.Hash)
		}
		return true
	}
	state := observedState(*current, mf.Name, mf)
	if !needsStart(state, mf.RestartPolicy) {
		return false
	}
	if err := m.vols.Ensure(mf.Name); err != nil {
		p.errs[mf.Name] = err
		return false
	}
	if _, err := m.files.Materialise(mf); err != nil {
		p.errs[mf.Name] = err
		return false
	}
	if err := m.eng.StartPod(ctx, current.ID); err != nil {
		p.errs[mf.Name] = err
		return true
	}
	p.info(ReasonRestarted, "workload %q was %s; pod started again", mf.Name, state)
	return true
}

// complete reports whether pod has (at least) the spec's containers; a play
// that failed half-way can leave a pod without them.
func complete(pod podInfo, mf *Manifest) bool {
	n := 0
	for _, c := range pod.Containers {
		if !isInitContainer(c.Name, mf.Name, mf.InitContainers) {
			n++
		}
	}
	return n >= len(mf.Containers)
}

// joinWorkloadErrors joins per-workload errors in a stable order.
func joinWorkloadErrors(errs map[string]error) error {
	var out []error
	for _, name := range sortedKeys(errs) {
		e := errs[name]
		if !strings.HasPrefix(e.Error(), fmt.Sprintf("workload %q", name)) {
			e = fmt.Errorf("workload %q: %w", name, e)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// createSecrets creates the podman secrets the desired pods refer to and
// that do not exist yet. A failure is an error of the workloads needing the
// secret (its name only: never its content).
func (m *Manager) createSecrets(ctx context.Context, p *pass, desired []Manifest, owned []string) {
	have := map[string]bool{}
	for _, n := range owned {
		have[n] = true
	}
	for i := range desired {
		mf := &desired[i]
		for _, name := range sortedKeys(mf.secrets) {
			if have[name] {
				continue
			}
			if err := m.eng.CreateSecret(ctx, name, mf.secrets[name]); err != nil {
				p.errs[mf.Name] = err
				continue
			}
			have[name] = true
			m.log.Info("podman secret created", zap.String("workload", mf.Name), zap.String("secret", name))
		}
	}
}

// removeUnusedSecrets removes the podman secrets this worker owns that no
// desired pod refers to. Workloads whose new specification is invalid keep
// running on what they had, so while there are any, nothing is removed.
func (m *Manager) removeUnusedSecrets(ctx context.Context, desired []Manifest, buildErrs map[string]error, owned []string) {
	if len(buildErrs) > 0 {
		return
	}
	want := map[string]bool{}
	for i := range desired {
		for name := range desired[i].secrets {
			want[name] = true
		}
	}
	for _, name := range owned {
		if want[name] {
			continue
		}
		if err := m.eng.RemoveSecret(ctx, name); err != nil {
			m.log.Warn("remove unused podman secret", zap.String("secret", name), zap.Error(err))
			continue
		}
		m.log.Info("unused podman secret removed", zap.String("secret", name))
	}
}
