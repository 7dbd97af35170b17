package datasync

import (
	"context"
	"crypto/md5" //nolint:gosec // MD5 is what S3 ETags are
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// User metadata stored with every uploaded object (keys come back
// canonicalised by some servers: compare them case-insensitively).
const (
	metaSHA256   = "Flotta-Sha256"    // single PUTs
	metaPartSize = "Flotta-Part-Size" // multipart uploads: bytes per part
	// metaMtime is rclone's "mtime" (see formatMtime), read by rclone and by
	// ingress.
	metaMtime = "Mtime"
)

// singlePutMax is the size up to which minio-go uploads with one PUT.
const singlePutMax = 16 << 20

// upload is the egress transfer: it sends one file, or adopts the object
// already there when it holds the file's content (actAdopt).
func (p *pass) upload(ctx context.Context, j job) outcome {
	if n, rec, err, ok := p.uploadGrowing(ctx, j); ok {
		return outcome{bytes: n, row: rec, err: err}
	}
	n, rec, err := p.uploadFile(ctx, j)
	return outcome{bytes: n, row: rec, err: err}
}

// uploadFile returns the bytes uploaded (-1 when the object was adopted) and
// the journal row to store.
func (p *pass) uploadFile(ctx context.Context, j job) (int64, *journal.Record, error) {
	root := p.dir.Root()
	key := keys.Key(p.m.Prefix, j.it.name)
	seen := j.it.local
	// A file whose last tries timed out on the link waits longer for the
	// answers (twice per timeout, up to 8 times) and goes in smaller parts.
	stalls := p.stalls(j.it.name)
	if stalls > 0 {
		ctx = s3client.WithPatience(ctx, float64(int(1)<<min(stalls, 3)))
	}
	partSize := int64(0)
	if seen.Size > singlePutMax {
		_, ps, _, err := minio.OptimalPartInfo(seen.Size, 0)
		if err != nil {
			return 0, nil, fmt.Errorf("upload %s: %w", key, err)
		}
		if stalls > 0 {
			ps = max(minPartSize, (seen.Size+9999)/10000) // S3's smallest, within its 10,000 parts
		}
		partSize = ps
	}
	r, err := p.openSettled(ctx, root, j.it.name, partSize)
	if err != nil {
		return 0, nil, fmt.Errorf("upload %s: %w", key, err)
	}
	defer r.Close()
	st := r.Stat()
	rec := journal.Record{Size: st.Size, MtimeNs: st.MtimeNs, CtimeNs: st.CtimeNs, Inode: st.Inode}
	meta := map[string]string{}
	if mt, ok := formatMtime(st.Mtime()); ok {
		meta[metaMtime] = mt
	}

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
			return 0, nil, fmt.Errorf("upload %s: read: %w", key, err)
		}
		rec.SHA256 = shaSum
		meta[metaSHA256] = hex.EncodeToString(shaSum)
	} else {
		meta[metaPartSize] = strconv.FormatInt(partSize, 10)
	}

	if j.d.act == actAdopt && j.it.remote != nil {
		if etag, ok, err := p.adoptable(ctx, r, key, partSize, shaSum, md5Hex, *j.it.remote); err != nil {
			return 0, nil, err
		} else if ok {
			rec.ETag = etag
			if err := p.confirm(ctx, r, key, partSize, md5Hex, &rec); err != nil {
				return 0, nil, err
			}
			return -1, &rec, nil
		}
	}

	if hook := p.e.hooks.beforeUpload; hook != nil {
		hook(j.it.name)
	}
	if st.Size == 0 {
		// An empty body has no last bytes to hold back: check just before
		// the request (a writer that truncated and is about to write), and
		// again once it is done.
		if err := r.Verify(); err != nil {
			return 0, nil, fmt.Errorf("upload %s: %w", key, err)
		}
	}
	// Parts of one big file go in parallel: one transfer slot, but as many
	// connections as the engine allows transfers (minio-go's default is 4,
	// which leaves a fast link idle).
	etag, err := p.be.Put(ctx, p.m.Bucket, key, r, st.Size, PutOptions{Meta: meta, PartSize: partSize,
		Threads: max(4, p.e.flow.Limit()), OnStall: p.e.flow.backOff})
	if err != nil {
		return 0, nil, fmt.Errorf("upload %s: %w", key, err)
	}
	if st.Size == 0 {
		if err := r.Verify(); err != nil { // nothing was read: check now
			return 0, nil, fmt.Errorf("upload %s: %w", key, err)
		}
	}
	if partSize == 0 && isMD5(etag) && !strings.EqualFold(etag, md5Hex) {
		return 0, nil, fmt.Errorf("upload %s: server holds ETag %s, local MD5 is %s: corrupted in transit", key, etag, md5Hex)
	}
	rec.ETag = etag
	if err := p.confirm(ctx, r, key, partSize, md5Hex, &rec); err != nil {
		return 0, nil, err
	}
	return st.Size, &rec, nil
}

