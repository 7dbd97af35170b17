package datasync

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// Growing files (a log held open by its writer) never settle: the normal
// upload refuses a file that changes while it is read, and no close event
// comes. A file whose upload failed as changed becomes "growing": from then
// on it is sent as a snapshot that really existed, the first Size bytes read
// once (an appended file's prefix never changes), at least every
// MaxStaleness (growLoop), and, when it is big, only its new bytes travel: the
// parts the file still starts with (MD5s kept in the journal, compared with
// the local file, never downloaded) are copied server-side from the object
// already there. A rotated log (app.log renamed app.log.1) is copied
// server-side from the object of its old name. See docs/growing-files.md.

// Defaults and sizes of growing-file uploads.
const (
	// DefaultMaxStaleness is how long a change of a growing file may wait.
	DefaultMaxStaleness = 30 * time.Second
	// GrowPartSize is the fixed part size of growing files uploaded in
	// parts: the unit that is either copied or sent.
	GrowPartSize = 8 << 20
	// GrowPartsFrom is the size from which a growing file is assembled from
	// parts; smaller ones are sent whole in one PUT.
	GrowPartsFrom = 2 * GrowPartSize
	// growTries is how many snapshots in a row may fail as torn (the file
	// rewritten, not appended, while read) before the failure is reported.
	growTries = 3
)

// growState is what the engine remembers of one growing file.
type growState struct {
	since time.Time       // the oldest change not in the bucket
	due   time.Time       // next snapshot
	last  stablefile.Stat // the file when the last snapshot was read (zero: none yet)
	torn  int             // snapshots in a row refused as changed
	held  bool            // the watcher saw it written to and held open
}

// snapshotting reports whether g's file goes up as a snapshot: once it has
// been held open (the watcher), has had a snapshot already, or has kept
// changing for the whole bound. A file that only changed while it was read
// once takes the normal path until then, so one that settles goes up whole.
func (g growState) snapshotting(now time.Time) bool {
	return g.held || g.last != (stablefile.Stat{}) || !now.Before(g.due)
}

// maxStaleness is the mapping's bound.
func (p *pass) maxStaleness() time.Duration {
	if p.m.MaxStaleness > 0 {
		return p.m.MaxStaleness
	}
	return p.e.opts.MaxStaleness
}

// markGrowing notes that name changed while it was read (normal upload).
func (p *pass) markGrowing(name string) {
	if p.e.opts.MaxStaleness < 0 {
		return
	}
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	if p.mp.memo.growing == nil {
		p.mp.memo.growing = map[string]*growState{}
	}
	if g := p.mp.memo.growing[name]; g == nil {
		first := p.started
		if f, ok := p.firstFailed(name); ok && f.Before(first) {
			first = f
		}
		// Its first snapshot is due once it has kept changing for the
		// whole bound: a file that settles before then goes up whole, as
		// any settled file does.
		p.mp.memo.growing[name] = &growState{since: first, due: first.Add(p.maxStaleness())}
	}
}

func (p *pass) growState(name string) (growState, bool) {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	g := p.mp.memo.growing[name]
	if g == nil {
		return growState{}, false
	}
	return *g, true
}

// uploadGrowing handles the uploads of growing files and of files the
// journal holds part hashes for (and rotated ones); ok is false for the
// others, which take the normal path.
func (p *pass) uploadGrowing(ctx context.Context, j job) (n int64, rec *journal.Record, err error, ok bool) {
	name := j.it.name
	l := j.it.local
	if l == nil {
		return 0, nil, nil, false
	}
	gs, growing := p.growState(name)
	growing = growing && gs.snapshotting(time.Now())
	partRow := j.it.row != nil && j.it.row.PartSize > 0
	replaced := partRow && j.it.row.Inode != l.Inode
	rotation := replaced || p.rotationSource(name, l.Inode) != "" || p.hasRotated(name)
	if !growing && !partRow && !rotation {
		return 0, nil, nil, false
	}
	if rotation {
		// Rotations are done one at a time: the renamed file's upload and
		// the new file's (which copies the renamed one first) must not
		// both copy.
		p.mp.memo.rotMu.Lock()
		defer p.mp.memo.rotMu.Unlock()
		if rr, done := p.takeRotated(name, *l); done {
			return -1, rr, nil, true
		}
	}
	if replaced {
		p.copyRotatedFirst(ctx, name, j.it.row.Inode)
	}
	start := time.Now()
	n, rec, err = p.snapshot(ctx, j)
	p.mp.memo.mu.Lock()
	g := p.mp.memo.growing[name]
	switch {
	case err == nil && g != nil:
		st := stablefile.Stat{Size: rec.Size, MtimeNs: rec.MtimeNs, CtimeNs: rec.CtimeNs, Inode: rec.Inode}
		g.since, g.last, g.torn = start, st, 0
		// The next snapshot starts early enough to land within the bound
		// (the upload's time and growLoop's tick taken off).
		g.due = start.Add(max(p.maxStaleness()-time.Since(start)-time.Second, time.Second))
	case errors.Is(err, stablefile.ErrChanged) && g != nil:
		g.torn++
		g.due = time.Now()
		if g.torn >= growTries {
			g.torn = 0
			err = fmt.Errorf("%w %d times in a row, rewritten rather than appended while being read: not uploaded torn (last: %v)", errTorn, growTries, err)
		}
	case err != nil && g != nil:
		// The retry backoff and the passes take it from here; growLoop
		// comes back at the next bound, not every second.
		g.due = time.Now().Add(p.maxStaleness())
	}
	p.mp.memo.mu.Unlock()
	return n, rec, err, true
}

