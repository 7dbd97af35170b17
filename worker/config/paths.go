package config

import (
	"errors"
	"path"
	"strings"
)

// checkPath applies the rules every data path obeys, whether it names a
// directory under /export or a bucket prefix: non-empty, no NUL, relative,
// no ".." component, and naming something below the root.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("must not be empty")
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("must not contain NUL")
	case strings.HasPrefix(p, "/"):
		return errors.New("must be relative")
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return errors.New(`must not contain ".."`)
		}
	}
	if CleanPath(p) == "." {
		return errors.New("must name a directory below the root, not the root itself")
	}
	return nil
}

// CleanPath returns the cleaned, slash-separated form of a relative data
// path: no ".", empty or trailing components.
func CleanPath(p string) string {
	return path.Clean(p)
}

// overlaps reports whether two cleaned relative paths are equal or one is
// inside the other, comparing whole components ("a/b" is inside "a", "ab"
// is not).
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}
