package safefs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
)

// Writing thousands of small files, os.Root's component-by-component walk
// (an open, a stat and a close per directory level, for every check) and
// the named temporary file (a directory entry created, then renamed) cost
// more than the files' data. On Linux a Dir therefore:
//
//   - resolves a directory with one openat2(2) (RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS: the kernel refuses a symlinked component or an
//     escape) and keeps the last few open, so that each file is then one
//     system call away from its directory;
//   - writes a download into an unnamed file (O_TMPFILE), which a crash
//     simply frees, and gives it its final name with one link(2) when no
//     file is there yet (else it links a temporary name and renames it over
//     the old file, which stays whole until then).
//
// Elsewhere, or on a kernel or file system without these, the os.Root path
// of safefs.go does the same job.

// maxOpenDirs bounds the directory descriptors a Dir keeps open while idle:
// downloads come in key order, so a few cover the directories in use.
const maxOpenDirs = 32

// resolveBelow forbids symlinks, magic links and escapes from the root.
const resolveBelow = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// atDirs is the open directories of a Dir.
type atDirs struct {
	root *os.File // the Dir itself, kept open
	rfd  int

	tmpfileOnce sync.Once
	tmpfile     bool // unnamed temporary files can be linked here
	emptyPath   bool // by linkat(AT_EMPTY_PATH), else through /proc

	mu   sync.Mutex
	open map[string]*dirHandle
}

// dirHandle is an open directory below the root (O_PATH: it grants no
// reading, only lookups relative to it).
type dirHandle struct {
	rel  string
	fd   int
	dev  uint64
	refs int
	gone bool // forgotten: closed when the last user releases it
}

// openAt returns the fast path for the directory root (an open os.Root), or
// nil where openat2 is not available.
func openAt(root *os.Root) *atDirs {
	f, err := root.Open(".")
	if err != nil {
		return nil
	}
	rfd := int(f.Fd())
	fd, err := openat2(rfd, ".")
	if err != nil { // ENOSYS before Linux 5.6, EPERM under some seccomp filters
		f.Close()
		return nil
	}
	unix.Close(fd)
	return &atDirs{root: f, rfd: rfd, open: map[string]*dirHandle{}}
}

func openat2(dirfd int, rel string) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: resolveBelow,
		})
		// EAGAIN: a rename elsewhere on the file system raced the lookup.
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}

// close releases every descriptor.
func (a *atDirs) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.open {
		unix.Close(h.fd)
	}
	a.open = nil
	a.root.Close()
}

// acquire returns the open directory rel ("." is the root), creating the
// missing directories on the way when create is set. A symlinked component,
// a non-directory or an escape is refused with ErrUnsafe; a missing one
// (create unset) with an error that is fs.ErrNotExist.
func (a *atDirs) acquire(rel string, create bool) (*dirHandle, error) {
	a.mu.Lock()
	if h, ok := a.open[rel]; ok {
		h.refs++
		a.mu.Unlock()
		return h, nil
	}
	a.mu.Unlock()

	fd, err := openat2(a.rfd, rel)
	if errors.Is(err, unix.ENOENT) && create {
		fd, err = a.mkdirs(rel)
	}
	if err != nil {
		return nil, unsafeOr(rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	h := &dirHandle{rel: rel, fd: fd, dev: uint64(st.Dev), refs: 1} //nolint:unconvert // not uint64 everywhere

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open == nil { // closed meanwhile
		unix.Close(fd)
		return nil, os.ErrClosed
	}
	if old, ok := a.open[rel]; ok { // another goroutine opened it first
		unix.Close(fd)
		old.refs++
		return old, nil
	}
	if len(a.open) >= maxOpenDirs {
		for k, idle := range a.open {
			if idle.refs == 0 {
				unix.Close(idle.fd)
				delete(a.open, k)
			}
		}
	}
	a.open[rel] = h
	return h, nil
}

// release gives back a handle from acquire.
func (a *atDirs) release(h *dirHandle) {
	a.mu.Lock()
	h.refs--
	if h.refs == 0 && h.gone {
		unix.Close(h.fd)
	}
	a.mu.Unlock()
}

// forget drops a handle whose directory was removed, so that the next
// acquire looks it up again.
func (a *atDirs) forget(h *dirHandle) {
	a.mu.Lock()
	if a.open[h.rel] == h {
		delete(a.open, h.rel)
		h.gone = true
	}
	a.mu.Unlock()
}

// mkdirs creates rel's missing directories one component at a time, each
// looked up with the same guarantees, and opens rel.
func (a *atDirs) mkdirs(rel string) (int, error) {
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fd, err := openat2(a.rfd, p)
		if errors.Is(err, unix.ENOENT) {
			parent, perr := openat2(a.rfd, path.Dir(p))
			if perr != nil {
				return -1, perr
			}
			err = unix.Mkdirat(parent, parts[i], 0o755)
			unix.Close(parent)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return -1, fmt.Errorf("create directory %s: %w", p, err)
			}
			fd, err = openat2(a.rfd, p)
		}
		if err != nil {
			return -1, err
		}
		if i == len(parts)-1 {
			return fd, nil
		}
		unix.Close(fd)
	}
	return -1, unix.ENOENT // rel was empty
}

// unsafeOr names what openat2 refused.
func unsafeOr(rel string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%w: a component of %s is a symlink", ErrUnsafe, rel)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w: a component of %s is not a directory", ErrUnsafe, rel)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w: %s leads out of the directory", ErrUnsafe, rel)
	}
	return fmt.Errorf("open directory %s: %w", rel, err)
}

