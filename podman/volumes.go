package podman

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// volumes manages the host directories backing each workload's /export.
type volumes struct {
	dir string
}

// Ensure creates the volume directory of workload name (0755) so that it
// exists, owned by the worker, before the pod starts.
func (v volumes) Ensure(name string) error {
	if err := os.MkdirAll(VolumeDir(v.dir, name), 0o755); err != nil {
		return fmt.Errorf("create volume directory of %s: %w", name, err)
	}
	return nil
}

// RemoveAll deletes every workload volume directory under the volumes dir.
// Only entries named like a workload (DNS-1123 labels) are touched.
func (v volumes) RemoveAll() error {
	entries, err := os.ReadDir(v.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list volume directories in %s: %w", v.dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || validateName(e.Name()) != nil {
			continue
		}
		if err := os.RemoveAll(VolumeDir(v.dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove volume directory of %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
