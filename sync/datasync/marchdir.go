package datasync

import (
	"crypto/md5" //nolint:gosec // S3 ETags are MD5s
	"encoding/hex"
	"io"
	"iter"
	"os"
	"strconv"
	"strings"

	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// This file is the engine's walker, march and ETag rules for tools that
// compare a directory with a prefix without a journal (sync/check): one
// rule for which files a sync uploads, which keys are directory markers and
// how an ETag is computed.

// Pair is one name of MarchDir: a local file, an object, or both.
type Pair struct {
	Name   string           // slash-separated path under the directory, key without the prefix
	Local  *stablefile.Stat // nil: no file a sync would upload
	Remote *Object          // nil: no object (directory markers are never objects)
	// Late: the listing gave this object out of key order (some servers
	// list depth-first), after its name was passed; Local was not looked up.
	Late bool
}

// DirEvents tell a caller of MarchDir of the local entries it passes over.
type DirEvents struct {
	// Problem: an entry that cannot be read, or whose name cannot be a key.
	Problem func(name string, err error)
	// Skipped: an entry a sync never uploads (symlink, special file, the
	// engine's temporary file, conflict copy).
	Skipped func(name string)
}

// MarchDir walks root and the listing remote of the keys under listPrefix
// in lock step, as a sync pass does, and yields one Pair per name in key
// order until yield returns false. Memory is bounded by the biggest
// directory, not by the tree. The error is the listing's.
func MarchDir(root *os.Root, remote iter.Seq2[Object, error], listPrefix string, ev DirEvents, yield func(Pair) bool) error {
	w := &walker{root: root, skipped: ev.Skipped, problem: func(p walkProblem) {
		if ev.Problem != nil {
			ev.Problem(p.name, p.err)
		}
	}}
	local := func(y func(localFile) bool) { w.walk(".", y) }
	return march(local, nil, remote, listPrefix, func(it item, late bool) bool {
		return yield(Pair{Name: it.name, Local: it.local, Remote: it.remote, Late: late})
	})
}

// MetaPartSize is the user metadata in which an upload in parts records its
// part size, so that its multipart ETag can be recomputed from the file.
const MetaPartSize = metaPartSize

// IsMD5ETag reports whether etag (without quotes) is a plain MD5, the ETag
// of a single PUT, rather than a multipart ETag or anything else.
func IsMD5ETag(etag string) bool { return isMD5(etag) }

// MD5ETag is the ETag S3 gives the content of r uploaded in one PUT.
func MD5ETag(r io.Reader) (string, error) {
	h := md5.New() //nolint:gosec
	if _, err := copyBuffered(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// MultipartETag is the ETag S3 gives size bytes of r uploaded in parts of
// partSize: the MD5 of the parts' binary MD5s, "-", the number of parts.
func MultipartETag(r io.Reader, size, partSize int64) (string, error) {
	return multipartETag(r, size, partSize)
}

// MultipartParts is the number of parts a multipart ETag ("<md5>-N")
// names, 0 for any other ETag.
func MultipartParts(etag string) int64 {
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
