package keys

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestConflictName(t *testing.T) {
	at := time.Date(2026, 12, 2, 18, 48, 7, 5e8, time.FixedZone("CET", 3600))
	for rel, want := range map[string]string{
		"report.csv":         "report.flotta-conflict-20261202T174807Z.csv",
		"dir/archive.tar.gz": "dir/archive.tar.flotta-conflict-20261202T174807Z.gz",
		".env":               ".env.flotta-conflict-20261202T174807Z",
		"a/Makefile":         "a/Makefile.flotta-conflict-20261202T174807Z",
		"a.b/c":              "a.b/c.flotta-conflict-20261202T174807Z",
		"x.":                 "x.flotta-conflict-20261202T174807Z.",
	} {
		got := ConflictName(rel, at, 1)
		assert.Equal(t, want, got, rel)
		assert.True(t, IsConflictCopy(got), got)
	}
	assert.Equal(t, "d/r.flotta-conflict-20261202T174807Z-2.csv", ConflictName("d/r.csv", at, 2))
	assert.True(t, IsConflictCopy("d/r.flotta-conflict-20261202T174807Z-2.csv"))

	// Never longer than a file name may be, never in another directory.
	long := strings.Repeat("é", 120) + ".txt" // 244 bytes
	got := ConflictName("d/"+long, at, 3)
	assert.True(t, strings.HasPrefix(got, "d/"))
	base := strings.TrimPrefix(got, "d/")
	assert.LessOrEqual(t, len(base), nameMax)
	assert.NotContains(t, base, "/")
	assert.True(t, strings.HasSuffix(base, ".flotta-conflict-20261202T174807Z-3.txt"), base)
	assert.True(t, IsConflictCopy(got))
}

func TestIsConflictCopy(t *testing.T) {
	for name, want := range map[string]bool{
		"a.flotta-conflict-20261202T184807Z":        true,
		"a.flotta-conflict-20261202T184807Z.txt":    true,
		"d/a.flotta-conflict-20261202T184807Z-12.x": true,
		"a.flotta-conflict-2026-12-02.txt":          false,
		"a.flotta-conflict-20261202T184807Z.tar.gz": false, // never made: the extension is the last one
		"a.txt":                                false,
		"a.flotta-conflict-20261202T184807Z/b": false, // a directory so named: its files are not copies
		"flotta-conflict-20261202T184807Z":     false,
	} {
		assert.Equal(t, want, IsConflictCopy(name), name)
	}
}
