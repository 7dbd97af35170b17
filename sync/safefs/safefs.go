// Package safefs writes files atomically inside a directory and never outside
// of it: every path is relative, no path component may be a symlink, and all
// operations go through an os.Root so a symlink swapped in later cannot lead
// out either.
package safefs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
)

// ErrUnsafe is wrapped by refusals to write through a symlink or a non-directory.
var ErrUnsafe = errors.New("unsafe path")

// Dir is a directory files are written into.
type Dir struct {
	root *os.Root
	path string

	mu    sync.Mutex
	dirty map[string]bool // directories with renames not yet synced: whether SyncFS covers each

	fs fsSync  // SyncFS (group.go)
	at *atDirs // the Linux fast path (at_linux.go), nil where unavailable
}

// Open opens dir, which must be root or lie inside it with no symlinked
// component between them. A missing dir is created when create is true.
func Open(root, dir string, create bool) (*Dir, error) {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("%w: %s is not inside %s", ErrUnsafe, dir, root)
	}
	if create && rel == "." {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if rel != "." {
		if err := checkComponents(r, filepath.ToSlash(rel), true); err != nil {
			return nil, err
		}
		if create {
			if err := r.MkdirAll(rel, 0o755); err != nil {
				return nil, fmt.Errorf("create %s: %w", dir, err)
			}
		}
	}
	d, err := r.OpenRoot(rel)
	if err != nil {
		return nil, err
	}
	return &Dir{root: d, path: dir, at: openAt(d)}, nil
}

// Close releases the directory.
func (d *Dir) Close() error {
	d.closeSync()
	if d.at != nil {
		d.at.close()
	}
	return d.root.Close()
}

// Root is the directory as an os.Root, for reads confined to it.
func (d *Dir) Root() *os.Root { return d.root }

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// checkComponents refuses a relative path whose existing components (all of
// them when last is true, else all but the final one) are symlinks or not
// directories. Missing components are fine: they will be created.
func checkComponents(r *os.Root, rel string, last bool) error {
	_, err := checkExisting(r, rel, last)
	return err
}

// checkExisting is checkComponents that also reports whether every checked
// component exists (then nothing needs creating).
func checkExisting(r *os.Root, rel string, last bool) (all bool, err error) {
	parts := strings.Split(rel, "/")
	if !last {
		parts = parts[:len(parts)-1]
	}
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("check %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return false, fmt.Errorf("%w: %s is a symlink", ErrUnsafe, p)
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("%w: %s is not a directory", ErrUnsafe, p)
		}
	}
	return true, nil
}

// Existing reports the size of the regular file at rel, 0 when there is none.
// It refuses symlinked parents and a target that is not a regular file or symlink.
func (d *Dir) Existing(rel string) (int64, error) {
	if d.at != nil {
		return d.at.existing(rel)
	}
	if err := checkComponents(d.root, rel, false); err != nil {
		return 0, err
	}
	fi, err := d.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if fi.IsDir() {
		return 0, fmt.Errorf("%w: %s is a directory", ErrUnsafe, rel)
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	return 0, nil // a symlink or other node is replaced, never followed
}

// Lstat describes the file at rel without following a final symlink. On
// the fast path a symlinked parent is refused (ErrUnsafe) rather than
// followed.
func (d *Dir) Lstat(rel string) (os.FileInfo, error) {
	if d.at != nil {
		return d.at.lstat(rel)
	}
	return d.root.Lstat(rel)
}

// Temp is a file being written; Commit puts it in place.
type Temp struct {
	*os.File
	d    *Dir
	rel  string // final name
	tmp  string // temporary name, beside it ("": none yet, an unnamed file)
	onFS bool   // on the file system Dir.SyncFS syncs

	parent *dirHandle  // its open directory, on the fast path (open until placed)
	placed os.FileInfo // the file once placed, where known
}

// Create starts writing rel: it makes the parent directories and a temporary
// file beside the final name.
func (d *Dir) Create(rel string) (*Temp, error) {
	if d.at != nil {
		d.prepareSync() // SyncFS's descriptor must predate the file
		return d.at.create(d, rel)
	}
	exist, err := checkExisting(d.root, rel, false)
	if err != nil {
		return nil, err
	}
	dir := path.Dir(rel)
	if dir != "." && !exist { // the common case, directories in place, costs no MkdirAll
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create directory %s: %w", dir, err)
		}
		// MkdirAll follows symlinks inside the root: check again.
		if err := checkComponents(d.root, rel, false); err != nil {
			return nil, err
		}
	}
	d.prepareSync() // SyncFS's descriptor must predate the file
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(dir, keys.TempPrefix+hex.EncodeToString(rnd[:]))
	f, err := d.root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", rel, err)
	}
	t := &Temp{File: f, d: d, rel: rel, tmp: tmp}
	if d.fs.ok {
		dev, err := deviceOf(f)
		t.onFS = err == nil && dev == d.fs.dev
	}
	return t, nil
}

