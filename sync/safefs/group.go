package safefs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sync"
	"time"
)

// Writing many small files durably one fsync at a time costs a journal
// commit and a disk cache flush per file. A Dir can instead make a group of
// sealed temporary files durable with one syncfs(2) of its file system
// (SyncFS) before they are renamed (Place): the same ordering as
// fsync-then-rename, for a whole group at once.
//
// syncfs reports a write error only to a descriptor opened before it
// happened, and reports it once. So the descriptor is opened before the
// first temporary file is created, and the first error is kept: every later
// SyncFS of the Dir fails with it, whoever consumed the report.

// ErrNoSyncFS is returned by SyncFS where syncfs(2) cannot be trusted to
// report write errors (not Linux, or Linux before 5.8).
var ErrNoSyncFS = errors.New("syncfs does not report write errors here")

// fsSync is the descriptor SyncFS syncs through and what it found.
type fsSync struct {
	once sync.Once
	f    *os.File // the directory, opened before any temporary file
	dev  uint64   // its file system
	ok   bool     // syncfs usable

	mu  sync.Mutex // serialises syncs, guards err
	err error      // the first failure: sticky
}

// prepareSync opens the descriptor SyncFS uses, once, before the first
// temporary file is created.
func (d *Dir) prepareSync() {
	d.fs.once.Do(func() {
		if !syncfsReportsErrors() {
			return
		}
		f, err := d.root.Open(".")
		if err != nil {
			return // SyncFS then reports ErrNoSyncFS: callers fsync each file
		}
		dev, err := deviceOf(f)
		if err != nil {
			f.Close()
			return
		}
		d.fs.f, d.fs.dev, d.fs.ok = f, dev, true
	})
}

// CanSyncFS reports whether SyncFS may be used: temporary files for which
// OnSyncFS is true can then be made durable by it.
func (d *Dir) CanSyncFS() bool {
	d.prepareSync()
	return d.fs.ok
}

// SyncFS makes everything written on the directory's file system durable
// and reports any write error there since the first Create: then, and for
// every later call, it fails. Files on other file systems (a mount below
// the directory) are not covered: see Temp.OnSyncFS.
func (d *Dir) SyncFS() error {
	d.prepareSync()
	if !d.fs.ok {
		return ErrNoSyncFS
	}
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if d.fs.err != nil {
		return d.fs.err
	}
	if err := syncfs(d.fs.f); err != nil {
		d.fs.err = fmt.Errorf("sync file system of %s: %w", d.path, err)
		return d.fs.err
	}
	return nil
}

// closeSync releases SyncFS's descriptor.
func (d *Dir) closeSync() {
	if d.fs.f != nil {
		d.fs.f.Close()
	}
}

// Placed is the file as Place left it under its final name (its ctime
// included), or nil when unknown: then Lstat it.
func (t *Temp) Placed() os.FileInfo { return t.placed }

// OnSyncFS reports whether the file lies on the file system SyncFS syncs
// (and SyncFS may be used).
func (t *Temp) OnSyncFS() bool { return t.onFS }

// Seal ends the writing of a temporary file without making it durable: it
// sets the mtime and closes the file. A Dir.SyncFS that starts after Seal
// returned makes it durable; then Place puts it under its final name. On
// error the temporary file is removed.
func (t *Temp) Seal(mtime time.Time) error {
	return t.finish(mtime, false)
}

// finish sets the mtime, syncs the file when durable is set, and closes it.
func (t *Temp) finish(mtime time.Time, durable bool) error {
	if !mtime.IsZero() {
		// On the open file (futimens), before the fsync that then covers it:
		// no second path lookup.
		if err := futimens(t.File, mtime); err != nil {
			t.Abort()
			return fmt.Errorf("set mtime of %s: %w", t.rel, err)
		}
	}
	if durable {
		if err := t.Sync(); err != nil {
			t.Abort()
			return fmt.Errorf("sync %s: %w", t.rel, err)
		}
	}
	if t.parent != nil {
		return nil // an unnamed file lives as long as its descriptor: closed once placed
	}
	if err := t.File.Close(); err != nil {
		t.Abort()
		return fmt.Errorf("close %s: %w", t.rel, err)
	}
	return nil
}

// Place renames a sealed (or synced) temporary file to its final name. The
// rename is durable once SyncDirs returned. Callers must have made the
// file's data durable first (Commit does, or Seal then SyncFS). On error the
// temporary file is removed.
func (t *Temp) Place() error {
	if t.parent != nil {
		if err := t.placeAt(); err != nil {
			return err
		}
	} else {
		if err := checkComponents(t.d.root, t.rel, false); err != nil {
			t.Abort()
			return err
		}
		if err := t.d.root.Rename(t.tmp, t.rel); err != nil {
			t.Abort()
			return fmt.Errorf("rename into %s: %w", t.rel, err)
		}
	}
	t.d.mu.Lock()
	if t.d.dirty == nil {
		t.d.dirty = map[string]bool{}
	}
	dir := path.Dir(t.rel)
	// A directory is covered by SyncFS only if every file renamed into it
	// was on its file system.
	if covered, seen := t.d.dirty[dir]; !seen || covered {
		t.d.dirty[dir] = t.onFS
	}
	t.d.mu.Unlock()
	return nil
}
