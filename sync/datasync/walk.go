package datasync

import (
	"errors"
	"fmt"
	"io"
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
// keys in and the journal stores rows in. Each directory's entries are read
// (a batch at a time: os.Root stats them as it reads) and kept as names and
// stats only, then sorted, a directory's name sorting as if it ended with "/"
// (so "a-b" comes before the files of "a/"). Memory is bounded by the biggest
// directory and its parents (about 100 bytes an entry), not by the tree. Symlinks are not followed. An entry that cannot be read never
// stops the walk: it is handed to problem and the walk goes on.
type walker struct {
	root    *os.Root
	problem func(walkProblem)
	symlink func(name string) // first symlink seen, for a log line
	// conflictCopy is told of a conflict copy (keys.IsConflictCopy), which
	// is skipped: egress never uploads one.
	conflictCopy func(name string)
	// skipped, when set, is told of every entry passed over that is not a
	// directory: symlink, special file, temporary file, conflict copy.
	skipped func(name string)
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
	// Names, types and stats only: a DirEntry and its FileInfo each would
	// cost about three times more for a big directory.
	type ent struct {
		key string // the name, with "/" appended for a directory
		typ fs.FileMode
		st  stablefile.Stat
		err error
	}
	var list []ent
	for {
		batch, err := f.ReadDir(walkBatch)
		for _, de := range batch {
			e := ent{key: de.Name(), typ: de.Type()}
			switch {
			case de.IsDir():
				e.key += "/"
			case e.typ.IsRegular():
				// Already stat'ed by ReadDir (a directory opened in an
				// os.Root): no second system call.
				var fi fs.FileInfo
				if fi, e.err = de.Info(); e.err == nil {
					e.st = stablefile.StatOf(fi)
				}
			}
			list = append(list, e)
		}
		if err == io.EOF || err == nil && len(batch) == 0 {
			break
		}
		if err != nil {
			// What was read is used; the rest waits for a later pass
			// (nothing under dir is taken for deleted meanwhile).
			w.problem(walkProblem{name: dir, err: fmt.Errorf("read directory: %w", err)})
			break
		}
	}
	f.Close()
	slices.SortFunc(list, func(a, b ent) int { return strings.Compare(a.key, b.key) })
	for i := range list {
		e := list[i]
		list[i] = ent{} // yielded: let the name go
		name := strings.TrimSuffix(e.key, "/")
		rel := name
		if dir != "." {
			rel = dir + "/" + name
		}
		switch t := e.typ; {
		case t.IsDir():
			if !w.walk(rel, yield) {
				return false
			}
		case t&fs.ModeSymlink != 0:
			if w.symlink != nil {
				w.symlink(rel)
			}
			w.skip(rel)
		case t.IsRegular():
			if strings.HasPrefix(name, keys.TempPrefix) {
				w.skip(rel)
				continue // an ingress download in progress
			}
			if keys.IsConflictCopy(name) {
				if w.conflictCopy != nil {
					w.conflictCopy(rel)
				}
				w.skip(rel)
				continue
			}
			if !utf8.ValidString(name) {
				w.problem(walkProblem{name: rel, err: fmt.Errorf("%w: name is not UTF-8", errUnusableName)})
				continue
			}
			if e.err != nil {
				if !isNotExist(e.err) { // gone since it was listed: nothing to report
					w.problem(walkProblem{name: rel, err: e.err})
				}
				continue
			}
			if !yield(localFile{name: rel, stat: e.st}) {
				return false
			}
		default: // device, pipe, socket
			w.skip(rel)
		}
	}
	return true
}

func (w *walker) skip(name string) {
	if w.skipped != nil {
		w.skipped(name)
	}
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
	case !fi.Mode().IsRegular() || strings.HasPrefix(path.Base(name), keys.TempPrefix) || keys.IsConflictCopy(name):
		return st, false, false, nil
	}
	return stablefile.StatOf(fi), true, false, nil
}

// isNotExist reports whether err says the entry is gone (or a parent is no
// longer a directory).
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// walkBatch is how many directory entries are read at once.
const walkBatch = 256
