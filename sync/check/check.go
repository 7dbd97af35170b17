// Package check compares a local directory with a bucket prefix, without any
// journal, the way rclone check does: the directory is walked and the prefix
// listed in lock step, both in object key order, so memory stays bounded by
// the largest single directory whatever the size of the trees. Files present
// on both sides are compared by size, then by content: with the MD5 a plain
// ETag carries; for a multipart ETag, with the file's own multipart ETag when
// the object records its part size (the sync engine's uploads do); else by
// downloading the object and hashing it when Options.Download is set.
package check

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/keys"
)

// Kind is what a compared path turned out to be.
type Kind string

// Kinds of results, named from the directory's point of view.
const (
	Match   Kind = "match"   // on both sides with the same content (or size, see Result.SizeOnly)
	Missing Kind = "missing" // in the directory, not in the bucket
	Differ  Kind = "differs" // on both sides, different size or content
	Extra   Kind = "extra"   // in the bucket, not in the directory
	Error   Kind = "error"   // could not be read, listed or hashed
)

// Result is the outcome for one path, relative to the directory and prefix
// (slash separated).
type Result struct {
	Kind   Kind
	Path   string
	Detail string // why it differs, or the error
	// SizeOnly is set on a Match whose content could not be compared: the
	// ETag is not an MD5, the object records no part size, and
	// Options.Download is off.
	SizeOnly bool
}

// Options say what to compare.
type Options struct {
	Dir         string // local directory
	Bucket      string //
	Prefix      string // key prefix, without leading or trailing slash; "" is the whole bucket
	Download    bool   // hash objects whose ETag is not an MD5 by downloading them
	Concurrency int    // files hashed at once; default 4
}

// Summary counts the results.
type Summary struct {
	Matching, Missing, Differing, Extra, Errors int64
	// SizeOnly counts the matches compared by size alone.
	SizeOnly int64
	// Skipped counts local entries a sync never uploads: symbolic links,
	// special files and the engine's temporary files.
	Skipped int64
}

// Equal reports whether the directory and the prefix hold the same files.
func (s Summary) Equal() bool {
	return s.Missing == 0 && s.Differing == 0 && s.Extra == 0 && s.Errors == 0
}

