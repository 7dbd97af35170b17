package datasync

import (
	"iter"
	"strings"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// item is what the engine knows of one name (a path relative to the
// mapping's directory, which is also the object key without the prefix) on
// the three sides: the local file, the journal row, the remote object. A nil
// side is absent, or was not looked at (see scope).
type item struct {
	name   string
	local  *stablefile.Stat
	row    *journal.Record
	remote *Object
	// clash (ingress, set by the planner) names an object of the same
	// listing that is a parent directory of this one ("a" for "a/b").
	clash string
	// localSum and localMarked (ingress, set by the planner only when the
	// decision must compare the local file with the journal or the object):
	// the file's MD5 (hex, "" when not read), and whether it carries
	// ingress's version mark with its current size and mtime.
	localSum    string
	localMarked bool
	// checked, unsafe and existing (ingress, set by the planner for a name
	// to be written): whether its path was looked at; why it cannot be
	// written safely (a symlinked parent, a parent that is a file, a
	// directory where the file goes), nil when it can; and the size of the
	// file it replaces (the disk guard's reservation).
	checked  bool
	unsafe   error
	existing int64
}

// scope says which sides a pass looked at, so that absence means something.
type scope struct {
	localWalked  bool // local nil: there is no file
	remoteListed bool // remote nil: there is no object
	// confirm (egress): the mapping's retention may remove files, so an
	// unconfirmed upload is confirmed (actConfirm).
	confirm bool
}

// rowBatch is how many journal rows are read per short read transaction.
const rowBatch = 256

// rowCursor reads a mapping's journal rows in key order, a batch at a time.
type rowCursor struct {
	jr      *journal.DB
	mapping string
	prefix  string // rows of the scope start with it (journal key = keyPrefix + name)
	strip   string // journal keys = strip + name
	buf     []journal.Entry
	i       int
	after   string
	done    bool
	err     error
}

func (c *rowCursor) peek() (journal.Entry, bool) {
	if c.i < len(c.buf) {
		return c.buf[c.i], true
	}
	if c.done || c.err != nil {
		return journal.Entry{}, false
	}
	c.buf, c.err = c.jr.Scan(c.mapping, journal.Files, c.prefix, c.after, rowBatch, c.buf[:0])
	c.i = 0
	if len(c.buf) < rowBatch {
		c.done = true
	}
	if len(c.buf) == 0 {
		return journal.Entry{}, false
	}
	c.after = c.buf[len(c.buf)-1].Key
	return c.buf[0], true
}

// march walks up to three key-ordered streams in lock step (as rclone's
// fs/march does with two) and yields one item per name. Any stream may be
// nil (rows nil: no journal). A remote listing that is not in key order (some servers list
// depth-first by directory) is tolerated: an object that arrives after its
// name was passed is yielded on its own with late set, for the caller to
// look the other sides up.
func march(local iter.Seq[localFile], rows *rowCursor, remote iter.Seq2[Object, error], lp string,
	yield func(it item, late bool) bool) error {
	var (
		nextLocal             func() (localFile, bool)
		nextRemote            func() (Object, error, bool)
		lf                    localFile
		haveLocal, haveRemote bool
		obj                   Object
		remoteErr             error
		last                  string // last name yielded
		started               bool
	)
	if rows == nil {
		rows = &rowCursor{done: true}
	}
	if local != nil {
		var stop func()
		nextLocal, stop = iter.Pull(local)
		defer stop()
		lf, haveLocal = nextLocal()
	}
	pullRemote := func() {
		for {
			var err error
			obj, err, haveRemote = nextRemote()
			if !haveRemote {
				return
			}
			if err != nil {
				remoteErr, haveRemote = err, false
				return
			}
			if strings.HasSuffix(obj.Key, "/") && obj.Size == 0 || !strings.HasPrefix(obj.Key, lp) {
				continue // a "directory" marker (one with content is refused)
			}
			return
		}
	}
	if remote != nil {
		var stop func()
		nextRemote, stop = iter.Pull2(remote)
		defer stop()
		pullRemote()
	}
	for {
		row, haveRow := rows.peek()
		if rows.err != nil {
			return rows.err
		}
		if remoteErr != nil {
			return remoteErr
		}
		rowName := ""
		if haveRow {
			rowName = strings.TrimPrefix(row.Key, rows.strip)
		}
		remoteName := ""
		if haveRemote {
			remoteName = obj.Key[len(lp):]
			if started && remoteName <= last {
				o := obj
				if !yield(item{name: remoteName, remote: &o}, true) {
					return nil
				}
				pullRemote()
				continue
			}
		}
		// The smallest name among the heads.
		name, any := "", false
		for _, c := range []struct {
			ok bool
			n  string
		}{{haveLocal, lf.name}, {haveRow, rowName}, {haveRemote, remoteName}} {
			if c.ok && (!any || c.n < name) {
				name, any = c.n, true
			}
		}
		if !any {
			return nil
		}
		it := item{name: name}
		if haveLocal && lf.name == name {
			st := lf.stat
			it.local = &st
			lf, haveLocal = nextLocal()
		}
		if haveRow && rowName == name {
			r := row.Record
			it.row = &r
			rows.i++
		}
		if haveRemote && remoteName == name {
			o := obj
			it.remote = &o
			pullRemote()
		}
		last, started = name, true
		if !yield(it, false) {
			return nil
		}
	}
}