// confirm sets rec.Confirmed when rec.ETag proves the object holds what r
// read: the file's MD5 (one PUT), or the multipart ETag of the file cut at
// partSize, which costs one more read of the file and is only done for a
// mapping whose retention may remove it. An ETag that proves nothing (not an
// MD5: server-side encryption; another part size) sets rec.Unconfirmable.
// Ceph's RGW may answer a multipart upload without its ETag: one HEAD.
func (p *pass) confirm(ctx context.Context, r *stablefile.Reader, key string, partSize int64, md5Hex string, rec *journal.Record) error {
	if partSize == 0 {
		if md5Hex == "" {
			return nil
		}
		rec.Confirmed = strings.EqualFold(rec.ETag, md5Hex)
		rec.Unconfirmable = !rec.Confirmed
		return nil
	}
	if !p.m.Retention.Active() {
		return nil // not worth a read of a big file
	}
	if rec.ETag == "" {
		info, err := p.be.Stat(ctx, p.m.Bucket, key)
		if err != nil {
			return fmt.Errorf("confirm %s: %w", key, err)
		}
		if info.Size != r.Size() {
			return fmt.Errorf("confirm %s: %w (object replaced meanwhile)", key, errObjectMoved)
		}
		rec.ETag = info.ETag
	}
	local, err := multipartETag(r.Unchecked(), r.Size(), partSize)
	if err != nil {
		return fmt.Errorf("confirm %s: read: %w", key, err)
	}
	if err := r.Verify(); err != nil {
		return fmt.Errorf("confirm %s: %w", key, err)
	}
	rec.Confirmed = strings.EqualFold(rec.ETag, local)
	rec.Unconfirmable = !rec.Confirmed
	return nil
}

// confirmUpload is the transfer of actConfirm: a file uploaded without a
// confirmation (before its mapping had a retention) is compared with its
// object (one HEAD, one read of the file) as adoption does; an object that
// is gone or holds something else is uploaded again.
func (p *pass) confirmUpload(ctx context.Context, j job) outcome {
	key := keys.Key(p.m.Prefix, j.it.name)
	obj, err := p.be.Stat(ctx, p.m.Bucket, key)
	switch {
	case errors.Is(err, ErrNotFound):
		j.d = decision{actUpload, "object missing from the bucket"}
	case err != nil:
		return outcome{err: fmt.Errorf("confirm %s: %w", key, err)}
	default:
		obj.Key = key
		j.it.remote, j.d = &obj, decision{actAdopt, "confirm the upload"}
	}
	return p.upload(ctx, j)
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
		if age >= p.e.hooks.settle {
			return r, nil
		}
		r.Close()
		select {
		case <-time.After(p.e.hooks.settle - age):
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

// adoptable reports whether the object at key already holds the file's
// content, and returns its ETag. Same size, and:
//   - a single-PUT file: the ETag is the file's MD5, or the object's
//     Flotta-Sha256 metadata is the file's SHA-256;
//   - a multipart file: the ETag is the multipart ETag of the file cut at
//     the engine's part size, or at the part size stored in the object's
//     Flotta-Part-Size metadata, or its Flotta-Sha256 metadata (objects
//     uploaded before the part size was recorded) is the file's SHA-256.
//
// The listing (obj) decides most cases without a request; otherwise one HEAD.
// What is hashed here is read unchecked, so the file is verified after: a
// file that moved is uploaded (and fails as changed), never adopted.
func (p *pass) adoptable(ctx context.Context, r *stablefile.Reader, key string, partSize int64, sha []byte, md5Hex string, obj Object) (string, bool, error) {
	size := r.Size()
	if obj.Size != size {
		return "", false, nil
	}
	ok, err := p.sameContent(r, key, obj.ETag, partSize, md5Hex)
	if err != nil || ok {
		return obj.ETag, ok, err
	}
	info, err := p.be.Stat(ctx, p.m.Bucket, key)
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("stat %s for adoption: %w", key, err)
	}
	if info.Size != size {
		return "", false, nil
	}
	for k, v := range info.Meta {
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
