package datasync

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Configure replaces the endpoint and the set of mappings. A nil endpoint
// turns sync off (mappings stay listed in Status but no pass runs). Mappings
// that keep their ID keep their status and journal; the journal of mappings
// no longer named is dropped (unless Options.KeepUnknownMappings). Calling it
// again with the same arguments costs next to nothing. A new mapping, and
// every mapping when the endpoint or its credentials changed, gets its next
// pass from Run at once (after the pass in flight, if any) rather than at
// the next interval.
func (e *Engine) Configure(ep *Endpoint, ms []Mapping) error {
	ms = slices.Clone(ms)
	seen := map[string]bool{}
	for i := range ms {
		m := &ms[i]
		if err := validate(m); err != nil {
			return err
		}
		if seen[m.ID] {
			return fmt.Errorf("mapping %s: duplicate id", m.ID)
		}
		seen[m.ID] = true
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errClosed
	}
	endpointChanged := !sameEndpoint(e.ep, ep)
	if endpointChanged {
		var be Backend
		if ep != nil {
			var err error
			be, err = e.newBackend(ep)
			if err != nil {
				e.mu.Unlock()
				return err
			}
			cp := *ep
			cp.CAPEM = slices.Clone(ep.CAPEM)
			ep = &cp
		}
		e.ep, e.backend = ep, be
		e.log.Info("sync endpoint configured", zap.Stringer("endpoint", endpointString{ep}))
	}
	var removed []*mapping
	var kept []*mapping
	next := make(map[string]*mapping, len(ms))
	for _, m := range ms {
		if old := e.maps[m.ID]; old != nil {
			old.conf.Store(&m)
			next[m.ID] = old
			kept = append(kept, old)
			continue
		}
		mp := e.newMapping(m, e.runCtx)
		next[m.ID] = mp
		kept = append(kept, mp)
	}
	for id, old := range e.maps {
		if next[id] == nil {
			old.cancel()
			removed = append(removed, old)
		}
	}
	e.maps = next
	e.mu.Unlock()
	e.updateWatchers() // before the loops hear of it: a new mapping is watched before its first pass
	for _, mp := range kept {
		mp.send(msgConfigure{prompt: endpointChanged})
	}
	e.reconfigure()

	// Wait for removed mappings' passes to stop before forgetting them.
	for _, old := range removed {
		old.close()
		e.log.Info("sync mapping removed", zap.String("mapping", old.id))
	}
	if e.opts.KeepUnknownMappings {
		return nil
	}
	known, err := e.jr.Mappings()
	if err != nil {
		return fmt.Errorf("list journal: %w", err)
	}
	for _, id := range known {
		if !seen[id] {
			if err := e.jr.Drop(id); err != nil {
				return fmt.Errorf("drop journal of %s: %w", id, err)
			}
		}
	}
	return nil
}

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
