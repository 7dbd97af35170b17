// Package keys maps between local relative paths and object keys, and refuses
// object keys that must never become local paths. Object keys are untrusted.
package keys

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// TempPrefix starts the name of every temporary file the engine writes; keys
// whose components start with it are refused so they cannot collide with them.
const TempPrefix = ".flotta-tmp-"

// ErrHostile is wrapped by every refusal of Rel.
var ErrHostile = errors.New("refused object key")

// Key is the object key of a local relative path (slash separated) under prefix.
func Key(prefix, rel string) string {
	if prefix == "" {
		return rel
	}
	return prefix + "/" + rel
}

// ListPrefix is what to list to get every object under prefix.
func ListPrefix(prefix string) string {
	if prefix == "" {
		return ""
	}
	return prefix + "/"
}

// Rel returns the slash-separated path, relative to the target directory, that
// key under prefix may be written to. It refuses keys outside prefix, empty,
// absolute, with NUL or invalid UTF-8, with empty, "." or ".." components (so
// cleaning cannot change the path and it cannot leave the target), ending in
// "/" (a directory cannot hold data), with a component longer than a file
// name may be, and names reserved for temporary files.
func Rel(prefix, key string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrHostile, key, why)
	}
	lp := ListPrefix(prefix)
	if !strings.HasPrefix(key, lp) {
		return refuse("outside prefix " + lp)
	}
	rel := key[len(lp):]
	switch {
	case rel == "":
		return refuse("empty path")
	case strings.IndexByte(rel, 0) >= 0:
		return refuse("contains NUL")
	case !utf8.ValidString(rel):
		return refuse("not UTF-8")
	case rel[0] == '/':
		return refuse("absolute path")
	case rel[len(rel)-1] == '/':
		return refuse("ends in / (a directory name) but has content")
	}
	for c := range strings.SplitSeq(rel, "/") {
		switch {
		case c == "":
			return refuse("empty path component")
		case c == "." || c == "..":
			return refuse("dot path component")
		case strings.HasPrefix(c, TempPrefix):
			return refuse("reserved temporary name")
		case len(c) > nameMax:
			return refuse(fmt.Sprintf("a path component of %d bytes (a file name holds at most %d)", len(c), nameMax))
		}
	}
	return rel, nil
}

// Clash is the refusal of key, which names a directory that fileKey, an
// object of the same listing, names as a file ("a" and "a/b"): both cannot
// exist on the device. The object listed first (the file) is the one written.
func Clash(key, fileKey string) error {
	return fmt.Errorf("%w %q: %q is an object too, and a path cannot be both a file and a directory", ErrHostile, key, fileKey)
}
