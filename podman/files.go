package podman

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// authFileName is a workload's registry auth file under its files dir.
const authFileName = "auth.json"

// digestKeyFile holds the key of the digests that name podman secrets.
const digestKeyFile = ".digest-key"

// filesStore keeps the workloads' own files under dir (0700):
// <dir>/<workload>/auth.json (0600) and <dir>/<workload>/volumes/<volume>/
// (Secret and ConfigMap volumes, mounted read-only into the pod). Files are
// written only when their content or mode differs, atomically.
type filesStore struct {
	dir string
}

// digestKey returns the device's digest key, creating it on first use.
func (s filesStore) digestKey() ([]byte, error) {
	p := filepath.Join(s.dir, digestKeyFile)
	key, err := os.ReadFile(p)
	if err == nil && len(key) == 32 {
		return key, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read digest key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make digest key: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("make digest key: %w", err)
	}
	if err := writeFileAtomic(p, key, 0o600); err != nil {
		return nil, fmt.Errorf("make digest key: %w", err)
	}
	return key, nil
}

// authPath is the auth file of workload name.
func (s filesStore) authPath(name string) string {
	return filepath.Join(WorkloadFilesDir(s.dir, name), authFileName)
}

// Materialise writes mf's auth file (or removes a stale one) and its
// Secret and ConfigMap volumes, removing files and volumes it no longer
// has. It returns the auth file's path, "" when the workload has none.
func (s filesStore) Materialise(mf *Manifest) (string, error) {
	wdir := WorkloadFilesDir(s.dir, mf.Name)
	if len(mf.authFile) == 0 && len(mf.volumes) == 0 {
		if err := os.RemoveAll(wdir); err != nil {
			return "", fmt.Errorf("remove files of %s: %w", mf.Name, err)
		}
		return "", nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", s.dir, err)
	}
	if err := os.MkdirAll(wdir, 0o700); err != nil {
		return "", fmt.Errorf("create files directory of %s: %w", mf.Name, err)
	}
	authPath := ""
	if len(mf.authFile) > 0 {
		authPath = s.authPath(mf.Name)
		if err := writeIfChanged(authPath, mf.authFile, 0o600); err != nil {
			return "", fmt.Errorf("store the registry auth file of %s: %w", mf.Name, err)
		}
	} else if err := os.Remove(s.authPath(mf.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("remove the registry auth file of %s: %w", mf.Name, err)
	}
	vdir := filepath.Join(wdir, "volumes")
	want := map[string]bool{}
	for _, v := range mf.volumes {
		want[filepath.Base(v.Dir)] = true
		if err := syncVolume(v); err != nil {
			return "", fmt.Errorf("write volume %q of %s: %w", v.Volume, mf.Name, err)
		}
	}
	entries, err := os.ReadDir(vdir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("list volumes of %s: %w", mf.Name, err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			if err := os.RemoveAll(filepath.Join(vdir, e.Name())); err != nil {
				return "", fmt.Errorf("remove volume %q of %s: %w", e.Name(), mf.Name, err)
			}
		}
	}
	return authPath, nil
}

// syncVolume makes v.Dir hold exactly v.Files.
func syncVolume(v volumeFiles) error {
	if err := os.MkdirAll(v.Dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(v.Dir, 0o755); err != nil {
		return err
	}
	for rel, f := range v.Files {
		p := filepath.Join(v.Dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeIfChanged(p, f.Data, f.Mode); err != nil {
			return err
		}
	}
	// Remove what the volume no longer holds (deepest first).
	var stale []string
	err := filepath.WalkDir(v.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == v.Dir {
			return err
		}
		rel, _ := filepath.Rel(v.Dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			for name := range v.Files {
				if len(name) > len(rel) && name[:len(rel)+1] == rel+"/" {
					return nil
				}
			}
		} else if _, ok := v.Files[rel]; ok && d.Type().IsRegular() {
			return nil
		}
		stale = append(stale, p)
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(stale) - 1; i >= 0; i-- {
		if err := os.RemoveAll(stale[i]); err != nil {
			return err
		}
	}
	return nil
}

// writeIfChanged writes data to path atomically unless path already holds
// it with mode perm.
func writeIfChanged(path string, data []byte, perm os.FileMode) error {
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() && st.Mode().Perm() == perm {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			return nil
		}
	}
	return writeFileAtomic(path, data, perm)
}

// Prune removes the files of every workload not in keep.
func (s filesStore) Prune(keep map[string]bool) error {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", s.dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || validateName(e.Name()) != nil || keep[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove files of %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
