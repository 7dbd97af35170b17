package keys

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRelAcceptsOrdinaryKeys(t *testing.T) {
	for key, want := range map[string]string{
		"p/a":               "a",
		"p/dir/sub/f.txt":   "dir/sub/f.txt",
		"p/..hidden":        "..hidden",
		"p/a..b/c":          "a..b/c",
		"p/ünï cödé/x y":    "ünï cödé/x y",
		"p/back\\slash":     "back\\slash",
		"p/.dotfile":        ".dotfile",
		"p/dir/.flotta-tmp": "dir/.flotta-tmp",
	} {
		got, err := Rel("p", key)
		require.NoError(t, err, key)
		assert.Equal(t, want, got, key)
	}
	got, err := Rel("", "a/b")
	require.NoError(t, err)
	assert.Equal(t, "a/b", got)
}

func TestRelRefusesHostileKeys(t *testing.T) {
	for _, key := range []string{
		"p/../x", "p/a/../../x", "p/..", "p//etc/x", "p/a//b", "p/./a", "p/a/.",
		"p/", "p/a/", "p/a\x00b", "p/\xff", "q/x", "px", "p/" + TempPrefix + "123",
		"p/d/" + TempPrefix + "x/y", "p/" + strings.Repeat("x", 256), "p/a/" + strings.Repeat("é", 128) + "/b",
	} {
		_, err := Rel("p", key)
		assert.ErrorIs(t, err, ErrHostile, "%q", key)
	}
	_, err := Rel("p", "p/"+strings.Repeat("x", 255))
	assert.NoError(t, err, "255 bytes is a file name")
	_, err = Rel("p", "p/dir/")
	assert.ErrorContains(t, err, "ends in /")
	assert.ErrorIs(t, Clash("p/a/b", "p/a"), ErrHostile)
	_, err = Rel("", "/etc/passwd")
	assert.ErrorIs(t, err, ErrHostile)
	_, err = Rel("", "../x")
	assert.ErrorIs(t, err, ErrHostile)
}

func TestKey(t *testing.T) {
	assert.Equal(t, "p/q/a/b", Key("p/q", "a/b"))
	assert.Equal(t, "a/b", Key("", "a/b"))
	assert.Equal(t, "p/", ListPrefix("p"))
	assert.Equal(t, "", ListPrefix(""))
}
