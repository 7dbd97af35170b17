package datasync

import (
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// mayBeEdited reports whether the local file may not be what ingress wrote:
// its stat is not the one the row recorded after the download. A row with no
// stat (written before the stat was recorded) says nothing: maybe. The
// transfer confirms by content where it can (keepLocalEdit).
func mayBeEdited(r *journal.Record, l *stablefile.Stat) bool {
	if r.MtimeNs == 0 && r.Inode == 0 {
		return true
	}
	return !sameStat(r, l)
}

// ingressPlanner completes ingress items with what the decision needs beyond
// the march, then decides: whether an object listed earlier in the pass
// names a parent directory of this one, and, for an object that changed, the
// stat of its local file (a normal pass does not walk the directory).
type ingressPlanner struct {
	p *pass
	// open holds the names listed so far that may still be a parent
	// directory of a later name: in key order those are prefixes of the
	// current name, so it never holds more than a key has bytes.
	open []string
	last string
}

func (pl *ingressPlanner) decide(it *item, sc scope) decision {
	if it.remote != nil && it.name > pl.last { // a late (out of order) object is not tracked
		pl.last = it.name
		it.clash = pl.parentObject(it.name)
	}
	if it.local == nil && !sc.localWalked && pl.p.dir != nil && it.remote != nil && it.row != nil &&
		!it.row.Refused && !sameObject(it.row, it.remote) {
		pl.p.lookupLocal(it)
	}
	return decideIngress(*it, sc, pl.p.m.Prefix)
}

// parentObject returns the name of an object listed earlier that is a
// parent directory of name, "" when there is none, and remembers name.
func (pl *ingressPlanner) parentObject(name string) string {
	keep := pl.open[:0]
	for _, o := range pl.open {
		if strings.HasPrefix(name, o) { // else o is behind: no later name is under it
			keep = append(keep, o)
		}
	}
	pl.open = keep
	parent := ""
	for _, o := range pl.open {
		if strings.HasPrefix(name, o+"/") {
			parent = o
			break
		}
	}
	if _, err := keys.Rel(pl.p.m.Prefix, pl.p.lp+name); err == nil && parent == "" {
		pl.open = append(pl.open, name)
	}
	return parent
}

// refusal is the error of a job refused for its key.
func (p *pass) refusal(j job) error {
	key := j.it.remote.Key
	if _, err := keys.Rel(p.m.Prefix, key); err != nil {
		return err
	}
	if j.it.clash != "" {
		return keys.Clash(key, p.lp+j.it.clash)
	}
	return fmt.Errorf("%w %q", keys.ErrHostile, key)
}

// keepLocalEdit is called just before a download replaces the file at rel
// with obj (given mtime): when the file holds a version made on the device,
// it gives it a second name, a conflict copy beside it (a hard link made
// durable first: a writer holding the file open loses nothing), and returns
// that name; "" when there was nothing to keep.
func (p *pass) keepLocalEdit(j job, rel string, obj Object, mtime time.Time) (string, error) {
	fi, err := p.dir.Root().Lstat(rel)
	if isNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look at the local file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil
	}
	st := stablefile.StatOf(fi)
	if !p.localEdit(j.it.row, rel, &st, obj, mtime) {
		return "", nil
	}
	now := time.Now()
	return p.dir.KeepAside(rel, func(n int) string { return keys.ConflictName(rel, now, n) })
}

// localEdit reports whether the file (stat st) holds something ingress did
// not write: neither the version the row says was downloaded (same stat, or
// same content when the row's ETag is an MD5) nor the object about to be
// written (same size and the mtime it would get: a crash after the rename,
// before the journal recorded it). A file no row describes is the device's
// own (one identical to the object was adopted before the download).
func (p *pass) localEdit(row *journal.Record, rel string, st *stablefile.Stat, obj Object, mtime time.Time) bool {
	if st.Size == obj.Size && st.MtimeNs == mtime.UnixNano() {
		return false
	}
	if row == nil || row.Refused {
		return true
	}
	if !mayBeEdited(row, st) {
		return false
	}
	if isMD5(row.ETag) && st.Size == row.Size {
		if sum, err := fileMD5(p.dir.Root(), rel); err == nil && strings.EqualFold(sum, row.ETag) {
			return false // touched, not changed
		}
	}
	return true
}

// dropAside removes a conflict copy made for a download that then failed:
// the file is still there under its own name (the same file: checked).
func (p *pass) dropAside(rel, aside string) {
	if aside == "" {
		return
	}
	root := p.dir.Root()
	a, errA := root.Lstat(aside)
	f, errF := root.Lstat(rel)
	if errA == nil && errF == nil && os.SameFile(a, f) {
		_ = root.Remove(aside)
	}
}

// localStat completes the row of a downloaded or adopted file with the file's
// stat, which tells a later pass whether the device changed it.
func (p *pass) localStat(rel string, rec *journal.Record) {
	if fi, err := p.dir.Root().Lstat(rel); err == nil && fi.Mode().IsRegular() {
		st := stablefile.StatOf(fi)
		rec.MtimeNs, rec.CtimeNs, rec.Inode = st.MtimeNs, st.CtimeNs, st.Inode
	}
}

// noteConflictCopy logs, once per mapping, that conflict copies are not
// uploaded.
func (p *pass) noteConflictCopy(rel string) {
	if p.m.Direction != Egress {
		return
	}
	p.ms.mu.Lock()
	first := !p.ms.conflictNoted
	p.ms.conflictNoted = true
	p.ms.mu.Unlock()
	if first {
		p.e.log.Warn("conflict copies are not uploaded (rename the file to upload it)", zap.String("mapping", p.m.ID),
			zap.String("first", p.m.LocalDir+"/"+rel))
	}
}