// Run compares o.Dir with o.Bucket/o.Prefix through client and calls report
// once per path (from one goroutine at a time, in no particular order). The
// error is for what stops the whole comparison: a directory that cannot be
// opened, a listing that fails, a cancelled ctx.
func Run(ctx context.Context, client *minio.Client, o Options, report func(Result)) (Summary, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if fi, err := os.Stat(o.Dir); err != nil {
		return Summary{}, err
	} else if !fi.IsDir() {
		return Summary{}, fmt.Errorf("%s: not a directory", o.Dir)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &comparer{client: client, o: o, report: report, sem: make(chan struct{}, o.Concurrency)}

	nextLocal, stopLocal := iter.Pull(walk(o.Dir, c.emit))
	defer stopLocal()
	lp := keys.ListPrefix(o.Prefix)
	nextObj, stopObj := iter.Pull(client.ListObjectsIter(ctx, o.Bucket, minio.ListObjectsOptions{Prefix: lp, Recursive: true}))
	defer stopObj()
	// nextRemote skips directory markers and stops on a listing error.
	var listErr error
	nextRemote := func() (minio.ObjectInfo, string, bool) {
		for {
			obj, ok := nextObj()
			if !ok {
				return obj, "", false
			}
			if obj.Err != nil {
				listErr = fmt.Errorf("list s3://%s/%s: %w", o.Bucket, lp, obj.Err)
				return obj, "", false
			}
			if rel := strings.TrimPrefix(obj.Key, lp); rel != "" && !strings.HasSuffix(rel, "/") {
				return obj, rel, true
			}
		}
	}

	l, lok := nextLocal()
	obj, rel, rok := nextRemote()
	for (lok || rok) && listErr == nil && ctx.Err() == nil {
		switch {
		case rok && (!lok || rel < l.rel):
			c.emit(Result{Kind: Extra, Path: rel})
			obj, rel, rok = nextRemote()
		case lok && (!rok || l.rel < rel):
			c.emit(Result{Kind: Missing, Path: l.rel})
			l, lok = nextLocal()
		default:
			c.compare(ctx, l, obj)
			l, lok = nextLocal()
			obj, rel, rok = nextRemote()
		}
	}
	c.wg.Wait()
	if listErr != nil {
		return c.sum, listErr
	}
	return c.sum, ctx.Err()
}

type comparer struct {
	client *minio.Client
	o      Options
	report func(Result)
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex // guards sum and serialises report
	sum    Summary
}

// emit counts r and reports it.
func (c *comparer) emit(r Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.Kind {
	case Match:
		c.sum.Matching++
		if r.SizeOnly {
			c.sum.SizeOnly++
		}
	case Missing:
		c.sum.Missing++
	case Differ:
		c.sum.Differing++
	case Extra:
		c.sum.Extra++
	case Error:
		c.sum.Errors++
	case skipped:
		c.sum.Skipped++
		return
	}
	c.report(r)
}

// skipped is a local entry a sync never uploads; it is counted, not reported.
const skipped Kind = "skipped"

// compare reports on a path present on both sides; hashing runs in the
// background, at most Concurrency at a time.
func (c *comparer) compare(ctx context.Context, l localFile, obj minio.ObjectInfo) {
	if l.size != obj.Size {
		c.emit(Result{Kind: Differ, Path: l.rel, Detail: fmt.Sprintf("size %d in the directory, %d in the bucket", l.size, obj.Size)})
		return
	}
	etag := strings.Trim(obj.ETag, `"`)
	plain := isMD5(etag)
	if !plain && multipartParts(etag) == 0 && !c.o.Download {
		c.emit(Result{Kind: Match, Path: l.rel, SizeOnly: true})
		return
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	c.wg.Go(func() {
		defer func() { <-c.sem }()
		c.emit(c.hashCompare(ctx, l, obj.Key, etag, plain))
	})
}

func (c *comparer) hashCompare(ctx context.Context, l localFile, key, etag string, plain bool) Result {
	file := filepath.Join(c.o.Dir, filepath.FromSlash(l.rel))
	if parts := multipartParts(etag); parts > 0 {
		ps, err := c.partSize(ctx, key)
		if err != nil {
			return Result{Kind: Error, Path: l.rel, Detail: err.Error()}
		}
		if ps > 0 && (l.size+ps-1)/ps == parts {
			local, err := multipartETagFile(file, l.size, ps)
			switch {
			case err != nil:
				return Result{Kind: Error, Path: l.rel, Detail: err.Error()}
			case !strings.EqualFold(local, etag):
				return Result{Kind: Differ, Path: l.rel, Detail: "multipart ETag differs"}
			}
			return Result{Kind: Match, Path: l.rel}
		}
		if !c.o.Download {
			return Result{Kind: Match, Path: l.rel, SizeOnly: true}
		}
	}
	local, err := md5File(file)
	if err != nil {
		return Result{Kind: Error, Path: l.rel, Detail: err.Error()}
	}
	remote, how := etag, "MD5"
	if !plain {
		if remote, err = c.md5Object(ctx, key); err != nil {
			return Result{Kind: Error, Path: l.rel, Detail: err.Error()}
		}
		how = "MD5 of the downloaded object"
	}
	if !strings.EqualFold(local, remote) {
		return Result{Kind: Differ, Path: l.rel, Detail: how + " differs"}
	}
	return Result{Kind: Match, Path: l.rel}
}

func (c *comparer) md5Object(ctx context.Context, key string) (string, error) {
	o, err := c.client.GetObject(ctx, c.o.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("download %s: %w", key, err)
	}
	defer o.Close()
	h := md5.New()
	if _, err := io.Copy(h, o); err != nil {
		return "", fmt.Errorf("download %s: %w", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// metaPartSize is the user metadata in which the sync engine's egress
// records the part size of a multipart upload.
const metaPartSize = "Flotta-Part-Size"

// partSize is the part size the object at key records, 0 when none.
func (c *comparer) partSize(ctx context.Context, key string) (int64, error) {
	info, err := c.client.StatObject(ctx, c.o.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", key, err)
	}
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, metaPartSize) {
			if ps, err := strconv.ParseInt(v, 10, 64); err == nil && ps > 0 {
				return ps, nil
			}
		}
	}
	return 0, nil
}

// multipartParts is the number of parts a multipart ETag ("<md5>-N")
// names, 0 for any other ETag.
func multipartParts(etag string) int64 {
	sum, n, ok := strings.Cut(etag, "-")
	if !ok || !isMD5(sum) {
		return 0
	}
	parts, err := strconv.ParseInt(n, 10, 64)
	if err != nil || parts <= 0 {
		return 0
	}
	return parts
}

// multipartETagFile is the ETag S3 gives the file at p uploaded in parts
// of partSize: the MD5 of the parts' binary MD5s, "-", the number of parts.
func multipartETagFile(p string, size, partSize int64) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	all, part := md5.New(), md5.New()
	n := int64(0)
	for off := int64(0); off < size; off += partSize {
		part.Reset()
		if _, err := io.Copy(part, io.LimitReader(f, min(partSize, size-off))); err != nil {
			return "", fmt.Errorf("read %s: %w", p, err)
		}
		all.Write(part.Sum(nil))
		n++
	}
	return hex.EncodeToString(all.Sum(nil)) + "-" + strconv.FormatInt(n, 10), nil
}

func md5File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// isMD5 reports whether an ETag is a plain MD5 (32 hex digits), not a
// multipart ETag ("<md5>-<parts>") or anything else.
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// localFile is a regular file under the directory.
type localFile struct {
	rel  string // slash separated, relative to the directory: the key suffix
	size int64
}

// walk yields the regular files under root in object key order (byte order
// of their slash-separated paths). It reads one directory at a time and
// keeps only the unvisited entries of the directories above the current
// one. Entries it cannot read are reported as errors through emit;
// symbolic links, special files and temporary files of the engine are
// counted as skipped.
func walk(root string, emit func(Result)) iter.Seq[localFile] {
	return func(yield func(localFile) bool) {
		walkDir(root, "", emit, yield)
	}
}

func walkDir(root, rel string, emit func(Result), yield func(localFile) bool) bool {
	entries, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		emit(Result{Kind: Error, Path: rel + "/", Detail: err.Error()})
		return true
	}
	// Key order: a directory "a" sorts as "a/", so "a.txt" comes before
	// everything under "a/" ('.' < '/') and "a0" after it.
	sortName := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(sortName(a), sortName(b)) })
	for i, e := range entries {
		entries[i] = nil // what was visited can go
		p := path.Join(rel, e.Name())
		switch {
		case e.IsDir():
			if !walkDir(root, p, emit, yield) {
				return false
			}
		case strings.HasPrefix(e.Name(), keys.TempPrefix) || keys.IsConflictCopy(e.Name()) || !e.Type().IsRegular():
			emit(Result{Kind: skipped, Path: p})
		default:
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while walking
			}
			if err != nil {
				emit(Result{Kind: Error, Path: p, Detail: err.Error()})
				continue
			}
			if !yield(localFile{rel: p, size: fi.Size()}) {
				return false
			}
		}
	}
	return true
}
