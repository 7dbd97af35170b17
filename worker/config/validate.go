package config

import (
	"errors"
	"fmt"
	"regexp"

	"sigs.k8s.io/yaml"
)

// MaxHeartbeatPeriodSeconds bounds configuration.heartbeat.period_seconds.
const MaxHeartbeatPeriodSeconds = 24 * 60 * 60

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate checks a message against the rules the worker relies on. Every
// error names the field, such as
// "workloads[1].data.egress[0].source: must be relative".
func (m *Message) Validate() error {
	if m.WorkloadsMonitoringInterval < 0 {
		return errors.New("workloads_monitoring_interval: must not be negative")
	}
	if p := m.Configuration.Heartbeat.PeriodSeconds; p < 0 || p > MaxHeartbeatPeriodSeconds {
		return fmt.Errorf("configuration.heartbeat.period_seconds: must be between 0 and %d", MaxHeartbeatPeriodSeconds)
	}
	if st := m.Configuration.Storage; st != nil && st.S3 != nil {
		if _, err := st.S3.Endpoint(); err != nil {
			return fmt.Errorf("configuration.storage.s3.%w", err)
		}
	}
	names := make(map[string]int, len(m.Workloads))
	for i := range m.Workloads {
		w := &m.Workloads[i]
		if prev, dup := names[w.Name]; dup {
			return fmt.Errorf("workloads[%d].name: %q is already the name of workloads[%d]", i, w.Name, prev)
		}
		names[w.Name] = i
		if err := w.validate(); err != nil {
			return fmt.Errorf("workloads[%d].%w", i, err)
		}
	}
	secrets := make(map[string]int, len(m.Secrets))
	for i, s := range m.Secrets {
		if !ValidObjectName(s.Name) {
			return fmt.Errorf("secrets[%d].name: %q is not a valid Secret name (DNS-1123 subdomain)", i, s.Name)
		}
		if prev, dup := secrets[s.Name]; dup {
			return fmt.Errorf("secrets[%d].name: %q is already the name of secrets[%d]", i, s.Name, prev)
		}
		secrets[s.Name] = i
		if _, err := s.Values(); err != nil {
			return fmt.Errorf("secrets[%d].data (secret %q): %w", i, s.Name, err)
		}
	}
	return nil
}

// validate checks one workload; errors start with the field name relative
// to the workload.
func (w *Workload) validate() error {
	if len(w.Name) > 63 || !dns1123Label.MatchString(w.Name) {
		return fmt.Errorf("name: %q is not a DNS-1123 label (lower case letters, digits and '-', at most 63, starting and ending with a letter or digit)", w.Name)
	}
	if w.Specification == "" {
		return errors.New("specification: must not be empty")
	}
	var spec map[string]any
	if err := yaml.Unmarshal([]byte(w.Specification), &spec); err != nil || spec == nil {
		return errors.New("specification: must be the YAML of a pod specification (a mapping)")
	}
	for j, cm := range w.ConfigMaps {
		if cm == "" {
			return fmt.Errorf("configmaps[%d]: must not be empty", j)
		}
	}
	if w.Data != nil {
		if err := w.Data.validate(); err != nil {
			return err
		}
	}
	_, err := w.EgressSettings()
	return err
}

// validate checks the data paths of one workload: each path well formed,
// each local directory named once per direction, no ingress target
// equal to, inside or containing an egress source, and ingress targets
// not nested in each other (two downloads would write the same files).
func (d *Data) validate() error {
	for _, dir := range []struct {
		name string
		list []DataPath
	}{{"egress", d.Egress}, {"ingress", d.Ingress}} {
		for j, p := range dir.list {
			if err := checkPath(p.Source); err != nil {
				return fmt.Errorf("data.%s[%d].source: %w", dir.name, j, err)
			}
			if err := checkPath(p.Target); err != nil {
				return fmt.Errorf("data.%s[%d].target: %w", dir.name, j, err)
			}
		}
	}
	for j := range d.Egress {
		src := CleanPath(d.Egress[j].Source)
		for k := 0; k < j; k++ {
			if CleanPath(d.Egress[k].Source) == src {
				return fmt.Errorf("data.egress[%d].source: %q is already the source of data.egress[%d]", j, src, k)
			}
		}
	}
	for j := range d.Ingress {
		tgt := CleanPath(d.Ingress[j].Target)
		for k := 0; k < j; k++ {
			if other := CleanPath(d.Ingress[k].Target); overlaps(tgt, other) {
				return fmt.Errorf("data.ingress[%d].target: %q overlaps data.ingress[%d].target %q", j, tgt, k, other)
			}
		}
		for k := range d.Egress {
			if src := CleanPath(d.Egress[k].Source); overlaps(tgt, src) {
				return fmt.Errorf("data.ingress[%d].target: %q overlaps data.egress[%d].source %q (downloads would be uploaded again)", j, tgt, k, src)
			}
		}
	}
	return nil
}
