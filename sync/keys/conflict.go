package keys

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// ConflictMark starts the part of a conflict copy's name that says what it
// is. A conflict copy keeps the device's version of an ingress file that was
// edited on the device while its object changed in the bucket:
//
//	report.csv         -> report.flotta-conflict-20261202T184807Z.csv
//	dir/archive.tar.gz -> dir/archive.tar.flotta-conflict-20261202T184807Z.gz
//	.env               -> .env.flotta-conflict-20261202T184807Z
//	Makefile           -> Makefile.flotta-conflict-20261202T184807Z
//
// The time is UTC, to the second; a second copy of the same name in the same
// second gets "-2", "-3", ... after the time. The copy stays in the file's
// directory: only the last path component changes.
const ConflictMark = ".flotta-conflict-"

// conflictTime is the layout of the time in a conflict copy's name.
const conflictTime = "20060102T150405Z"

// nameMax is the longest file name (one path component) Linux file systems
// take.
const nameMax = 255

// isConflict matches the last path component of a conflict copy.
var isConflict = regexp.MustCompile(`\.flotta-conflict-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?(\.[^./]*)?$`)

// IsConflictCopy reports whether the last component of the slash-separated
// path rel is named like a conflict copy (ConflictName). Egress never uploads
// such files.
func IsConflictCopy(rel string) bool {
	return isConflict.MatchString(path.Base(rel))
}

// ConflictName is the n-th candidate name (n from 1) of a conflict copy of
// the slash-separated path rel made at t: in rel's directory, the name's
// extension kept last, the stem shortened when the name would be longer
// than a file system takes.
func ConflictName(rel string, t time.Time, n int) string {
	dir, base := path.Split(rel)
	ext := path.Ext(base)
	if ext == base || strings.Count(ext, ".") != 1 {
		ext = "" // ".env": a dot file, not an extension
	}
	stem := strings.TrimSuffix(base, ext)
	mark := ConflictMark + t.UTC().Format(conflictTime)
	if n > 1 {
		mark += fmt.Sprintf("-%d", n)
	}
	if len(ext) > nameMax/4 {
		stem, ext = base, "" // an "extension" this long is part of the name
	}
	if over := len(stem) + len(mark) + len(ext) - nameMax; over > 0 {
		cut := max(len(stem)-over, 0)
		for cut > 0 && !utf8.RuneStart(stem[cut]) {
			cut--
		}
		stem = stem[:cut]
	}
	return dir + stem + mark + ext
}