// existing is Dir.Existing through the open directories.
func (a *atDirs) existing(rel string) (int64, error) {
	h, err := a.acquire(path.Dir(rel), false)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer a.release(h)
	var st unix.Stat_t
	err = unix.Fstatat(h.fd, path.Base(rel), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return 0, nil
	case err != nil:
		return 0, err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return 0, fmt.Errorf("%w: %s is a directory", ErrUnsafe, rel)
	case st.Mode&unix.S_IFMT == unix.S_IFREG:
		return st.Size, nil
	}
	return 0, nil // a symlink or other node is replaced, never followed
}

// create starts a temporary file for rel in its (created) directory:
// unnamed where the file system allows it.
func (a *atDirs) create(d *Dir, rel string) (*Temp, error) {
	h, err := a.acquire(path.Dir(rel), true)
	if err != nil {
		return nil, err
	}
	a.tmpfileOnce.Do(func() { a.tmpfile = a.probeTmpfile(h) })
	t := &Temp{d: d, rel: rel, parent: h, onFS: d.fs.ok && h.dev == d.fs.dev}
	var fd int
	if a.tmpfile {
		fd, err = unix.Openat(h.fd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	} else {
		t.tmp = tempName()
		fd, err = unix.Openat(h.fd, t.tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	}
	if err != nil {
		a.release(h)
		return nil, fmt.Errorf("create temporary file for %s: %w", rel, err)
	}
	t.File = os.NewFile(uintptr(fd), path.Join(d.path, rel))
	return t, nil
}

// probeTmpfile reports whether an unnamed file can be made and then linked
// in h (O_TMPFILE needs file system support; linking it needs
// CAP_DAC_READ_SEARCH for AT_EMPTY_PATH, the worker's case, or /proc), and
// how.
func (a *atDirs) probeTmpfile(h *dirHandle) bool {
	for _, emptyPath := range []bool{true, false} {
		fd, err := unix.Openat(h.fd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return false
		}
		a.emptyPath = emptyPath
		name := tempName()
		err = a.linkAnon(fd, h.fd, name)
		unix.Close(fd)
		if err == nil {
			return unix.Unlinkat(h.fd, name, 0) == nil
		}
	}
	return false
}

// linkAnon gives the unnamed file fd the name name in directory dirfd.
func (a *atDirs) linkAnon(fd, dirfd int, name string) error {
	if a.emptyPath {
		return unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
	}
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
}

func tempName() string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return keys.TempPrefix + hex.EncodeToString(rnd[:])
}

// place gives the sealed temporary file its final name in its directory and
// records what the file then is (Temp.Placed). The file's descriptor is
// closed after.
func (t *Temp) placeAt() error {
	a, h, base := t.d.at, t.parent, path.Base(t.rel)
	fd := int(t.File.Fd())
	err := t.link(fd, h, base)
	if errors.Is(err, unix.ENOENT) {
		// The directory was removed since: look it up (create it) again.
		a.forget(h)
		if t.tmp != "" { // the named temporary file went with its directory
			t.Abort()
			return fmt.Errorf("rename into %s: %w", t.rel, err)
		}
		nh, aerr := a.acquire(path.Dir(t.rel), true)
		if aerr != nil {
			t.Abort()
			return fmt.Errorf("rename into %s: %w", t.rel, aerr)
		}
		a.release(h)
		t.parent, h = nh, nh
		err = t.link(fd, h, base)
	}
	if err != nil {
		t.Abort()
		return fmt.Errorf("rename into %s: %w", t.rel, err)
	}
	if fi, err := t.File.Stat(); err == nil { // after the link: its ctime
		t.placed = fi
	}
	t.File.Close()
	a.release(h)
	t.parent = nil
	return nil
}

// link names the file: a link when it is unnamed and nothing is at base,
// else (through a temporary name) a rename over what is there.
func (t *Temp) link(fd int, h *dirHandle, base string) error {
	if t.tmp == "" {
		err := t.d.at.linkAnon(fd, h.fd, base)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		t.tmp = tempName()
		if err := t.d.at.linkAnon(fd, h.fd, t.tmp); err != nil {
			t.tmp = ""
			return err
		}
	}
	return unix.Renameat(h.fd, t.tmp, h.fd, base)
}

// abortAt closes the temporary file and removes its name, if it has one.
func (t *Temp) abortAt() {
	_ = t.File.Close()
	if t.parent == nil {
		return
	}
	if t.tmp != "" {
		_ = unix.Unlinkat(t.parent.fd, t.tmp, 0)
	}
	t.d.at.release(t.parent)
	t.parent = nil
}

// lstat is Dir.Lstat through the open directories.
func (a *atDirs) lstat(rel string) (os.FileInfo, error) {
	h, err := a.acquire(path.Dir(rel), false)
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	defer a.release(h)
	fi := &statInfo{name: path.Base(rel)}
	for {
		// Sys must be a *syscall.Stat_t (as os.Lstat's); x/sys's has the
		// same layout.
		err = unix.Fstatat(h.fd, fi.name, (*unix.Stat_t)(unsafe.Pointer(&fi.st)), unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	return fi, nil
}

// statInfo is an os.FileInfo made from a stat(2) result, as os.Lstat's.
type statInfo struct {
	name string
	st   syscall.Stat_t
}

func (s *statInfo) Name() string       { return s.name }
func (s *statInfo) Size() int64        { return s.st.Size }
func (s *statInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Sec, s.st.Mtim.Nsec) }
func (s *statInfo) IsDir() bool        { return s.Mode().IsDir() }
func (s *statInfo) Sys() any           { return &s.st }

func (s *statInfo) Mode() fs.FileMode {
	m := fs.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	}
	if s.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if s.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if s.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
