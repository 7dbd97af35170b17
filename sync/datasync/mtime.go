package datasync

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The file's modification time travels with the object as rclone carries
// it: user metadata "mtime" (X-Amz-Meta-Mtime), seconds since the epoch with
// nine decimals ("1733167687.123456789"). Uploads set it; downloads give the
// file that time when the object has it, else the object's LastModified.

// maxMtime bounds the times read from metadata (year 10000): a file system
// may refuse later ones, and the download would fail for a bad header.
const maxMtime = 253402300800

// formatMtime is t in rclone's format; false before 1970 (left out).
func formatMtime(t time.Time) (string, bool) {
	if t.Unix() < 0 || t.Unix() >= maxMtime {
		return "", false
	}
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()), true
}

// parseMtime reads rclone's format: whole seconds, optionally a dot and up to
// nine (more are ignored) decimal digits. It is parsed as integers, not as a
// float, so nanoseconds survive.
func parseMtime(s string) (time.Time, bool) {
	secs, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || sec < 0 || sec >= maxMtime || strings.HasPrefix(secs, "+") {
		return time.Time{}, false
	}
	frac = frac[:min(len(frac), 9)]
	ns := int64(0)
	if frac != "" {
		if strings.Trim(frac, "0123456789") != "" {
			return time.Time{}, false
		}
		ns, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	return time.Unix(sec, ns), true
}

// metaMtimeOf is the mtime recorded in user metadata (keys compared without
// case: servers canonicalise them).
func metaMtimeOf(meta map[string]string) (time.Time, bool) {
	for k, v := range meta {
		if strings.EqualFold(k, metaMtime) {
			return parseMtime(v)
		}
	}
	return time.Time{}, false
}

// metaBody is an object body that knows the object's user metadata once it
// has been read: a GET response carries it, so no HEAD is needed.
type metaBody interface {
	UserMeta() map[string]string
}

// fileMtime is the mtime a downloaded file gets: the metadata's, when the
// body has it, else the object's LastModified.
func fileMtime(body any, lastModified time.Time) time.Time {
	if mb, ok := body.(metaBody); ok {
		if t, ok := metaMtimeOf(mb.UserMeta()); ok {
			return t
		}
	}
	return lastModified
}
