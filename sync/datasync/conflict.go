package datasync

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// mayBeEdited reports whether the local file may not be what ingress wrote:
// its stat is not the one the row recorded after the download. A row with no
// stat (written before the stat was recorded) says nothing: maybe. The
// planner reads the content where it can (checkLocalFile), decideLocal decides.
func mayBeEdited(r *journal.Record, l *stablefile.Stat) bool {
	if r.MtimeNs == 0 && r.Inode == 0 {
		return true
	}
	return !sameStat(r, l)
}

// ingressPlanner completes ingress items with what the decision needs beyond
// the march, then decides: whether an object listed earlier in the pass
// names a parent directory of this one; for an object to be written, the
// stat of its local file (a normal pass does not walk the directory); and,
// only when the journal does not vouch for that file, its MD5 (when it can
// settle something) and its version mark (needsLocalCheck). decideIngress
// then chooses alone, so that a dry run plans what a real pass does.
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
	if it.local == nil && !sc.localWalked && pl.p.dir != nil && it.remote != nil &&
		(it.row == nil || it.row.Refused || !sameObject(it.row, it.remote)) {
		pl.p.lookupLocal(it)
	}
	pl.p.checkLocalFile(it)
	if pl.p.po.Restore && pl.restorable(it, sc) {
		sc.localWalked = true // looked at, and not there: deleted locally
	}
	d := decideIngress(*it, sc, pl.p.m.Prefix)
	if (d.act == actDownload || d.act == actConflict || d.act == actAdopt) && pl.p.dir != nil {
		// A name to be written: is its path safe? (One openat2 of its
		// directory, kept open for the download.)
		n, err := pl.p.dir.Existing(it.name)
		it.checked, it.existing = err == nil, n
		if errors.Is(err, safefs.ErrUnsafe) {
			it.unsafe = err
			d = decideIngress(*it, sc, pl.p.m.Prefix)
		}
	}
	return d
}

// checkLocalFile reads what decideLocal needs of the local file, only when
// needsLocalCheck says so: its MD5 (with the helper the transfer uses) and
// its version mark.
func (p *pass) checkLocalFile(it *item) {
	check, sum := needsLocalCheck(*it)
	if !check || p.dir == nil {
		return
	}
	if sum {
		if s, err := fileMD5(p.dir.Root(), it.name); err == nil {
			it.localSum = s
		}
	}
	it.localMarked = p.markedUnchanged(it.name, it.local)
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
	if j.it.unsafe != nil {
		return j.it.unsafe
	}
	key := j.it.remote.Key
	if _, err := keys.Rel(p.m.Prefix, key); err != nil {
		return err
	}
	if j.it.clash != "" {
		return keys.Clash(key, p.lp+j.it.clash)
	}
	return fmt.Errorf("%w %q", keys.ErrHostile, key)
}

// errLocalChanged means the local file changed between the plan and the
// rename: it is kept as it is, and the next pass decides again.
var errLocalChanged = errors.New("local file changed since the plan")

// checkLocal is called just before a download replaces the file at rel: the
// file must still be the one the plan decided on (same stat, or still
// absent), else errLocalChanged and nothing is overwritten. For actConflict
// the file is then given a second name, a conflict copy beside it (a hard
// link made durable first: a writer holding the file open loses nothing),
// returned; "" when there was nothing to keep.
func (p *pass) checkLocal(j job, rel string) (string, error) {
	if err := p.sameLocal(j, rel); err != nil {
		return "", err
	}
	if j.d.act != actConflict || j.it.local == nil {
		return "", nil
	}
	now := time.Now()
	return p.dir.KeepAside(rel, func(n int) string { return keys.ConflictName(rel, now, n) })
}

// sameLocal checks that the local file at rel is as the plan saw it.
func (p *pass) sameLocal(j job, rel string) error {
	st, ok, _, err := statLocal(p.dir.Root(), rel)
	if err != nil {
		return fmt.Errorf("look at the local file: %w", err)
	}
	was := j.it.local
	if ok != (was != nil) || (ok && (st.Size != was.Size || st.MtimeNs != was.MtimeNs || st.CtimeNs != was.CtimeNs || st.Inode != was.Inode)) {
		return errLocalChanged
	}
	return nil
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
	memo := &p.mp.memo
	memo.mu.Lock()
	first := !memo.conflictNoted
	memo.conflictNoted = true
	memo.mu.Unlock()
	if first {
		p.e.log.Warn("conflict copies are not uploaded (rename the file to upload it)", zap.String("mapping", p.m.ID),
			zap.String("first", p.m.LocalDir+"/"+rel))
	}
}
