// Package syncstatus lets a person at the device, and node_exporter's
// textfile collector, see the sync engine's state without the control
// plane. The worker publishes snapshots of datasync.Engine.Status: a JSON
// file under its state directory (read by "device-worker status") and,
// when asked, a Prometheus text file. Both are replaced atomically (temp
// file, fsync, rename), and only when the status changed or once a
// minute, so that a reader can tell a live worker from a stopped one.
//
// Readers treat each mapping as a JSON object, not as a Go struct: a field
// added to datasync.MappingStatus is printed and exported without changing
// this package (Print and Metrics name the known ones better).
package syncstatus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
)

// FileName is the snapshot's name in the worker's sync state directory
// (<data dir>/sync).
const FileName = "status.json"

// Refresh is how often an unchanged snapshot is written again.
const Refresh = time.Minute

// Snapshot is what the worker writes.
type Snapshot struct {
	Written  time.Time                `json:"written"`
	Worker   string                   `json:"worker,omitempty"` // the worker's version
	Mappings []datasync.MappingStatus `json:"mappings"`
}

// Publisher writes snapshots of Status.
type Publisher struct {
	Path        string // the snapshot file
	MetricsFile string // the Prometheus text file; "" writes none
	Worker      string // the worker's version, written into the snapshot
	Status      func() []datasync.MappingStatus
	Log         *zap.Logger

	last    []byte    // the mappings last written
	written time.Time // when
}

// Run publishes every interval until ctx ends, then once more.
func (p *Publisher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.publishLogged()
		select {
		case <-ctx.Done():
			p.publishLogged()
			return
		case <-t.C:
		}
	}
}

func (p *Publisher) publishLogged() {
	if err := p.Publish(time.Now()); err != nil && p.Log != nil {
		p.Log.Warn("cannot write the sync status files", zap.Error(err))
	}
}

// Publish writes the snapshot (and the metrics file) if the status changed
// since the last one or Refresh has passed.
func (p *Publisher) Publish(now time.Time) error {
	ms := p.Status()
	if ms == nil {
		ms = []datasync.MappingStatus{}
	}
	cur, err := json.Marshal(ms)
	if err != nil {
		return err
	}
	if bytes.Equal(cur, p.last) && now.Sub(p.written) < Refresh {
		return nil
	}
	snap, err := json.MarshalIndent(Snapshot{Written: now.UTC(), Worker: p.Worker, Mappings: ms}, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteAtomic(p.Path, append(snap, '\n'), 0o644); err != nil {
		return err
	}
	if p.MetricsFile != "" {
		v, err := Parse(snap)
		if err != nil {
			return err
		}
		if err := WriteAtomic(p.MetricsFile, Metrics(v), 0o644); err != nil {
			return err
		}
	}
	p.last, p.written = cur, now
	return nil
}

// WriteAtomic replaces path with data: a reader sees the old file or the
// new one, never a part (node_exporter's textfile collector asks for this).
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// View is a snapshot as read back: each mapping a JSON object, with its
// numbers as json.Number.
type View struct {
	Written  time.Time        `json:"written"`
	Worker   string           `json:"worker"`
	Mappings []map[string]any `json:"mappings"`
}

// Parse reads a snapshot.
func Parse(data []byte) (View, error) {
	var v View
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return View{}, fmt.Errorf("sync status: %w", err)
	}
	for _, m := range v.Mappings {
		flatten(m)
	}
	return v, nil
}

// flatten lifts the fields of a nested object into m, named parent_field
// ("ingress": {"mode": "poll"} becomes "ingress_mode": "poll"), so that
// the table and the metrics see plain values.
func flatten(m map[string]any) {
	for k, x := range m {
		if sub, ok := x.(map[string]any); ok {
			delete(m, k)
			for sk, sx := range sub {
				m[k+"_"+sk] = sx
			}
			flatten(m)
			return
		}
	}
}

// Read reads the snapshot at path.
func Read(path string) (View, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return View{}, err
	}
	return Parse(data)
}
