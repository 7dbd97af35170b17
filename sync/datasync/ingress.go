package datasync

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/directio"
	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// openIngress opens (creating) the target directory, removes the temporary
// files a crash left behind (once per engine), and prepares the disk guard.
func (p *pass) openIngress() error {
	dir, err := safefs.Open(p.m.Root, p.m.LocalDir, !p.po.DryRun)
	if p.po.DryRun && errors.Is(err, fs.ErrNotExist) {
		p.guard = p.newGuard(nil)
		return nil // nothing there yet
	}
	if err != nil {
		return fmt.Errorf("target directory: %w", err)
	}
	p.dir = dir
	memo := &p.mp.memo
	memo.mu.Lock()
	swept := memo.swept
	memo.mu.Unlock()
	if !swept && !p.po.DryRun {
		// Once per engine: remove temp files a crash left behind.
		n, err := dir.Sweep()
		if err != nil {
			return fmt.Errorf("sweep %s: %w", p.m.LocalDir, err)
		}
		if n > 0 {
			p.e.log.Info("removed temporary files left by an interrupted download", zap.String("mapping", p.m.ID), zap.Int("files", n))
		}
		memo.mu.Lock()
		memo.swept = true
		memo.mu.Unlock()
	}
	if p.w != nil {
		p.w.BeforeCommit = dir.SyncDirs
		p.group = newGroupCommit(p.e, dir)
	}
	p.guard = p.newGuard(dir)
	return nil
}

// newGuard returns a getter of the disk guard, made at the first download
// (it needs a walk of the directory).
func (p *pass) newGuard(dir *safefs.Dir) func() (*diskguard.Guard, error) {
	var (
		mu    sync.Mutex
		guard *diskguard.Guard
		gErr  error
	)
	return func() (*diskguard.Guard, error) {
		mu.Lock() // serialises the first walk
		defer mu.Unlock()
		if guard != nil || gErr != nil {
			return guard, gErr
		}
		used := int64(0)
		if dir != nil {
			var err error
			if used, err = dir.Usage(); err != nil {
				gErr = fmt.Errorf("measure %s: %w", p.m.LocalDir, err)
				return nil, gErr
			}
		}
		quota := p.m.MaxBytes
		if quota == 0 {
			quota = p.e.opts.DefaultQuota
		}
		free := p.e.hooks.free
		if dir == nil {
			// A dry run of a directory not made yet: the file system of its
			// nearest existing parent.
			free = func(path string) (uint64, uint64, error) {
				for path != filepath.Dir(path) {
					if _, err := os.Stat(path); err == nil {
						break
					}
					path = filepath.Dir(path)
				}
				return p.e.hooks.free(path)
			}
		}
		guard = diskguard.New(diskguard.Config{Path: p.m.LocalDir, Quota: quota, Used: used,
			MinFreeBytes: p.e.opts.MinFreeBytes, MinFreePercent: p.e.opts.MinFreePercent, Free: free})
		return guard, nil
	}
}

// download writes one object atomically into dir. It returns the bytes
// written, or -1 when the plan adopted the local file (actAdopt).
//
// Once the body is in the temporary file, the transfer slot is released
// (release) while the file is made durable and renamed, so that the disk's
// latency does not idle the network (see commitDownload).
//
// Just before the rename, the local file must still be what the plan saw
// (else errLocalChanged: nothing overwritten); for actConflict it is kept as
// a conflict copy first, named in the outcome (checkLocal).
func (p *pass) download(ctx context.Context, j job, release func()) outcome {
	n, rec, aside, err := p.downloadObject(ctx, j, release)
	return outcome{bytes: n, row: rec, conflict: aside, err: err}
}

