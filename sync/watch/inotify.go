package watch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// watchMask is what every directory is watched for. IN_MODIFY is left out on
// purpose: a writer is only heard of when it closes the file. IN_ATTRIB
// catches mtime and mode changes (the caller's full pass would see them as
// changes too) and directories that become readable. IN_DONT_FOLLOW and
// IN_ONLYDIR make a symlink fail to be watched instead of being followed;
// IN_EXCL_UNLINK stops events of files that were deleted but are still open.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
	unix.IN_CREATE | unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_DELETE_SELF |
	unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// instance is one inotify file descriptor and the goroutine reading it.
type instance struct {
	f    *os.File
	fd   int
	gen  int
	stop chan struct{}
}

// event is one decoded inotify event.
type event struct {
	wd   int32
	mask uint32
	name string
}

// rawBatch is what the reader hands to the run goroutine: the events of one
// read, or the error that ended reading.
type rawBatch struct {
	gen    int
	events []event
	err    error
}

// newInstance opens an inotify instance and starts its reader. The descriptor
// is non-blocking so that reads go through the runtime's poller and Close
// wakes a blocked read up.
func (w *Watcher) newInstance() (*instance, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w.gen++
	in := &instance{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, gen: w.gen, stop: make(chan struct{})}
	go w.read(in)
	return in, nil
}

func (in *instance) close() {
	close(in.stop)
	in.f.Close()
}

// read decodes events until the instance is closed.
func (w *Watcher) read(in *instance) {
	// Room for at least 64 events with names of NAME_MAX bytes.
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		if w.readGate != nil {
			select {
			case <-w.readGate:
			case <-in.stop:
				return
			}
		}
		n, err := in.f.Read(buf)
		var rb rawBatch
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case err == nil && n == 0:
			err = io.ErrUnexpectedEOF
			fallthrough
		case err != nil:
			rb = rawBatch{gen: in.gen, err: fmt.Errorf("read inotify: %w", err)}
		default:
			rb = rawBatch{gen: in.gen, events: decode(buf[:n])}
		}
		select {
		case w.raw <- rb:
		case <-in.stop:
			return
		}
		if rb.err != nil {
			return
		}
	}
}

// decode splits the bytes of one read into events.
func decode(b []byte) []event {
	var evs []event
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:]))
		mask := binary.NativeEndian.Uint32(b[4:])
		n := int(binary.NativeEndian.Uint32(b[12:]))
		end := unix.SizeofInotifyEvent + n
		if end > len(b) {
			break // cannot happen: the kernel never splits an event
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		evs = append(evs, event{wd: wd, mask: mask, name: name})
		b = b[end:]
	}
	return evs
}

// handleRaw applies the events of one read.
func (w *Watcher) handleRaw(rb rawBatch) {
	if w.ino == nil || rb.gen != w.ino.gen {
		return // from an instance that was closed since
	}
	if rb.err != nil {
		w.fail(lost, rb.err.Error())
		return
	}
	now := time.Now()
	for _, ev := range rb.events {
		w.handle(ev, now)
		if w.ino == nil {
			return // the watcher failed: the rest is covered by the rescan
		}
	}
}

// handle applies one event.
func (w *Watcher) handle(ev event, now time.Time) {
	if ev.mask&unix.IN_Q_OVERFLOW != 0 {
		w.fail(lost, "inotify event queue overflowed (fs.inotify.max_queued_events)")
		return
	}
	d := w.dirs[ev.wd]
	if d == nil {
		return // a watch removed since; its last events are of no interest
	}
	if ev.mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
		if d == w.top {
			w.fail(rootMissing, "root was deleted, moved or unmounted")
			return
		}
		if ev.mask&unix.IN_IGNORED != 0 {
			// The kernel dropped the watch (the directory is gone).
			w.forget(d)
		}
		// Deletes and moves of other directories are handled through
		// their parent's event, which names them.
		return
	}
	if ev.name == "" || ev.name == "." || ev.name == ".." || strings.ContainsRune(ev.name, '/') {
		return // an event about the directory itself
	}
	rel := d.join(ev.name)
	if ev.mask&unix.IN_ISDIR != 0 {
		switch {
		case ev.mask&unix.IN_CREATE != 0:
			// New: files created in it before its watch was added are
			// found by listing it. One that is known already was found
			// by a listing of d made after d was watched, which covered
			// it.
			if d.children[ev.name] == nil {
				w.watchTree(d, ev.name, true)
			}
		case ev.mask&unix.IN_MOVED_TO != 0:
			// Moved here, from outside or from elsewhere in the tree
			// (forgotten then on IN_MOVED_FROM), perhaps over an empty
			// directory of the same name: watch it afresh, and its files,
			// which have new paths, are reported.
			if c := d.children[ev.name]; c != nil {
				w.forget(c)
			}
			w.watchTree(d, ev.name, true)
		case ev.mask&unix.IN_ATTRIB != 0:
			if d.children[ev.name] == nil {
				// Perhaps it became readable: try again.
				w.watchTree(d, ev.name, true)
			}
		case ev.mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			if c := d.children[ev.name]; c != nil {
				w.forget(c)
			}
		}
		return
	}
	switch {
	case ev.mask&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_ATTRIB) != 0:
		w.candidate(rel, now)
	case ev.mask&unix.IN_CREATE != 0:
		// A file created by open(2) is reported on IN_CLOSE_WRITE. One
		// created by link(2) is complete already and gets no close: it
		// has a link count above one.
		var st unix.Stat_t
		if unix.Lstat(w.root+"/"+rel, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
			w.candidate(rel, now)
		}
	case ev.mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		w.drop(rel)
	case ev.mask&unix.IN_MODIFY != 0:
		w.written(rel, now)
	}
}

