package datasync

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// User metadata stored with every uploaded object (keys come back
// canonicalised by some servers: compare them case-insensitively).
const (
	metaSHA256   = "Flotta-Sha256"    // single PUTs
	metaPartSize = "Flotta-Part-Size" // multipart uploads: bytes per part
	metaMtime    = "Flotta-Mtime"
)

// upJob is a local file the plan decided to upload.
type upJob struct {
	rel  string
	seen stablefile.Stat // as the walk saw it
}

// egress walks the local directory and uploads new and changed files. When
// adopt is set (no journal yet) the remote prefix is listed first so that
// objects already holding the same content are adopted, not uploaded again.
func (p *pass) egress(ctx context.Context, adopt bool) error {
	dir, err := safefs.Open(p.m.Root, p.m.LocalDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing written yet: normal
	}
	if err != nil {
		return fmt.Errorf("source directory: %w", err)
	}
	defer dir.Close()
	if adopt {
		if err := p.listForAdoption(ctx); err != nil {
			return err
		}
	}

	w := p.e.jr.NewWriter(p.m.ID, journal.Files)
	jobs := make(chan upJob)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var walkErr error
	go func() {
		defer close(jobs)
		walkErr = p.planEgress(ctx, dir.Root(), jobs)
	}()
	execute(ctx, p.e, jobs, func(j upJob) {
		if ctx.Err() != nil {
			p.stats.addPending()
			return
		}
		n, err := p.upload(ctx, dir.Root(), j, adopt, w)
		key := keys.Key(p.m.Prefix, j.rel)
		switch {
		case err == nil:
			p.succeeded(j.rel)
			if n >= 0 {
				p.stats.moved(n)
			}
		case errors.Is(err, stablefile.ErrChanged):
			p.stats.addPending()
			p.failed(j.rel, true)
			p.e.log.Debug("file changed during upload, retrying later", zap.String("mapping", p.m.ID), zap.String("key", key))
		case serverWide(err):
			p.stats.fail(err)
			p.failed(j.rel, true)
			cancel(err)
		default:
			p.stats.fail(err)
			p.failed(j.rel, false)
			p.e.log.Warn("upload failed", zap.String("mapping", p.m.ID), zap.String("key", key), zap.Error(err))
		}
	})
	flushErr := w.Flush()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("egress %s: %w", p.m.ID, cause)
	}
	if walkErr != nil {
		return walkErr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if flushErr != nil {
		return fmt.Errorf("write journal: %w", flushErr)
	}
	if adopt && p.stats.failed == 0 {
		return p.e.jr.SetListed(p.m.ID)
	}
	return nil
}

// walkBatch is how many directory entries are read and looked up at once.
const walkBatch = 256