// errTorn reports a growing file that kept changing in the middle.
var errTorn = errors.New("file changed")

// snapshot uploads the first Size bytes of the file, read once.
func (p *pass) snapshot(ctx context.Context, j job) (int64, *journal.Record, error) {
	name := j.it.name
	key := keys.Key(p.m.Prefix, name)
	r, err := stablefile.OpenIn(p.dir.Root(), name, GrowPartSize)
	if err != nil {
		return 0, nil, fmt.Errorf("upload %s: %w", key, err)
	}
	defer r.Close()
	r.AsPrefix()
	st := r.Stat()
	rec := &journal.Record{Size: st.Size, MtimeNs: st.MtimeNs, CtimeNs: st.CtimeNs, Inode: st.Inode}
	meta := map[string]string{}
	if mt, ok := formatMtime(st.Mtime()); ok {
		meta[metaMtime] = mt
	}
	pa, canParts := assemblerOf(p.be)
	if st.Size < GrowPartsFrom || !canParts {
		n, err := p.snapshotWhole(ctx, r, key, rec, meta)
		return n, rec, err
	}
	src := p.copySource(j, r)
	for {
		ps := int64(GrowPartSize)
		if src.key != "" {
			ps = src.row.PartSize // the parts copied keep their size
		}
		meta[metaPartSize] = strconv.FormatInt(ps, 10)
		sent, saved, err := p.assemble(ctx, pa, r, key, rec, meta, src, ps)
		if err != nil && src.key != "" && (errors.Is(err, ErrPartCopyRefused) || errors.Is(err, errCopySourceMoved)) {
			if errors.Is(err, ErrPartCopyRefused) {
				p.e.refusePartCopy()
				p.e.log.Info("the server refuses part copies: growing files are sent whole", zap.String("mapping", p.m.ID), zap.Error(err))
			}
			src = copySrc{} // send everything
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("upload %s: %w", key, err)
		}
		if err := r.Verify(); err != nil {
			return 0, nil, fmt.Errorf("upload %s: %w", key, err)
		}
		p.savedByPartCopy.Add(saved)
		p.noteInode(name, st.Inode)
		p.confirmSnapshot(name, st, rec)
		return sent, rec, nil
	}
}

// snapshotWhole sends a small prefix in one PUT: read once into memory,
// hashed, read again and compared (a rewrite in the middle while the first
// read ran shows as a difference), and sent with its MD5.
func (p *pass) snapshotWhole(ctx context.Context, r *stablefile.Reader, key string, rec *journal.Record, meta map[string]string) (int64, error) {
	buf := make([]byte, r.Size())
	if _, err := io.ReadFull(r.Unchecked(), buf); err != nil {
		return 0, fmt.Errorf("upload %s: read: %w", key, err)
	}
	sum := md5.Sum(buf) //nolint:gosec
	again := md5.New()  //nolint:gosec
	if _, err := copyBuffered(again, r.Unchecked()); err != nil {
		return 0, fmt.Errorf("upload %s: read: %w", key, err)
	}
	if !bytes.Equal(again.Sum(nil), sum[:]) {
		return 0, fmt.Errorf("upload %s: %w (rewritten while being read)", key, stablefile.ErrChanged)
	}
	if err := r.Verify(); err != nil {
		return 0, fmt.Errorf("upload %s: %w", key, err)
	}
	etag, err := p.be.Put(ctx, p.m.Bucket, key, bytes.NewReader(buf), int64(len(buf)), PutOptions{Meta: meta})
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", key, err)
	}
	if want := hex.EncodeToString(sum[:]); isMD5(etag) && !strings.EqualFold(etag, want) {
		return 0, fmt.Errorf("upload %s: server holds ETag %s, local MD5 is %s: corrupted in transit", key, etag, want)
	}
	rec.ETag = etag
	p.confirmSnapshot(r.Path(), r.Stat(), rec)
	return int64(len(buf)), nil
}

