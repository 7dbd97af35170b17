package podman

import (
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// publish turns a pass's observations into statuses and events.
func (m *Manager) publish(p *pass, desired []Manifest, buildErrs map[string]error, found []podInfo) {
	byName := map[string]podInfo{}
	for _, pod := range found {
		byName[pod.Workload] = pod
	}
	manifests := map[string]*Manifest{}
	for i := range desired {
		manifests[desired[i].Name] = &desired[i]
	}
	var statuses []WorkloadStatus
	for _, name := range m.order(desired, buildErrs) {
		st := WorkloadStatus{Name: name, State: Deploying}
		mf := manifests[name]
		if pod, ok := byName[name]; ok {
			st.State = observedState(pod, name, mf)
			st.PodID, st.ManifestHash = pod.ID, pod.Hash
		} else if p.errs[name] != nil {
			st.State = Crashed // nothing runs and the last attempt failed
		}
		if mf == nil && st.PodID == "" {
			st.State = Crashed // invalid specification and nothing running
		}
		if e := p.errs[name]; e != nil {
			st.Message = e.Error()
			if st.State == Deploying {
				st.State = Crashed // the deployment failed; retried next pass
			}
		}
		statuses = append(statuses, st)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range p.events {
		m.log.Info(e.Message, zap.String("reason", e.Reason))
		m.record(e)
	}
	m.setStatuses(statuses)
}

// publishUnreachable records that podman could not be asked: every workload
// keeps its last known state and carries the error.
func (m *Manager) publishUnreachable(desired []Manifest, buildErrs map[string]error, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := map[string]WorkloadStatus{}
	for _, s := range m.statuses {
		prev[s.Name] = s
	}
	var statuses []WorkloadStatus
	for _, name := range m.order(desired, buildErrs) {
		st, ok := prev[name]
		if !ok {
			st = WorkloadStatus{Name: name, State: Deploying}
		}
		st.Message = err.Error()
		if be := buildErrs[name]; be != nil {
			st.Message = be.Error()
		}
		statuses = append(statuses, st)
	}
	m.setStatuses(statuses)
}

// publishObserved reports the managed pods found before the first Apply.
func (m *Manager) publishObserved(found []podInfo) {
	var statuses []WorkloadStatus
	for _, pod := range found {
		if pod.Workload == "" {
			continue
		}
		statuses = append(statuses, WorkloadStatus{
			Name: pod.Workload, State: observedState(pod, pod.Workload, nil), PodID: pod.ID, ManifestHash: pod.Hash,
		})
	}
	sort.Slice(statuses, func(i, j int) bool { return statuses[i].Name < statuses[j].Name })
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setStatuses(statuses)
}

// setStatuses stores statuses and records a warn event whenever a workload's
// error message changes, so a persistent error is reported once, not on
// every pass. Callers hold m.mu.
func (m *Manager) setStatuses(statuses []WorkloadStatus) {
	seen := map[string]bool{}
	for _, st := range statuses {
		seen[st.Name] = true
		if st.Message == "" {
			delete(m.warned, st.Name)
			continue
		}
		if m.warned[st.Name] == st.Message {
			continue
		}
		m.warned[st.Name] = st.Message
		msg := st.Message
		if !strings.HasPrefix(msg, fmt.Sprintf("workload %q", st.Name)) {
			msg = fmt.Sprintf("workload %q: %s", st.Name, msg)
		}
		m.log.Warn(msg, zap.String("reason", ReasonFailed))
		m.record(Event{Reason: ReasonFailed, Message: msg, Type: "warn"})
	}
	for name := range m.warned {
		if !seen[name] {
			delete(m.warned, name)
		}
	}
	m.statuses = statuses
}

// order lists workload names in configuration order: the valid ones as
// applied, then the invalid ones by name.
func (m *Manager) order(desired []Manifest, buildErrs map[string]error) []string {
	names := make([]string, 0, len(desired)+len(buildErrs))
	for _, mf := range desired {
		names = append(names, mf.Name)
	}
	for _, name := range sortedKeys(buildErrs) {
		if _, dup := indexOf(desired, name); !dup {
			names = append(names, name)
		}
	}
	return names
}

func indexOf(ms []Manifest, name string) (int, bool) {
	for i := range ms {
		if ms[i].Name == name {
			return i, true
		}
	}
	return -1, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