// planEgress walks root depth first, a bounded batch of entries at a time
// (never the whole tree in memory), and sends the files that differ from the
// journal. Symlinks are not followed.
func (p *pass) planEgress(ctx context.Context, root *os.Root, jobs chan<- upJob) error {
	var (
		rels  = make([]string, 0, walkBatch)
		stats = make([]stablefile.Stat, 0, walkBatch)
		recs  = make([]journal.Record, walkBatch)
		found = make([]bool, walkBatch)
	)
	decide := func() error {
		if len(rels) == 0 {
			return nil
		}
		if err := p.e.jr.Lookup(p.m.ID, journal.Files, rels, recs, found); err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		for i, rel := range rels {
			s := stats[i]
			if found[i] && recs[i].Size == s.Size && recs[i].MtimeNs == s.MtimeNs &&
				recs[i].CtimeNs == s.CtimeNs && recs[i].Inode == s.Inode {
				continue // unchanged since it was uploaded
			}
			if !p.due(rel) {
				p.stats.addPending()
				continue
			}
			select {
			case jobs <- upJob{rel: rel, seen: s}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rels, stats = rels[:0], stats[:0]
		return nil
	}

	var walk func(dir string) error
	walk = func(dir string) error {
		f, err := root.Open(dir)
		if err != nil {
			return fmt.Errorf("open %s: %w", path.Join(p.m.LocalDir, dir), err)
		}
		defer f.Close()
		for {
			entries, err := f.ReadDir(walkBatch)
			var subdirs []string
			for _, de := range entries {
				rel := de.Name()
				if dir != "." {
					rel = dir + "/" + rel
				}
				switch t := de.Type(); {
				case t.IsDir():
					subdirs = append(subdirs, rel)
				case t&fs.ModeSymlink != 0:
					p.noteSymlink(rel)
				case t.IsRegular():
					if strings.HasPrefix(de.Name(), keys.TempPrefix) {
						continue // an ingress download in progress
					}
					fi, err := de.Info()
					if err != nil {
						continue // gone since ReadDir
					}
					rels = append(rels, rel)
					stats = append(stats, stablefile.StatOf(fi))
					if len(rels) == walkBatch {
						if err := decide(); err != nil {
							return err
						}
					}
				}
			}
			if err := decide(); err != nil {
				return err
			}
			for _, sd := range subdirs {
				if err := walk(sd); err != nil {
					return err
				}
			}
			if err == io.EOF || len(entries) == 0 {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read directory %s: %w", path.Join(p.m.LocalDir, dir), err)
			}
		}
	}
	return walk(".")
}

func (p *pass) noteSymlink(rel string) {
	p.ms.mu.Lock()
	first := !p.ms.symlinkNoted
	p.ms.symlinkNoted = true
	p.ms.mu.Unlock()
	if first {
		p.e.log.Info("symlinks are not followed nor uploaded", zap.String("mapping", p.m.ID),
			zap.String("first", path.Join(p.m.LocalDir, rel)))
	}
}

// singlePutMax is the size up to which minio-go uploads with one PUT.
const singlePutMax = 16 << 20

// upload sends one file. It returns the bytes uploaded, or -1 when an object
// already on the server was adopted.
func (p *pass) upload(ctx context.Context, root *os.Root, j upJob, adopt bool, w *journal.Writer) (int64, error) {
	key := keys.Key(p.m.Prefix, j.rel)
	partSize := int64(0)
	if j.seen.Size > singlePutMax {
		_, ps, _, err := minio.OptimalPartInfo(j.seen.Size, 0)
		if err != nil {
			return 0, fmt.Errorf("upload %s: %w", key, err)
		}
		partSize = ps
	}
	r, err := p.openSettled(ctx, root, j.rel, partSize)
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", key, err)
	}
	defer r.Close()
	st := r.Stat()
	rec := journal.Record{Size: st.Size, MtimeNs: st.MtimeNs, CtimeNs: st.CtimeNs, Inode: st.Inode}
	meta := map[string]string{metaMtime: st.Mtime().UTC().Format(time.RFC3339Nano)}

	// A single PUT needs its MD5 in the request headers, so the file is hashed
	// first (with the SHA-256 alongside: the cores are idle while one small
	// file is read). A multipart upload is not hashed ahead: that would delay
	// its first part by a whole read of the file. Its ETag, MD5 of the part
	// MD5s, is reproducible from the part size stored as metadata, which is
	// how a lost journal recognises it. Reading ahead is unchecked: the read
	// that goes to the server is the checked one (it fails if the file moved
	// since it was opened).
	var shaSum []byte
	var md5Hex string
	if partSize == 0 {
		if shaSum, md5Hex, err = hashFile(r.Unchecked(), true); err != nil {
			return 0, fmt.Errorf("upload %s: read: %w", key, err)
		}
		rec.SHA256 = shaSum
		meta[metaSHA256] = hex.EncodeToString(shaSum)
	} else {
		meta[metaPartSize] = strconv.FormatInt(partSize, 10)
	}

	if adopt {
		if etag, ok, err := p.adoptable(ctx, r, j.rel, key, partSize, shaSum, md5Hex); err != nil {
			return 0, err
		} else if ok {
			rec.ETag = etag
			w.Add(journal.Entry{Key: j.rel, Record: rec})
			return -1, nil
		}
	}

	if hook := p.e.beforeUpload; hook != nil {
		hook(j.rel)
	}
	if st.Size == 0 {
		// An empty body has no last bytes to hold back: check just before
		// the request (a writer that truncated and is about to write), and
		// again once it is done.
		if err := r.Verify(); err != nil {
			return 0, fmt.Errorf("upload %s: %w", key, err)
		}
	}
	info, err := p.client.PutObject(ctx, p.m.Bucket, key, r, st.Size, minio.PutObjectOptions{
		UserMetadata: meta,
		ContentType:  "application/octet-stream",
		// A single PUT carries Content-MD5: a server that would commit a
		// truncated body (versitygw does, when the reader holds back its last
		// bytes) rejects it instead. Multipart uploads are never completed
		// when a part fails, so they need no MD5. The payload is not signed
		// (that would hash it once more), and the client is built without
		// TrailingHeaders (versitygw rejects trailing checksums).
		SendContentMd5:       partSize == 0,
		DisableContentSha256: true,
		// Parts of one big file go in parallel: one transfer slot, but as
		// many connections as the engine allows transfers (minio-go's
		// default is 4, which leaves a fast link idle).
		NumThreads: uint(max(4, p.e.opts.Concurrency)),
		PartSize:   uint64(partSize),
	})
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", key, err)
	}
	if st.Size == 0 {
		if err := r.Verify(); err != nil { // nothing was read: check now
			return 0, fmt.Errorf("upload %s: %w", key, err)
		}
	}
	if partSize == 0 && isMD5(info.ETag) && !strings.EqualFold(info.ETag, md5Hex) {
		return 0, fmt.Errorf("upload %s: server holds ETag %s, local MD5 is %s: corrupted in transit", key, info.ETag, md5Hex)
	}
	rec.ETag = info.ETag
	w.Add(journal.Entry{Key: j.rel, Record: rec})
	return st.Size, nil
}