// confirmSnapshot marks the row confirmed for retention (the server took
// the bytes with their MD5s, and the ETag is theirs) only when the file is
// not known to be growing and is still exactly the version read: a log its
// writer holds open must never be removed after upload.
func (p *pass) confirmSnapshot(name string, st stablefile.Stat, rec *journal.Record) {
	if _, growing := p.growState(name); growing {
		return
	}
	fi, err := p.dir.Root().Lstat(name)
	if err != nil {
		return
	}
	rec.Confirmed = stablefile.StatOf(fi) == st
}

// copySrc is the object whose parts a new upload may copy.
type copySrc struct {
	key  string
	row  journal.Record
	self bool // the object of the same key (growth), not a rotation
}

// copySource picks the object to copy parts from: this key's object when
// its row has part hashes (or it was uploaded whole in parts, and the file
// still starts with it: its ETag is the file's prefix cut at the normal
// upload's part size), else the object of the name this file had before it
// was renamed (rotation); none when the server refuses part copies.
func (p *pass) copySource(j job, fr *stablefile.Reader) copySrc {
	st := fr.Stat()
	if p.e.partCopyRefused() {
		return copySrc{}
	}
	if r := j.it.row; r != nil && r.PartSize > 0 && len(r.PartMD5) > 0 && r.ETag != "" {
		return copySrc{key: keys.Key(p.m.Prefix, j.it.name), row: *r, self: true}
	}
	if r := j.it.row; r != nil && r.PartSize == 0 && r.Size > singlePutMax && r.Size <= st.Size && strings.Contains(r.ETag, "-") {
		if _, ps, _, err := minio.OptimalPartInfo(r.Size, 0); err == nil {
			if md5s, err := partMD5s(io.NewSectionReader(fr.Unchecked().(io.ReaderAt), 0, r.Size), r.Size, ps); err == nil &&
				strings.EqualFold(composedETag(md5s), r.ETag) {
				row := *r
				row.PartSize, row.PartMD5 = ps, md5s
				return copySrc{key: keys.Key(p.m.Prefix, j.it.name), row: row, self: true}
			}
		}
	}
	old := p.rotationSource(j.it.name, st.Inode)
	if old == "" {
		return copySrc{}
	}
	recs, found := make([]journal.Record, 1), make([]bool, 1)
	if p.e.jr.Lookup(p.m.ID, journal.Files, []string{old}, recs, found) != nil || !found[0] {
		return copySrc{}
	}
	r := recs[0]
	if r.Inode != st.Inode || r.PartSize <= 0 || len(r.PartMD5) == 0 || r.ETag == "" {
		return copySrc{}
	}
	return copySrc{key: keys.Key(p.m.Prefix, old), row: r}
}

// partMD5s returns the MD5 of each part of r cut at partSize.
func partMD5s(r io.Reader, size, partSize int64) ([][16]byte, error) {
	var out [][16]byte
	for off := int64(0); off < size; off += partSize {
		h := md5.New() //nolint:gosec
		if _, err := copyBuffered(h, io.LimitReader(r, min(partSize, size-off))); err != nil {
			return nil, err
		}
		var s [16]byte
		copy(s[:], h.Sum(nil))
		out = append(out, s)
	}
	return out, nil
}

