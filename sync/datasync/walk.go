package datasync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// localFile is a regular file the walker found.
type localFile struct {
	name string // slash-separated path relative to the mapping's directory
	stat stablefile.Stat
}

// walkProblem is an entry the walker skipped: an unreadable directory or
// file, or a name that cannot be an object key.
type walkProblem struct {
	name string
	err  error
}

// walker yields the regular files under a directory in key order: the byte
// order of their slash-separated relative paths, which is the order S3 lists
// keys in and the journal stores rows in. Each directory is read whole and
// sorted, a directory's name sorting as if it ended with "/" (so "a-b" comes
// before the files of "a/"); memory is bounded by the biggest directory, not
// by the tree. Symlinks are not followed. An entry that cannot be read never
// stops the walk: it is handed to problem and the walk goes on.
type walker struct {
	root    *os.Root
	problem func(walkProblem)
	symlink func(name string)      // first symlink seen, for a log line
	fault   func(dir string) error // test hook: fails reading dir (root ignores permissions)
}

// walk yields the files under dir ("." for the whole tree) until yield
// returns false; it reports whether it ran to the end.
func (w *walker) walk(dir string, yield func(localFile) bool) bool {
	f, err := w.root.Open(dir)
	if err == nil && w.fault != nil {
		if err = w.fault(dir); err != nil {
			f.Close()
		}
	}
	if err != nil {
		w.problem(walkProblem{name: dir, err: fmt.Errorf("open directory: %w", err)})
		return true
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		// What was read is used; the rest waits for a later pass.
		w.problem(walkProblem{name: dir, err: fmt.Errorf("read directory: %w", err)})
	}
	type ent struct {
		sortKey string
		de      fs.DirEntry
	}
	list := make([]ent, 0, len(entries))
	for _, de := range entries {
		k := de.Name()
		if de.IsDir() {
			k += "/"
		}
		list = append(list, ent{k, de})
	}
	entries = nil
	slices.SortFunc(list, func(a, b ent) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range list {
		name := e.de.Name()
		rel := name
		if dir != "." {
			rel = dir + "/" + name
		}
		switch t := e.de.Type(); {
		case t.IsDir():
			if !w.walk(rel, yield) {
				return false
			}
		case t&fs.ModeSymlink != 0:
			if w.symlink != nil {
				w.symlink(rel)
			}
		case t.IsRegular():
			if strings.HasPrefix(name, keys.TempPrefix) {
				continue // an ingress download in progress
			}
			if !utf8.ValidString(name) {
				w.problem(walkProblem{name: rel, err: fmt.Errorf("%w: name is not UTF-8", errUnusableName)})
				continue
			}
			fi, err := e.de.Info()
			if err != nil {
				if !isNotExist(err) { // gone since ReadDir: nothing to report
					w.problem(walkProblem{name: rel, err: err})
				}
				continue
			}
			if !yield(localFile{name: rel, stat: stablefile.StatOf(fi)}) {
				return false
			}
		}
	}
	return true
}

// errUnusableName marks a local name that cannot become an object key.
var errUnusableName = errors.New("unusable file name")

// statLocal looks name up for a change event: the file's stat, or ok false
// when there is no regular file there; isDir says a directory is there.
func statLocal(root *os.Root, name string) (st stablefile.Stat, ok, isDir bool, err error) {
	fi, err := root.Lstat(name)
	switch {
	case err != nil && isNotExist(err):
		return st, false, false, nil
	case err != nil:
		return st, false, false, err
	case fi.IsDir():
		return st, false, true, nil
	case !fi.Mode().IsRegular() || strings.HasPrefix(path.Base(name), keys.TempPrefix):
		return st, false, false, nil
	}
	return stablefile.StatOf(fi), true, false, nil
}

// isNotExist reports whether err says the entry is gone (or a parent is no
// longer a directory).
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
