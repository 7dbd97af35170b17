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
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
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
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return Summary{}, err
	}
	defer root.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &comparer{client: client, o: o, report: report, sem: make(chan struct{}, o.Concurrency)}

	lp := keys.ListPrefix(o.Prefix)
	remote := func(yield func(datasync.Object, error) bool) {
		for obj := range client.ListObjectsIter(ctx, o.Bucket, minio.ListObjectsOptions{Prefix: lp, Recursive: true}) {
			if obj.Err != nil {
				yield(datasync.Object{}, fmt.Errorf("list s3://%s/%s: %w", o.Bucket, lp, obj.Err))
				return
			}
			if !yield(datasync.Object{Key: obj.Key, Size: obj.Size, ETag: obj.ETag, LastModified: obj.LastModified}, nil) {
				return
			}
		}
	}
	// The engine's own walker and march: the files, keys and directory
	// markers are those a sync sees.
	ev := datasync.DirEvents{
		Problem: func(name string, err error) { c.emit(Result{Kind: Error, Path: name, Detail: err.Error()}) },
		Skipped: func(string) { c.emit(Result{Kind: skipped}) },
	}
	err = datasync.MarchDir(root, remote, lp, ev, func(p datasync.Pair) bool {
		switch {
		case p.Late:
			c.emit(Result{Kind: Error, Path: p.Name, Detail: "listed out of key order by the server: not compared"})
		case p.Local == nil && strings.HasSuffix(p.Name, "/"):
			c.emit(Result{Kind: Extra, Path: p.Name, Detail: "a directory marker with content: a sync refuses it"})
		case p.Local == nil:
			c.emit(Result{Kind: Extra, Path: p.Name})
		case p.Remote == nil:
			c.emit(Result{Kind: Missing, Path: p.Name})
		default:
			c.compare(ctx, p.Name, p.Local.Size, *p.Remote)
		}
		return ctx.Err() == nil
	})
	c.wg.Wait()
	if err != nil {
		return c.sum, err
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
func (c *comparer) compare(ctx context.Context, name string, size int64, obj datasync.Object) {
	l := localFile{rel: name, size: size}
	if l.size != obj.Size {
		c.emit(Result{Kind: Differ, Path: l.rel, Detail: fmt.Sprintf("size %d in the directory, %d in the bucket", l.size, obj.Size)})
		return
	}
	etag := strings.Trim(obj.ETag, `"`)
	plain := datasync.IsMD5ETag(etag)
	if !plain && datasync.MultipartParts(etag) == 0 && !c.o.Download {
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
	if parts := datasync.MultipartParts(etag); parts > 0 {
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
	etag, err := datasync.MD5ETag(o)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", key, err)
	}
	return etag, nil
}

// partSize is the part size the object at key records, 0 when none.
func (c *comparer) partSize(ctx context.Context, key string) (int64, error) {
	info, err := c.client.StatObject(ctx, c.o.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", key, err)
	}
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, datasync.MetaPartSize) {
			if ps, err := strconv.ParseInt(v, 10, 64); err == nil && ps > 0 {
				return ps, nil
			}
		}
	}
	return 0, nil
}

// multipartETagFile is the ETag S3 gives the file at p uploaded in parts
// of partSize.
func multipartETagFile(p string, size, partSize int64) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	etag, err := datasync.MultipartETag(f, size, partSize)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return etag, nil
}

// md5File is the ETag S3 gives the file at p uploaded in one PUT.
func md5File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	etag, err := datasync.MD5ETag(f)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return etag, nil
}

// localFile is a file a sync would upload.
type localFile struct {
	rel  string // slash separated, relative to the directory: the key suffix
	size int64
}