// hashFile returns the SHA-256 of r and, when withMD5, its MD5 in hex. The
// two run side by side on two cores for big files.
func hashFile(r io.Reader, withMD5 bool) (sha []byte, md5Hex string, err error) {
	h := sha256.New()
	if !withMD5 {
		_, err = copyBuffered(h, r)
		return h.Sum(nil), "", err
	}
	md := md5.New() //nolint:gosec
	_, err = copyBuffered(io.MultiWriter(h, md), r)
	return h.Sum(nil), hex.EncodeToString(md.Sum(nil)), err
}

// openSettled opens rel, waiting until its mtime is older than the file
// system's clock granularity, so that any later write changes the mtime the
// stablefile.Reader checks against.
func (p *pass) openSettled(ctx context.Context, root *os.Root, rel string, partSize int64) (*stablefile.Reader, error) {
	for range 3 {
		r, err := stablefile.OpenIn(root, rel, partSize)
		if err != nil {
			return nil, err
		}
		age := time.Since(r.Stat().Mtime())
		if age >= p.e.settle {
			return r, nil
		}
		r.Close()
		select {
		case <-time.After(p.e.settle - age):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("%w (still being written)", stablefile.ErrChanged)
}

func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// listForAdoption lists the remote prefix once into the journal's Remote
// table (not memory), for upload to look candidates up.
func (p *pass) listForAdoption(ctx context.Context) error {
	w := p.e.jr.NewWriter(p.m.ID, journal.Remote)
	lp := keys.ListPrefix(p.m.Prefix)
	n := 0
	for obj := range p.client.ListObjects(ctx, p.m.Bucket, minio.ListObjectsOptions{Prefix: lp, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("list %s/%s for adoption: %w", p.m.Bucket, lp, obj.Err)
		}
		if strings.HasSuffix(obj.Key, "/") {
			continue
		}
		rel, err := keys.Rel(p.m.Prefix, obj.Key)
		if err != nil {
			continue // could not have come from a local file
		}
		w.Add(journal.Entry{Key: rel, Record: journal.Record{Size: obj.Size, ETag: obj.ETag}})
		n++
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	p.e.log.Info("no sync journal: listed remote objects for adoption", zap.String("mapping", p.m.ID), zap.Int("objects", n))
	return nil
}

// adoptable reports whether the object at key already holds the file's
// content, and returns its ETag. Same size, and:
//   - a single-PUT file: the ETag is the file's MD5, or the object's
//     Flotta-Sha256 metadata is the file's SHA-256;
//   - a multipart file: the ETag is the multipart ETag of the file cut at
//     the engine's part size, or at the part size stored in the object's
//     Flotta-Part-Size metadata, or its Flotta-Sha256 metadata (objects
//     uploaded before the part size was recorded) is the file's SHA-256.
//
// The listing decides most cases without a request; otherwise one HEAD.
// What is hashed here is read unchecked, so the file is verified after: a
// file that moved is uploaded (and fails as changed), never adopted.
func (p *pass) adoptable(ctx context.Context, r *stablefile.Reader, rel, key string, partSize int64, sha []byte, md5Hex string) (string, bool, error) {
	size := r.Size()
	recs, found := make([]journal.Record, 1), make([]bool, 1)
	if err := p.e.jr.Lookup(p.m.ID, journal.Remote, []string{rel}, recs, found); err != nil {
		return "", false, fmt.Errorf("read journal: %w", err)
	}
	if !found[0] || recs[0].Size != size {
		return "", false, nil
	}
	etag := recs[0].ETag
	ok, err := p.sameContent(r, key, etag, partSize, md5Hex)
	if err != nil || ok {
		return etag, ok, err
	}
	info, err := p.client.StatObject(ctx, p.m.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return "", false, fmt.Errorf("stat %s for adoption: %w", key, err)
	}
	if info.Size != size {
		return "", false, nil
	}
	for k, v := range info.UserMetadata {
		switch {
		case strings.EqualFold(k, metaPartSize):
			ps, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ps <= 0 || ps == partSize {
				continue // already compared at the engine's part size
			}
			if ok, err := p.sameContent(r, key, info.ETag, ps, ""); err != nil || ok {
				return info.ETag, ok, err
			}
		case strings.EqualFold(k, metaSHA256):
			if sha == nil {
				if sha, _, err = hashFile(r.Unchecked(), false); err != nil {
					return "", false, fmt.Errorf("adopt %s: read: %w", key, err)
				}
			}
			if strings.EqualFold(v, hex.EncodeToString(sha)) {
				return info.ETag, true, p.verifyForAdoption(r, key)
			}
		}
	}
	return "", false, nil
}

// sameContent reports whether etag is the file's ETag when uploaded in one
// PUT (partSize 0: its MD5, md5Hex) or in parts of partSize.
func (p *pass) sameContent(r *stablefile.Reader, key, etag string, partSize int64, md5Hex string) (bool, error) {
	if partSize == 0 {
		if md5Hex == "" || !strings.EqualFold(etag, md5Hex) {
			return false, nil
		}
		return true, p.verifyForAdoption(r, key)
	}
	parts := (r.Size() + partSize - 1) / partSize
	if !strings.HasSuffix(etag, "-"+strconv.FormatInt(parts, 10)) {
		return false, nil // not a multipart ETag of that many parts
	}
	local, err := multipartETag(r.Unchecked(), r.Size(), partSize)
	if err != nil {
		return false, fmt.Errorf("adopt %s: read: %w", key, err)
	}
	if !strings.EqualFold(etag, local) {
		return false, nil
	}
	return true, p.verifyForAdoption(r, key)
}

// verifyForAdoption checks that the file did not move while it was hashed.
// ErrChanged leaves the file pending, to be looked at again next pass.
func (p *pass) verifyForAdoption(r *stablefile.Reader, key string) error {
	if err := r.Verify(); err != nil {
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	return nil
}

// multipartETag is the ETag S3 gives an object uploaded from r in parts of
// partSize: the MD5 of the concatenated binary MD5s of the parts, "-", the
// number of parts.
func multipartETag(r io.Reader, size, partSize int64) (string, error) {
	all := md5.New()  //nolint:gosec
	part := md5.New() //nolint:gosec
	n := int64(0)
	for off := int64(0); off < size; off += partSize {
		part.Reset()
		if _, err := copyBuffered(part, io.LimitReader(r, min(partSize, size-off))); err != nil {
			return "", err
		}
		all.Write(part.Sum(nil))
		n++
	}
	return hex.EncodeToString(all.Sum(nil)) + "-" + strconv.FormatInt(n, 10), nil
}
