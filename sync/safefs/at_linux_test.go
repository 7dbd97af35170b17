package safefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// writeFile writes rel through a Temp the way a download does.
func writeFile(d *Dir, rel, content string) (*Temp, error) {
	tmp, err := d.Create(rel)
	if err != nil {
		return nil, err
	}
	if _, err := tmp.Write([]byte(content)); err != nil {
		tmp.Abort()
		return nil, err
	}
	if err := tmp.Seal(time.Unix(1700000000, 5)); err != nil {
		return nil, err
	}
	if err := d.SyncFS(); err != nil {
		tmp.Abort()
		return nil, err
	}
	return tmp, tmp.Place()
}

func mustRead(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Fatalf("%s: %q, %v; want %q", p, b, err, want)
	}
}

// TestFastPathUsed: on this machine (Linux 5.6+, ext4 or tmpfs) the tests
// below exercise openat2 and unnamed files, not the os.Root fallback.
func TestFastPathUsed(t *testing.T) {
	d := openTemp(t)
	if d.at == nil {
		t.Fatal("openat2 unavailable: the fast path is not tested")
	}
	tmp, err := d.Create("x")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Abort()
	if !d.at.tmpfile || tmp.tmp != "" {
		t.Fatal("the temporary file has a name: O_TMPFILE is not tested")
	}
}

