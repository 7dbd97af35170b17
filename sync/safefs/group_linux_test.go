package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
)

func openTemp(t *testing.T) *Dir {
	t.Helper()
	root := t.TempDir()
	d, err := Open(root, filepath.Join(root, "in"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if !d.CanSyncFS() {
		t.Fatalf("syncfs unusable on this kernel: the group path is not tested")
	}
	return d
}

func tempsIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(de.Name(), keys.TempPrefix) {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSealSyncFSPlace: a sealed file is not under its final name until
// Place; then it is, with its content and mtime.
func TestSealSyncFSPlace(t *testing.T) {
	d := openTemp(t)
	tmp, err := d.Create("a/b/file")
	if err != nil {
		t.Fatal(err)
	}
	if !tmp.OnSyncFS() {
		t.Fatal("a file in the directory is not on its file system")
	}
	if _, err := tmp.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := tmp.Seal(mtime); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(d.Path(), "a/b/file")
	if _, err := os.Lstat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sealed file visible under its final name: %v", err)
	}
	if err := d.SyncFS(); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Place(); err != nil {
		t.Fatal(err)
	}
	if err := d.SyncDirs(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(final)
	if err != nil || string(b) != "hello" {
		t.Fatalf("final file: %q, %v", b, err)
	}
	if fi, _ := os.Stat(final); !fi.ModTime().Equal(mtime) {
		t.Fatalf("mtime %v, want %v", fi.ModTime(), mtime)
	}
	if temps := tempsIn(t, d.Path()); len(temps) > 0 {
		t.Fatalf("temp files left: %v", temps)
	}
}

// TestSealedThenAbandoned is a crash between Seal and Place: nothing under
// the final name. An unnamed temporary file leaves nothing at all; a named
// one (where the file system has no O_TMPFILE) is removed by the next Sweep.
func TestSealedThenAbandoned(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(map[bool]string{false: "unnamed", true: "named"}[named], func(t *testing.T) {
			d := openTemp(t)
			if named {
				d.at.tmpfileOnce.Do(func() {}) // as if O_TMPFILE were unsupported
			}
			tmp, err := d.Create("file")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tmp.Write([]byte("partial")); err != nil {
				t.Fatal(err)
			}
			if err := tmp.Seal(time.Time{}); err != nil {
				t.Fatal(err)
			}
			if err := d.SyncFS(); err != nil {
				t.Fatal(err)
			}
			tmp.File.Close() // the process dies here: its descriptors close
			if _, err := os.Lstat(filepath.Join(d.Path(), "file")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("file visible under its final name before Place: %v", err)
			}
			want := 0
			if named {
				want = 1
			}
			if temps := tempsIn(t, d.Path()); len(temps) != want {
				t.Fatalf("temporary files %v, want %d", temps, want)
			}
			d2, err := Open(filepath.Dir(d.Path()), d.Path(), false)
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			if n, err := d2.Sweep(); err != nil || n != want {
				t.Fatalf("sweep removed %d (%v), want %d", n, err, want)
			}
		})
	}
}

// TestSyncFSErrorSticks: once syncfs failed, every later SyncFS of the Dir
// fails too, even when syncfs would succeed again (its report was consumed),
// and SyncDirs with it.
func TestSyncFSErrorSticks(t *testing.T) {
	d := openTemp(t)
	for _, rel := range []string{"a/x", "b/y"} {
		tmp, err := d.Create(rel)
		if err != nil {
			t.Fatal(err)
		}
		if err := tmp.Seal(time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := tmp.Place(); err != nil {
			t.Fatal(err)
		}
	}
	good := d.fs.f
	bad, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	bad.Close() // syncfs on it fails (EBADF), as a write error would
	d.fs.f = bad
	if err := d.SyncFS(); err == nil {
		t.Fatal("SyncFS on a closed descriptor succeeded")
	}
	d.fs.f = good
	if err := d.SyncFS(); err == nil {
		t.Fatal("SyncFS succeeded after a failure")
	}
	if err := d.SyncDirs(); err == nil {
		t.Fatal("SyncDirs covered by a failed SyncFS succeeded")
	}
}

// TestOnSyncFSOtherDevice: a file on another file system than the one
// SyncFS syncs is not covered (it is fsynced on its own).
func TestOnSyncFSOtherDevice(t *testing.T) {
	d := openTemp(t)
	d.fs.dev++ // as if the directory were on another file system
	tmp, err := d.Create("file")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Abort()
	if tmp.OnSyncFS() {
		t.Fatal("a file on another device is said to be covered by SyncFS")
	}
}

func TestKernelAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{
		"5.8.0": true, "5.10.0-28-amd64": true, "6.1.0": true, "4.18.0-513.el8.x86_64": false,
		"5.7.19": false, "5.8": true, "5.8-rc1": true, "6": false, "": false, "x.y": false,
	} {
		if got := kernelAtLeast(rel, 5, 8); got != want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", rel, got, want)
		}
	}
}
