package datasync

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

func validate(m *Mapping) error {
	if m.ID == "" {
		return errors.New("mapping without id")
	}
	if m.Direction != Egress && m.Direction != Ingress {
		return fmt.Errorf("mapping %s: direction %q", m.ID, m.Direction)
	}
	if !filepath.IsAbs(m.Root) || !filepath.IsAbs(m.LocalDir) {
		return fmt.Errorf("mapping %s: root and local dir must be absolute", m.ID)
	}
	m.Root, m.LocalDir = filepath.Clean(m.Root), filepath.Clean(m.LocalDir)
	if rel, err := filepath.Rel(m.Root, m.LocalDir); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("mapping %s: %s is outside %s", m.ID, m.LocalDir, m.Root)
	}
	if m.Bucket == "" {
		return fmt.Errorf("mapping %s: no bucket", m.ID)
	}
	switch m.Order {
	case KeyOrder, OldestFirst, NewestFirst:
	default:
		return fmt.Errorf("mapping %s: order %q: want %q or %q", m.ID, m.Order, OldestFirst, NewestFirst)
	}
	if r := m.Retention; r.KeepBytes < 0 || r.KeepAge < 0 {
		return fmt.Errorf("mapping %s: negative retention limit", m.ID)
	}
	if m.Direction == Ingress && (m.Retention.Active() || m.Order != KeyOrder) {
		return fmt.Errorf("mapping %s: retention and order apply to egress only", m.ID)
	}
	m.Prefix = strings.Trim(m.Prefix, "/")
	return nil
}

func sameEndpoint(a, b *Endpoint) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Host == b.Host && a.Port == b.Port && a.Secure == b.Secure && a.Region == b.Region &&
		a.AccessKey == b.AccessKey && a.SecretKey == b.SecretKey && string(a.CAPEM) == string(b.CAPEM)
}

type endpointString struct{ ep *Endpoint }

func (s endpointString) String() string {
	if s.ep == nil {
		return "none (sync off)"
	}
	return s.ep.String()
}