// dir is a watched directory. Paths are derived from the parent chain, so a
// move only touches one node.
type dir struct {
	wd       int32
	parent   *dir
	name     string
	children map[string]*dir
}

// rel is the directory's path relative to the root ("" for the root).
func (d *dir) rel() string {
	if d.parent == nil {
		return ""
	}
	var parts []string
	for n := d; n.parent != nil; n = n.parent {
		parts = append(parts, n.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// join is the relative path of the entry name in d.
func (d *dir) join(name string) string {
	if r := d.rel(); r != "" {
		return r + "/" + name
	}
	return name
}

// forget stops watching d and everything below it.
func (w *Watcher) forget(d *dir) {
	if d.parent != nil && d.parent.children[d.name] == d {
		delete(d.parent.children, d.name)
	}
	stack := []*dir{d}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if w.dirs[n.wd] == n {
			delete(w.dirs, n.wd)
			// EINVAL when the kernel removed it already: fine.
			_, _ = unix.InotifyRmWatch(w.ino.fd, uint32(n.wd))
		}
		for _, c := range n.children {
			stack = append(stack, c)
		}
	}
}

// watchTree watches the directory name in parent (the root when parent is
// nil) and every directory below it. The watch on a directory is added before
// it is listed, so a file created meanwhile is seen by one or the other. With
// report, the regular files found are candidates: they were created before
// their directory was watched. A limit reached makes the watcher fail.
func (w *Watcher) watchTree(parent *dir, name string, report bool) {
	type item struct {
		parent *dir
		name   string
	}
	stack := []item{{parent, name}}
	now := time.Now()
	for len(stack) > 0 && w.ino != nil {
		select {
		case <-w.done:
			return
		default:
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d, path, ok := w.addWatch(it.parent, it.name)
		if !ok {
			continue
		}
		err := listDir(path, func(e os.DirEntry) {
			switch {
			case e.IsDir():
				stack = append(stack, item{d, e.Name()})
			case report && e.Type().IsRegular():
				w.candidate(d.join(e.Name()), now)
				if w.rescan {
					report = false // collapsed: the rescan covers the rest
				}
			}
		})
		if err != nil {
			w.log.Debug("watch: cannot list directory", zap.String("dir", path), zap.Error(err))
		}
	}
}

// addWatch watches parent/name. ok is false when the directory cannot be
// watched (gone, a symlink, unreadable: the caller's pass meets the same) or
// when the watcher failed (limit reached).
func (w *Watcher) addWatch(parent *dir, name string) (d *dir, path string, ok bool) {
	path = w.root
	if parent != nil {
		path = w.root + "/" + parent.join(name)
	}
	if w.opts.MaxWatches > 0 && len(w.dirs) >= w.opts.MaxWatches {
		w.fail(lost, fmt.Sprintf("more than %d directories (Options.MaxWatches)", w.opts.MaxWatches))
		return nil, "", false
	}
	mask := uint32(watchMask)
	if w.opts.MaxWait > 0 {
		mask |= unix.IN_MODIFY // writers held open (Options.MaxWait)
	}
	wd, err := unix.InotifyAddWatch(w.ino.fd, path, mask)
	switch {
	case errors.Is(err, unix.ENOSPC):
		w.fail(lost, "inotify watch limit reached (fs.inotify.max_user_watches)")
		return nil, "", false
	case parent == nil && err != nil:
		w.fail(rootMissing, "watch root: "+err.Error())
		return nil, "", false
	case err != nil:
		// ENOENT: gone already; ENOTDIR: a symlink or replaced by a file;
		// EACCES: unreadable (an IN_ATTRIB on it tries again).
		w.log.Debug("watch: cannot watch directory", zap.String("dir", path), zap.Error(err))
		return nil, "", false
	}
	if old := w.dirs[int32(wd)]; old != nil {
		// Already watched under another path (moved without our seeing
		// it): the kernel kept its watch; move our node.
		if old.parent != nil && old.parent.children[old.name] == old {
			delete(old.parent.children, old.name)
		}
		old.parent, old.name = parent, name
		d = old
	} else {
		d = &dir{wd: int32(wd), parent: parent, name: name, children: make(map[string]*dir)}
		w.dirs[d.wd] = d
	}
	if parent == nil {
		w.top = d
	} else {
		parent.children[name] = d
	}
	return d, path, true
}

// listDir calls fn for each entry of a directory, without following a
// symlink in its place, a batch at a time so that a huge directory is never
// held in memory whole.
func listDir(path string, fn func(os.DirEntry)) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	for {
		batch, err := f.ReadDir(256)
		for _, e := range batch {
			fn(e)
		}
		if err == io.EOF || (err == nil && len(batch) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
