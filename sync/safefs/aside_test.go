package safefs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeepAside(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "d", "f"), []byte("mine"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "d", "f.1"), []byte("taken"), 0o644))
	dir, err := Open(root, root, false)
	require.NoError(t, err)
	defer dir.Close()
	name := func(n int) string { return fmt.Sprintf("d/f.%d", n) }

	aside, err := dir.KeepAside("d/f", name)
	require.NoError(t, err)
	assert.Equal(t, "d/f.2", aside, "the first free name")
	a, err := os.Stat(filepath.Join(root, "d", "f.2"))
	require.NoError(t, err)
	f, err := os.Stat(filepath.Join(root, "d", "f"))
	require.NoError(t, err)
	assert.True(t, os.SameFile(a, f), "a second name of the same file")
	b, _ := os.ReadFile(filepath.Join(root, "d", "f.1"))
	assert.Equal(t, "taken", string(b), "never overwritten")

	_, err = dir.KeepAside("d/f", func(int) string { return "elsewhere" })
	assert.ErrorIs(t, err, ErrUnsafe, "only beside the file")

	// A symlinked parent is refused.
	require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(root, "link")))
	_, err = dir.KeepAside("link/x", func(int) string { return "link/y" })
	assert.ErrorIs(t, err, ErrUnsafe)
}