func (p *pass) downloadObject(ctx context.Context, j job, release func()) (_ int64, _ *journal.Record, aside string, _ error) {
	dir := p.dir
	obj := j.it.remote0()
	obj.Key = p.lp + j.it.name
	rel, err := keys.Rel(p.m.Prefix, obj.Key)
	if err != nil {
		return 0, nil, "", err
	}
	existing := j.it.existing // the plan looked (checkLocal re-checks the file before the rename)
	if !j.it.checked {
		if existing, err = dir.Existing(rel); err != nil {
			return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, err)
		}
	}
	rec := journal.Record{Size: obj.Size, ETag: obj.ETag}
	if j.d.act == actAdopt {
		// The plan found the object's content in the file: recorded as is.
		if err := p.sameLocal(j, rel); err != nil {
			return 0, nil, "", fmt.Errorf("adopt %s: %w", obj.Key, err)
		}
		p.localStat(rel, &rec)
		return -1, &rec, "", nil
	}
	guard, err := p.guard()
	if err != nil {
		return 0, nil, "", err
	}
	res, err := guard.Reserve(obj.Size, existing)
	if err != nil {
		return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, err)
	}
	defer res.Release()

	// The version the plan decided on, or fail.
	bodies, ranges, err := p.openObject(ctx, obj)
	if err != nil {
		return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, movedOr(err))
	}
	body := bodies[0] // its response carries the object's metadata
	closeAll := func() {
		for _, b := range bodies {
			b.Close() // the connections go back to the pool now, not after the fsync
		}
	}
	defer closeAll()
	tmp, err := dir.Create(rel)
	if err != nil {
		return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, err)
	}
	var h hash.Hash
	src := io.LimitReader(body, obj.Size+1)
	if isMD5(obj.ETag) {
		h = md5.New() //nolint:gosec
		src = io.TeeReader(src, h)
	}
	var n int64
	switch {
	case ranges != nil:
		readers := make([]io.Reader, len(bodies))
		for i, b := range bodies {
			readers[i] = b
		}
		n, err = directio.CopyRanges(tmp.File, ranges, readers)
	case obj.Size >= directMin:
		n, err = directio.Copy(tmp.File, src)
	default:
		n, err = copyBuffered(tmp, src)
	}
	if err == nil && n != obj.Size {
		err = fmt.Errorf("got %d bytes, expected %d", n, obj.Size)
	}
	if err == nil && h != nil {
		if sum := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(sum, obj.ETag) {
			err = fmt.Errorf("MD5 %s differs from ETag %s", sum, obj.ETag)
		}
	}
	if err != nil {
		tmp.Abort()
		return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, movedOr(err))
	}
	mtime := fileMtime(body, obj.LastModified) // from the GET response: no request
	closeAll()
	markVersion(tmp.File, obj, mtime) // made durable with the file's data
	// As late as can be: the file is still what the plan decided on, and
	// the device's version is kept if the plan said so.
	checkLocal := func() error {
		var err error
		aside, err = p.checkLocal(j, rel)
		return err
	}
	if err := p.commitDownload(ctx, tmp, n, mtime, release, checkLocal); err != nil {
		p.dropAside(rel, aside)
		return 0, nil, "", fmt.Errorf("download %s: %w", obj.Key, err)
	}
	if fi := tmp.Placed(); fi != nil {
		statInto(fi, &rec)
	} else {
		p.localStat(rel, &rec)
	}
	res.Commit()
	return n, &rec, aside, nil
}

// A big object whose ETag is not its MD5 (a multipart upload: nothing to
// hash on the way) is fetched in parallelStreams ranges at once, each
// written at its place with direct I/O: one stream is bounded by one
// connection's and one core's speed.
const (
	parallelMin     = 64 << 20
	parallelStreams = 4
)

// openObject opens the object's body, or, for a big multipart object, one
// body per range (ranges then says which).
func (p *pass) openObject(ctx context.Context, obj Object) ([]io.ReadCloser, []directio.Range, error) {
	if obj.Size < parallelMin || isMD5(obj.ETag) {
		body, err := p.be.Get(ctx, p.m.Bucket, obj.Key, obj.ETag)
		if err != nil {
			return nil, nil, err
		}
		return []io.ReadCloser{body}, nil, nil
	}
	ranges := directio.Split(obj.Size, parallelStreams)
	bodies := make([]io.ReadCloser, 0, len(ranges))
	for _, r := range ranges {
		// Every range of the version the plan decided on (If-Match).
		b, err := p.be.GetRange(ctx, p.m.Bucket, obj.Key, obj.ETag, r.Off, r.Len)
		if err != nil {
			for _, b := range bodies {
				b.Close()
			}
			return nil, nil, err
		}
		bodies = append(bodies, b)
	}
	return bodies, ranges, nil
}

// directMin is the smallest download written with direct I/O: from two
// blocks on, its final fsync would otherwise wait for all of it to be
// written back (sync/directio).
const directMin = 2 * directio.Block

// movedOr turns "no such key" and "precondition failed" (the version the
// plan saw is gone) into errObjectMoved.
func movedOr(err error) error {
	if k := s3wire.Kind(err); k == s3wire.NotFound || k == s3wire.Precondition {
		return fmt.Errorf("%w: %w", errObjectMoved, err)
	}
	return err
}

func fileMD5(root *os.Root, rel string) (string, error) {
	f, err := root.Open(rel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New() //nolint:gosec
	if _, err := copyBuffered(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