// assemble uploads the file's prefix as parts of ps bytes: the leading
// parts whose MD5 matches src's row are copied from src's object, the rest
// sent (each with its MD5, read ahead: the server refuses other bytes). It
// fills rec's ETag and part hashes, and returns the bytes sent and saved.
func (p *pass) assemble(ctx context.Context, pa partAssembler, r *stablefile.Reader, key string, rec *journal.Record,
	meta map[string]string, src copySrc, ps int64) (sent, saved int64, err error) {
	size := r.Size()
	nparts := int((size + ps - 1) / ps)
	if nparts > 10000 {
		return 0, 0, fmt.Errorf("%d parts of %d bytes: more than S3 allows", nparts, ps)
	}
	// Full parts of the source object that may be reused.
	reusable := 0
	if src.key != "" {
		reusable = min(int(src.row.Size/ps), len(src.row.PartMD5), int(size/ps))
	}
	md5s := make([][16]byte, nparts)
	parts := make([]Part, nparts)
	copying := true
	for i := range nparts {
		off := int64(i) * ps
		n := min(ps, size-off)
		h := md5.New() //nolint:gosec
		if _, err := copyBuffered(h, io.NewSectionReader(r.Unchecked().(io.ReaderAt), off, n)); err != nil {
			return 0, 0, fmt.Errorf("read: %w", err)
		}
		copy(md5s[i][:], h.Sum(nil))
		if copying && i < reusable && md5s[i] == src.row.PartMD5[i] {
			parts[i] = Part{Size: n, MD5: md5s[i], CopyKey: src.key, CopyETag: src.row.ETag, CopyOff: off}
			saved += n
			continue
		}
		copying = false
		parts[i] = Part{Size: n, MD5: md5s[i], Body: io.NewSectionReader(r, off, n)}
		sent += n
	}
	if src.key != "" && saved == 0 {
		src = copySrc{} // nothing in common
	}
	etag, err := pa.PutParts(ctx, p.m.Bucket, key, parts, meta)
	var er minio.ErrorResponse
	if errors.As(err, &er) && er.Code == "BadDigest" {
		// The bytes sent are not those hashed a moment before: rewritten
		// in the middle. The upload was aborted; try again.
		return 0, 0, fmt.Errorf("%w (a part differs from its read ahead): %w", stablefile.ErrChanged, err)
	}
	if err != nil {
		return 0, 0, err
	}
	if want := composedETag(md5s); !strings.EqualFold(etag, want) {
		return 0, 0, fmt.Errorf("server composed ETag %s, the parts make %s", etag, want)
	}
	rec.ETag, rec.PartSize, rec.PartMD5 = etag, ps, md5s
	return sent, saved, nil
}

// noteInode remembers which name an inode was uploaded under in parts, to
// recognise it when it is renamed (rotation).
func (p *pass) noteInode(name string, ino uint64) {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	if p.mp.memo.byInode == nil {
		p.mp.memo.byInode = map[uint64]string{}
	}
	p.mp.memo.byInode[ino] = name
}

// rotationSource returns the other name inode was last uploaded under, ""
// when none (or the same name).
func (p *pass) rotationSource(name string, ino uint64) string {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	old := p.mp.memo.byInode[ino]
	if old == name || path.Dir(old) != path.Dir(name) {
		return ""
	}
	return old
}

func (p *pass) hasRotated(name string) bool {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	_, ok := p.mp.memo.rotated[name]
	return ok
}

// takeRotated returns the row of a rotated file already copied to its new
// key in this run (when the file is still as copied).
func (p *pass) takeRotated(name string, l stablefile.Stat) (*journal.Record, bool) {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	r, ok := p.mp.memo.rotated[name]
	if !ok {
		return nil, false
	}
	delete(p.mp.memo.rotated, name)
	if !sameStat(&r, &l) {
		return nil, false
	}
	return &r, true
}

// refusePartCopy and partCopyRefused remember, per endpoint, a server that
// does not copy parts.
func (e *Engine) refusePartCopy() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noPartCopy = endpointKey(e.ep)
}

func (e *Engine) partCopyRefused() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.noPartCopy != "" && e.noPartCopy == endpointKey(e.ep)
}

func endpointKey(ep *Endpoint) string {
	if ep == nil {
		return ""
	}
	return ep.Host + ":" + strconv.Itoa(ep.Port)
}

// growLoop runs, while Run runs, the snapshots of growing files when they
// are due: one Changed per mapping with the due names. A file found as it
// was at its last snapshot stopped growing and is forgotten (its next change
// comes through the watcher or a pass, like any file's).
func (e *Engine) growLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		list, _ := e.mappings(nil)
		for _, mp := range list {
			names := mp.dueGrowing()
			if len(names) == 0 {
				continue
			}
			if err := e.Changed(ctx, mp.id, names); err != nil && ctx.Err() == nil {
				e.log.Debug("snapshot of growing files failed", zap.String("mapping", mp.id), zap.Error(err))
			}
		}
	}
}

// dueGrowing returns the growing files of mp whose snapshot is due.
func (mp *mapping) dueGrowing() []string {
	m := mp.config()
	ms := &mp.memo
	ms.mu.Lock()
	var due []string
	now := time.Now()
	for name, g := range ms.growing {
		if g.due.After(now) {
			continue
		}
		due = append(due, name)
	}
	ms.mu.Unlock()
	if m.Direction != Egress {
		return nil
	}
	out := due[:0]
	for _, name := range due {
		fi, err := os.Lstat(filepath.Join(m.LocalDir, filepath.FromSlash(name)))
		ok := err == nil && fi.Mode().IsRegular()
		var st stablefile.Stat
		if ok {
			st = stablefile.StatOf(fi)
		}
		ms.mu.Lock()
		g := ms.growing[name]
		switch {
		case g == nil:
		case err != nil || !ok:
			delete(ms.growing, name) // gone: the pass prunes it
		case g.last != (stablefile.Stat{}) && st.Size == g.last.Size && st.MtimeNs == g.last.MtimeNs && st.Inode == g.last.Inode:
			delete(ms.growing, name) // stopped growing, and all of it is in the bucket
		default:
			out = append(out, name)
		}
		ms.mu.Unlock()
	}
	return out
}

