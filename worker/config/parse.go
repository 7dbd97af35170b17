package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// MaxMessageBytes bounds the size of a configuration message.
const MaxMessageBytes = 4 << 20

// Parse decodes a configuration message, normalises it (cleaned data paths,
// empty collections dropped) and validates it. Unknown fields are ignored.
// A returned error names the offending field and never carries secret
// values.
func Parse(content []byte) (*Message, error) {
	if len(content) > MaxMessageBytes {
		return nil, fmt.Errorf("message is %d bytes, more than the %d allowed", len(content), MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(content))
	var m Message
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode JSON: trailing data after the message")
	}
	if err := m.normalize(); err != nil {
		return nil, err
	}
	// Validate the paths as sent (a ".." must not be cleaned away unseen),
	// then store them cleaned.
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.cleanPaths()
	m.sortUnordered()
	return &m, nil
}

// Canonical returns the message's canonical JSON: the same bytes for two
// messages that mean the same configuration. It is also the persisted form.
func (m *Message) Canonical() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return b, nil
}

// Equal reports whether two messages carry the same configuration,
// version included.
func (m *Message) Equal(o *Message) bool {
	if m == nil || o == nil {
		return m == o
	}
	a, errA := m.Canonical()
	b, errB := o.Canonical()
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// normalize puts the message in canonical form before validation: empty
// maps and lists dropped, secret data compacted.
func (m *Message) normalize() error {
	if len(m.Workloads) == 0 {
		m.Workloads = nil
	}
	if len(m.Secrets) == 0 {
		m.Secrets = nil
	}
	if m.Configuration.Storage != nil && m.Configuration.Storage.S3 == nil {
		// "storage": {} carries no storage at all.
		m.Configuration.Storage = nil
	}
	for i := range m.Workloads {
		w := &m.Workloads[i]
		if len(w.Labels) == 0 {
			w.Labels = nil
		}
		if len(w.Annotations) == 0 {
			w.Annotations = nil
		}
		if len(w.ConfigMaps) == 0 {
			w.ConfigMaps = nil
		}
		if w.ImageRegistries != nil && w.ImageRegistries.AuthFile == "" {
			w.ImageRegistries = nil
		}
		if w.Data != nil {
			if len(w.Data.Egress) == 0 {
				w.Data.Egress = nil
			}
			if len(w.Data.Ingress) == 0 {
				w.Data.Ingress = nil
			}
			if w.Data.Egress == nil && w.Data.Ingress == nil {
				w.Data = nil
			}
		}
	}
	for i := range m.Secrets {
		s := &m.Secrets[i]
		if len(s.Data) == 0 || string(s.Data) == "null" {
			s.Data = nil
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, s.Data); err != nil {
			return fmt.Errorf("secrets[%d].data: %w", i, err)
		}
		s.Data = buf.Bytes()
	}
	return nil
}

// cleanPaths stores every data path in its cleaned form.
func (m *Message) cleanPaths() {
	for i := range m.Workloads {
		d := m.Workloads[i].Data
		if d == nil {
			continue
		}
		for _, list := range [][]DataPath{d.Egress, d.Ingress} {
			for j := range list {
				list[j].Source = CleanPath(list[j].Source)
				list[j].Target = CleanPath(list[j].Target)
			}
		}
	}
}

// sortUnordered sorts the lists the control plane builds from maps (the
// secrets, each workload's configmaps): their order means nothing and must
// not make two resends of one configuration differ.
func (m *Message) sortUnordered() {
	sort.SliceStable(m.Secrets, func(i, j int) bool { return m.Secrets[i].Name < m.Secrets[j].Name })
	for i := range m.Workloads {
		sort.Strings(m.Workloads[i].ConfigMaps)
	}
}
