package podman

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// manifestStore keeps one rendered manifest per workload as <dir>/<name>.yaml
// (mode 0600, written atomically). It writes only when the content changed, so
// re-applying an unchanged configuration costs no disk write.
type manifestStore struct {
	dir string
}

const manifestExt = ".yaml"

func (s manifestStore) path(name string) string { return filepath.Join(s.dir, name+manifestExt) }

// Save stores m unless the file already holds exactly m.YAML; it reports
// whether it wrote.
func (s manifestStore) Save(m Manifest) (bool, error) {
	old, err := os.ReadFile(s.path(m.Name))
	if err == nil && bytes.Equal(old, m.YAML) {
		return false, nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return false, fmt.Errorf("save manifest %s: %w", m.Name, err)
	}
	if err := writeFileAtomic(s.path(m.Name), m.YAML, 0o600); err != nil {
		return false, fmt.Errorf("save manifest %s: %w", m.Name, err)
	}
	return true, nil
}

// Names lists the workloads that have a stored manifest.
func (s manifestStore) Names() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list manifests in %s: %w", s.dir, err)
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), manifestExt)
		if ok && e.Type().IsRegular() && validateName(name) == nil {
			names = append(names, name)
		}
	}
	return names, nil
}

// Remove deletes the manifest of workload name; a missing file is not an error.
func (s manifestStore) Remove(name string) error {
	if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove manifest %s: %w", name, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see either the old or the new content.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
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
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the rename durable; best effort
		d.Close()
	}
	return nil
}
