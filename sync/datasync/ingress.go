package datasync

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// downJob is an object the plan decided to download.
type downJob struct {
	obj     minio.ObjectInfo
	rel     string
	known   bool // the journal has a record of an earlier version
	refused error
}

// ingress lists the prefix and downloads objects that differ from the journal.
func (p *pass) ingress(ctx context.Context) error {
	dir, err := safefs.Open(p.m.Root, p.m.LocalDir, true)
	if err != nil {
		return fmt.Errorf("target directory: %w", err)
	}
	defer dir.Close()
	p.ms.mu.Lock()
	swept := p.ms.swept
	p.ms.mu.Unlock()
	if !swept {
		// Once per engine: remove temp files a crash left behind.
		n, err := dir.Sweep()
		if err != nil {
			return fmt.Errorf("sweep %s: %w", p.m.LocalDir, err)
		}
		if n > 0 {
			p.e.log.Info("removed temporary files left by an interrupted download", zap.String("mapping", p.m.ID), zap.Int("files", n))
		}
		p.ms.mu.Lock()
		p.ms.swept = true
		p.ms.mu.Unlock()
	}

	w := p.e.jr.NewWriter(p.m.ID, journal.Files)
	w.BeforeCommit = dir.SyncDirs
	jobs := make(chan downJob)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var planErr error
	go func() {
		defer close(jobs)
		planErr = p.planIngress(ctx, jobs)
	}()
	var guard *diskguard.Guard // made at the first download: it needs a walk
	var guardErr error
	var guardMu sync.Mutex
	getGuard := func() (*diskguard.Guard, error) {
		guardMu.Lock() // serialises the first walk
		defer guardMu.Unlock()
		if guard == nil && guardErr == nil {
			used, err := dir.Usage()
			if err != nil {
				guardErr = fmt.Errorf("measure %s: %w", p.m.LocalDir, err)
			} else {
				quota := p.m.MaxBytes
				if quota == 0 {
					quota = p.e.opts.DefaultQuota
				}
				guard = diskguard.New(diskguard.Config{Path: p.m.LocalDir, Quota: quota, Used: used,
					MinFreeBytes: p.e.opts.MinFreeBytes, MinFreePercent: p.e.opts.MinFreePercent, Free: p.e.free})
			}
		}
		return guard, guardErr
	}

	executeReleasing(ctx, p.e, jobs, func(j downJob, release func()) {
		if j.refused != nil {
			p.refused(j, w, true)
			return
		}
		if ctx.Err() != nil {
			p.stats.addPending()
			return
		}
		n, err := p.download(ctx, dir, j, getGuard, w, release)
		switch {
		case err == nil:
			p.succeeded(j.obj.Key)
			if n >= 0 {
				p.stats.moved(n)
			}
		case errors.Is(err, safefs.ErrUnsafe):
			j.refused = err
			p.refused(j, w, true)
		case errors.Is(err, diskguard.ErrQuota) || errors.Is(err, diskguard.ErrFreeSpace):
			j.refused = err
			p.refused(j, w, false)
		case serverWide(err):
			p.stats.fail(err)
			p.failed(j.obj.Key, true)
			cancel(err)
		default:
			p.stats.fail(err)
			p.failed(j.obj.Key, false)
			p.e.log.Warn("download failed", zap.String("mapping", p.m.ID), zap.String("key", j.obj.Key), zap.Error(err))
		}
	})
	flushErr := w.Flush()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("ingress %s: %w", p.m.ID, cause)
	}
	if planErr != nil {
		return planErr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if flushErr != nil {
		return fmt.Errorf("write journal: %w", flushErr)
	}
	return nil
}

// refused reports an object that will not be written. Refusals for the key
// or path are remembered in the journal, so they are logged once per version
// of the object; disk guard refusals are retried every pass.
func (p *pass) refused(j downJob, w *journal.Writer, remember bool) {
	p.stats.refuse(j.refused)
	if remember {
		w.Add(journal.Entry{Key: j.obj.Key, Record: journal.Record{Size: j.obj.Size, ETag: j.obj.ETag, Refused: true}})
	}
	p.e.log.Warn("object not written", zap.String("mapping", p.m.ID), zap.String("key", j.obj.Key), zap.Error(j.refused))
}