// TestNewAndReplaced: a new file is linked in place, an existing one is
// replaced whole; both with the sealed mtime, no temporary file left, and
// Placed matching what Lstat then sees (ctime and inode).
func TestNewAndReplaced(t *testing.T) {
	for _, mode := range []string{"unnamed", "unnamed linked through /proc", "named"} {
		t.Run(mode, func(t *testing.T) {
			d := openTemp(t)
			switch mode {
			case "unnamed linked through /proc": // as without CAP_DAC_READ_SEARCH
				d.at.tmpfileOnce.Do(func() { d.at.tmpfile, d.at.emptyPath = true, false })
			case "named":
				d.at.tmpfileOnce.Do(func() {})
			}
			for _, content := range []string{"first", "second version"} {
				tmp, err := writeFile(d, "a/b/f", content)
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(d.Path(), "a/b/f")
				mustRead(t, p, content)
				fi, err := os.Lstat(p)
				if err != nil {
					t.Fatal(err)
				}
				if !fi.ModTime().Equal(time.Unix(1700000000, 5)) {
					t.Fatalf("mtime %v", fi.ModTime())
				}
				pl := tmp.Placed()
				if pl == nil || !os.SameFile(pl, fi) || pl.Sys() == nil {
					t.Fatalf("Placed %v is not the file placed", pl)
				}
				if got, want := ctimeOf(pl), ctimeOf(fi); got != want {
					t.Fatalf("Placed ctime %v, Lstat ctime %v", got, want)
				}
				if n, err := d.Existing("a/b/f"); err != nil || n != int64(len(content)) {
					t.Fatalf("Existing = %d, %v", n, err)
				}
			}
			if temps := tempsIn(t, d.Path()); len(temps) > 0 {
				t.Fatalf("temporary files left: %v", temps)
			}
			if err := d.SyncDirs(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func ctimeOf(fi os.FileInfo) time.Time {
	st := fi.Sys().(*syscall.Stat_t)
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
}

// TestSymlinksRefused: a symlinked directory on the way, even one leading
// to another directory inside the root, is refused by Existing and Create,
// and nothing is written through it.
func TestSymlinksRefused(t *testing.T) {
	d := openTemp(t)
	inside := filepath.Join(d.Path(), "real")
	outside := t.TempDir()
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"in": inside, "out": outside, "rel": "real"} {
		if err := os.Symlink(target, filepath.Join(d.Path(), name)); err != nil {
			t.Fatal(err)
		}
		rel := name + "/f"
		if _, err := d.Existing(rel); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Existing(%s) = %v, want ErrUnsafe", rel, err)
		}
		if _, err := writeFile(d, rel, "x"); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Create(%s) = %v, want ErrUnsafe", rel, err)
		}
		if _, err := writeFile(d, name+"/sub/f", "x"); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Create(%s/sub/f) = %v, want ErrUnsafe", name, err)
		}
	}
	for _, dir := range []string{inside, outside} {
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Fatalf("written through a symlink into %s: %v", dir, ents)
		}
	}
	// A file where a directory is expected, a directory where a file is,
	// and a way out.
	mustWrite(t, filepath.Join(d.Path(), "file"), "x")
	if _, err := writeFile(d, "file/f", "x"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Create(file/f) = %v, want ErrUnsafe", err)
	}
	if _, err := d.Existing("real"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Existing(real) = %v, want ErrUnsafe", err)
	}
	if _, err := writeFile(d, "../escaped", "x"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Create(../escaped) = %v, want ErrUnsafe", err)
	}
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkSwappedInAfterCreate: a directory replaced by a symlink while
// a file is being written does not redirect the file: it lands in the
// directory it was created in (now under another name) or not at all.
func TestSymlinkSwappedInAfterCreate(t *testing.T) {
	d := openTemp(t)
	outside := t.TempDir()
	tmp, err := d.Create("a/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(d.Path(), "a")
	if err := os.Rename(a, a+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, a); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Seal(time.Time{}); err != nil {
		t.Fatal(err)
	}
	_ = tmp.Place()
	if ents, _ := os.ReadDir(outside); len(ents) > 0 {
		t.Fatalf("written through the symlink: %v", ents)
	}
	mustRead(t, filepath.Join(a+".moved", "f"), "data")
}

// TestDirectoryRemovedBeforePlace: the file's directory removed while it is
// written (a user cleaning up) is made again, and the file lands in it.
func TestDirectoryRemovedBeforePlace(t *testing.T) {
	d := openTemp(t)
	tmp, err := d.Create("a/b/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(d.Path(), "a")); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Seal(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Place(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, filepath.Join(d.Path(), "a/b/f"), "data")
}

// TestOpenDirectoriesBounded: writing into many directories keeps at most
// maxOpenDirs of them open once the files are placed.
func TestOpenDirectoriesBounded(t *testing.T) {
	d := openTemp(t)
	for i := range 3 * maxOpenDirs {
		if _, err := writeFile(d, fmt.Sprintf("d%03d/f", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	d.at.mu.Lock()
	n := len(d.at.open)
	d.at.mu.Unlock()
	if n > maxOpenDirs {
		t.Fatalf("%d directories open, want at most %d", n, maxOpenDirs)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLstat: Dir.Lstat says what os.Lstat says of a file, a directory, a
// symlink (not followed) and a missing name, and refuses a symlinked parent.
func TestLstat(t *testing.T) {
	d := openTemp(t)
	mustWrite(t, filepath.Join(d.Path(), "f"), "hello")
	if err := os.Mkdir(filepath.Join(d.Path(), "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(d.Path(), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(d.Path(), "out")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"f", "dir", "link"} {
		got, err := d.Lstat(rel)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.Lstat(filepath.Join(d.Path(), rel))
		if got.Name() != want.Name() || got.Size() != want.Size() || got.Mode() != want.Mode() ||
			!got.ModTime().Equal(want.ModTime()) || got.IsDir() != want.IsDir() {
			t.Errorf("%s: Lstat %v %v %v %v, os.Lstat %v %v %v %v", rel, got.Name(), got.Size(), got.Mode(), got.ModTime(),
				want.Name(), want.Size(), want.Mode(), want.ModTime())
		}
		st, ok := got.Sys().(*syscall.Stat_t)
		if !ok {
			t.Fatalf("%s: Sys is %T, want *syscall.Stat_t", rel, got.Sys())
		}
		if ws := want.Sys().(*syscall.Stat_t); st.Ino != ws.Ino || st.Dev != ws.Dev || st.Ctim != ws.Ctim {
			t.Errorf("%s: another file (inode %d, want %d)", rel, st.Ino, ws.Ino)
		}
	}
	for _, rel := range []string{"missing", "nodir/f"} {
		if _, err := d.Lstat(rel); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Lstat(%s) = %v, want ErrNotExist", rel, err)
		}
	}
	if _, err := d.Lstat("out/x"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Lstat through a symlinked parent = %v, want ErrUnsafe", err)
	}
}