// Commit flushes the file to disk, sets its mtime and renames it to its final
// name. The rename is durable once SyncDirs returned.
func (t *Temp) Commit(mtime time.Time) error {
	if err := t.finish(mtime, true); err != nil {
		return err
	}
	return t.Place()
}

// SyncDirs makes the renames of committed files durable: it syncs every
// directory that received one since the last call. Callers record a file as
// written only after this.
func (d *Dir) SyncDirs() error {
	d.mu.Lock()
	dirty := d.dirty
	d.dirty = nil
	d.mu.Unlock()
	if len(dirty) > 1 && allCovered(dirty) {
		// One syncfs instead of a fsync per directory.
		return d.SyncFS()
	}
	for p := range dirty {
		f, err := d.root.Open(p)
		if err != nil {
			return fmt.Errorf("sync directory %s: %w", p, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync directory %s: %w", p, err)
		}
	}
	return nil
}

// allCovered reports whether SyncFS covers every directory of dirty.
func allCovered(dirty map[string]bool) bool {
	for _, covered := range dirty {
		if !covered {
			return false
		}
	}
	return true
}

// Abort closes and removes the temporary file.
func (t *Temp) Abort() {
	if t.parent != nil {
		t.abortAt()
		return
	}
	_ = t.File.Close()
	_ = t.d.root.Remove(t.tmp)
}

// Sweep removes temporary files left by a crash anywhere under the directory
// and returns how many it removed.
func (d *Dir) Sweep() (removed int, err error) {
	err = d.walkFiles(func(p string, de fs.DirEntry) {
		if strings.HasPrefix(de.Name(), keys.TempPrefix) && d.root.Remove(p) == nil {
			removed++
		}
	})
	return removed, err
}

// Usage is the bytes the regular files under the directory hold.
func (d *Dir) Usage() (used int64, err error) {
	err = d.walkFiles(func(_ string, de fs.DirEntry) {
		if fi, err := de.Info(); err == nil {
			used += fi.Size()
		}
	})
	return used, err
}

// walkFiles calls fn for every regular file under the directory, without
// following symlinks.
func (d *Dir) walkFiles(fn func(p string, de fs.DirEntry)) error {
	return fs.WalkDir(d.root.FS(), ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return err
			}
			return nil // unreadable subtree: skip it
		}
		if de.Type().IsRegular() {
			fn(p, de)
		}
		return nil
	})
}

// futimens sets the access and modification times of an open file.
func futimens(f *os.File, t time.Time) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// utimensat(fd, NULL, ts, 0) is futimens(3); x/sys has no wrapper
		// that avoids /proc.
		_, _, errno := syscall.Syscall6(unix.SYS_UTIMENSAT, fd, 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if errno != 0 {
			serr = errno
		}
	})
	runtime.KeepAlive(ts)
	if err != nil {
		return err
	}
	return serr
}