// oldestUnsent is when the oldest change of ms not in the bucket was made:
// growing files since their last snapshot started, pending files since they
// were first seen (as st, its published status, says); zero when none.
func (mp *mapping) oldestUnsent(st *MappingStatus) time.Time {
	var oldest time.Time
	mp.memo.mu.Lock()
	for _, g := range mp.memo.growing {
		if oldest.IsZero() || g.since.Before(oldest) {
			oldest = g.since
		}
	}
	mp.memo.mu.Unlock()
	if p := st.OldestPending; !p.IsZero() && st.Pending > 0 && (oldest.IsZero() || p.Before(oldest)) {
		oldest = p
	}
	return oldest
}

// copyRotatedFirst runs before name's object is replaced by a new file: when
// the file it held (inode ino) is now under another name of the same
// directory (logrotate's rename), that name's object is made first, from
// name's object, so that the copy finds it still there. Best effort: the
// renamed file's own upload does the work otherwise.
func (p *pass) copyRotatedFirst(ctx context.Context, name string, ino uint64) {
	if p.rotationSourceOf(ino) != name {
		return
	}
	dir := path.Dir(name)
	entries, err := fs.ReadDir(p.dir.Root().FS(), dir)
	if err != nil || len(entries) > 4096 {
		return
	}
	for _, de := range entries {
		other := path.Join(dir, de.Name())
		if other == name || !de.Type().IsRegular() {
			continue
		}
		st, ok, _, err := statLocal(p.dir.Root(), other)
		if err != nil || !ok || st.Inode != ino {
			continue
		}
		n, rec, err := p.snapshot(ctx, job{it: item{name: other, local: &st}, d: decision{actUpload, "rotated"}})
		if err != nil {
			p.e.log.Debug("server-side copy of a rotated file failed", zap.String("mapping", p.m.ID), zap.String("path", other), zap.Error(err))
			return
		}
		// Recorded now, as the renamed file's own upload would be (its own
		// job, later in the pass, finds it done: see takeRotated).
		p.tell(note{j: job{it: item{name: other, local: &st}, d: decision{actUpload, "rotated"}}, out: outcome{bytes: n, row: rec, ahead: true}})
		p.mp.memo.mu.Lock()
		if p.mp.memo.rotated == nil {
			p.mp.memo.rotated = map[string]journal.Record{}
		}
		p.mp.memo.rotated[other] = *rec
		p.mp.memo.mu.Unlock()
		return
	}
}

func (p *pass) rotationSourceOf(ino uint64) string {
	p.mp.memo.mu.Lock()
	defer p.mp.memo.mu.Unlock()
	return p.mp.memo.byInode[ino]
}

// watchMaxWait is how long the watcher of mapping id lets a file held open
// be written to before it reports it (watch.Options.MaxWait): the mapping's
// staleness less a margin for the snapshot's upload. Zero when off.
func (e *Engine) watchMaxWait(mp *mapping) time.Duration {
	d := e.opts.MaxStaleness
	if ms := mp.config().MaxStaleness; ms > 0 {
		d = ms
	}
	if d <= 0 {
		return 0
	}
	return max(d-min(d/4, 5*time.Second), time.Second)
}

// newlyGrowing marks the files the watcher found written to and not closed
// as growing, and returns those not growing before (the others are growLoop's).
func (e *Engine) newlyGrowing(id string, names []string) []string {
	if len(names) == 0 || e.opts.MaxStaleness < 0 {
		return nil
	}
	list, err := e.mappings([]string{id})
	if err != nil {
		return nil
	}
	mp := list[0]
	wait := max(e.watchMaxWait(mp), time.Second)
	ms := &mp.memo
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.growing == nil {
		ms.growing = map[string]*growState{}
	}
	var out []string
	now := time.Now()
	for _, n := range names {
		if ms.growing[n] != nil {
			continue
		}
		// Its first unsent write is at least MaxWait old.
		ms.growing[n] = &growState{since: now.Add(-wait), due: now.Add(wait), held: true} // this batch sends it
		out = append(out, n)
	}
	return out
}
