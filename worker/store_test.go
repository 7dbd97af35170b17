package worker

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStoreSaveLoadRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested")
	s := store{path: filepath.Join(dir, ConfigFileName)}

	_, err := s.load()
	assert.True(t, errors.Is(err, fs.ErrNotExist))

	require.NoError(t, s.save([]byte(`{"version":"1"}`)))
	require.NoError(t, s.save([]byte(`{"version":"2"}`)))
	b, err := s.load()
	require.NoError(t, err)
	assert.Equal(t, `{"version":"2"}`, string(b))

	st, err := os.Stat(s.path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left behind")

	require.NoError(t, s.remove())
	require.NoError(t, s.remove(), "removing twice is fine")
	assert.NoFileExists(t, s.path)
}
