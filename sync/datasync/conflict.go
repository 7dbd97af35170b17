package datasync

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

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
	if pl.p.po.Restore && pl.restorable(it, sc) {
		sc.localWalked = true // looked at, and not there: deleted locally
	}
	return decideIngress(*it, sc, pl.p.m.Prefix)
}

// restorable reports whether the file of an object that has not changed
// since it was downloaded is gone from the target (PassOptions.Restore).
// Only a file that does not exist counts: one that cannot be looked at is
// left alone.
func (pl *ingressPlanner) restorable(it *item, sc scope) bool {
	if sc.localWalked || pl.p.dir == nil || it.local != nil || it.remote == nil || it.row == nil ||
		it.row.Refused || !sameObject(it.row, it.remote) {
		return false
	}
	_, err := pl.p.dir.Root().Lstat(it.name)
	return err != nil && isNotExist(err)
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
	fi, err := p.dir.Lstat(rel)
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
//
// Last, the file's version mark (markVersion): a file ingress wrote whose
// size and mtime are still the ones it was given is no edit, even when no
// row says so (a crash between the rename and the journal's commit, or a
// lost journal).
func (p *pass) localEdit(row *journal.Record, rel string, st *stablefile.Stat, obj Object, mtime time.Time) bool {
	if st.Size == obj.Size && st.MtimeNs == mtime.UnixNano() {
		return false
	}
	known := row != nil && !row.Refused
	if known && !mayBeEdited(row, st) {
		return false
	}
	if known && isMD5(row.ETag) && st.Size == row.Size {
		if sum, err := fileMD5(p.dir.Root(), rel); err == nil && strings.EqualFold(sum, row.ETag) {
			return false // touched, not changed
		}
	}
	return !p.markedUnchanged(rel, st)
}

// versionXattr is the extended attribute ingress marks each file it writes
// with: "<ETag> <size> <mtime ns>".
const versionXattr = "user.flotta.version"

// markVersion marks the temporary file of a download (best effort: a file
// system without user extended attributes goes without).
func markVersion(f *os.File, obj Object, mtime time.Time) {
	_ = unix.Fsetxattr(int(f.Fd()), versionXattr, []byte(fmt.Sprintf("%s %d %d", obj.ETag, obj.Size, mtime.UnixNano())), 0)
}

// markedUnchanged reports whether the file at rel carries ingress's version
// mark and still has the size and mtime the mark records.
func (p *pass) markedUnchanged(rel string, st *stablefile.Stat) bool {
	f, err := p.dir.Root().OpenFile(rel, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, err := unix.Fgetxattr(int(f.Fd()), versionXattr, buf)
	if err != nil {
		return false
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) != 3 {
		return false
	}
	size, err1 := strconv.ParseInt(fields[1], 10, 64)
	mt, err2 := strconv.ParseInt(fields[2], 10, 64)
	return err1 == nil && err2 == nil && size == st.Size && mt == st.MtimeNs
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
	if fi, err := p.dir.Lstat(rel); err == nil && fi.Mode().IsRegular() {
		statInto(fi, rec)
	}
}

// statInto records the file's identity (mtime, ctime, inode) in rec.
func statInto(fi os.FileInfo, rec *journal.Record) {
	st := stablefile.StatOf(fi)
	rec.MtimeNs, rec.CtimeNs, rec.Inode = st.MtimeNs, st.CtimeNs, st.Inode
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