// listBatch is how many listed objects are looked up in the journal at once.
const listBatch = 256

// planIngress streams the listing (one page in memory at a time) and sends the
// objects whose ETag or size differ from the journal.
func (p *pass) planIngress(ctx context.Context, jobs chan<- downJob) error {
	var (
		objs  = make([]minio.ObjectInfo, 0, listBatch)
		ks    = make([]string, 0, listBatch)
		recs  = make([]journal.Record, listBatch)
		found = make([]bool, listBatch)
	)
	send := func(j downJob) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	decide := func() error {
		if len(objs) == 0 {
			return nil
		}
		if err := p.e.jr.Lookup(p.m.ID, journal.Files, ks, recs, found); err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		for i, obj := range objs {
			r := recs[i]
			same := found[i] && r.ETag == obj.ETag && r.Size == obj.Size
			switch {
			case same && r.Refused:
				p.stats.refuse(fmt.Errorf("%w %q (refused earlier)", keys.ErrHostile, obj.Key))
			case same:
				// unchanged since downloaded
			case !p.due(obj.Key):
				p.stats.addPending()
			default:
				j := downJob{obj: obj, known: found[i] && !r.Refused}
				j.rel, j.refused = keys.Rel(p.m.Prefix, obj.Key)
				if err := send(j); err != nil {
					return err
				}
			}
		}
		objs, ks = objs[:0], ks[:0]
		return nil
	}
	lp := keys.ListPrefix(p.m.Prefix)
	for obj := range p.client.ListObjects(ctx, p.m.Bucket, minio.ListObjectsOptions{Prefix: lp, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("list %s/%s: %w", p.m.Bucket, lp, obj.Err)
		}
		if strings.HasSuffix(obj.Key, "/") {
			continue // a "directory" marker
		}
		objs = append(objs, obj)
		ks = append(ks, obj.Key)
		if len(objs) == listBatch {
			if err := decide(); err != nil {
				return err
			}
		}
	}
	return decide()
}

// download writes one object atomically into dir. It returns the bytes
// written, or -1 when an identical local file was adopted.
//
// Once the body is in the temporary file, the transfer slot is released
// (release) while the file is fsynced and renamed, so that the disk's latency
// does not idle the network; a commit slot bounds the files in that state.
func (p *pass) download(ctx context.Context, dir *safefs.Dir, j downJob,
	getGuard func() (*diskguard.Guard, error), w *journal.Writer, release func()) (int64, error) {
	obj := j.obj
	existing, err := dir.Existing(j.rel)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	rec := journal.Record{Size: obj.Size, ETag: obj.ETag}
	if !j.known && existing == obj.Size && isMD5(obj.ETag) {
		// No journal of it (first pass, lost journal): keep an identical file.
		if sum, err := fileMD5(dir.Root(), j.rel); err == nil && strings.EqualFold(sum, obj.ETag) {
			w.Add(journal.Entry{Key: obj.Key, Record: rec})
			return -1, nil
		}
	}
	guard, err := getGuard()
	if err != nil {
		return 0, err
	}
	res, err := guard.Reserve(obj.Size, existing)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	defer res.Release()

	var opts minio.GetObjectOptions
	if obj.ETag != "" {
		_ = opts.SetMatchETag(obj.ETag) // the version we decided on, or fail
	}
	body, err := p.client.GetObject(ctx, p.m.Bucket, obj.Key, opts)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	defer body.Close()
	tmp, err := dir.Create(j.rel)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	var h hash.Hash
	var dst io.Writer = tmp
	if isMD5(obj.ETag) {
		h = md5.New() //nolint:gosec
		dst = io.MultiWriter(tmp, h)
	}
	n, err := copyBuffered(dst, io.LimitReader(body, obj.Size+1))
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
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	body.Close() // the connection goes back to the pool now, not after the fsync
	select {
	case p.e.commits <- struct{}{}: // taken before the transfer slot is given up: bounded
	case <-ctx.Done():
		tmp.Abort()
		return 0, fmt.Errorf("download %s: %w", obj.Key, ctx.Err())
	}
	release()
	err = tmp.Commit(obj.LastModified)
	<-p.e.commits
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", obj.Key, err)
	}
	res.Commit()
	w.Add(journal.Entry{Key: obj.Key, Record: rec})
	return n, nil
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
