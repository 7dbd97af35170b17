package journal_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
)

func TestUnreadableJournalIsSetAsideNotFatal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sync-journal.db")
	garbage := []byte(strings.Repeat("not a bbolt file ", 1000))
	require.NoError(t, os.WriteFile(path, garbage, 0o600))

	db, err := journal.Open(path)
	require.NoError(t, err, "a device must start with a mangled journal")
	defer db.Close()
	require.NotEmpty(t, db.SetAside)
	kept, err := os.ReadFile(db.SetAside)
	require.NoError(t, err)
	assert.Equal(t, garbage, kept, "the unreadable file is kept for inspection")

	_, err = db.Prepare("m", "fingerprint")
	assert.NoError(t, err, "the new journal works")
}

func TestHealthyJournalIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sync-journal.db")
	db, err := journal.Open(path)
	require.NoError(t, err)
	_, err = db.Prepare("m", "fp")
	require.NoError(t, err)
	require.NoError(t, db.Close())

	db, err = journal.Open(path)
	require.NoError(t, err)
	defer db.Close()
	assert.Empty(t, db.SetAside)
	listed, err := db.Prepare("m", "fp")
	require.NoError(t, err)
	assert.False(t, listed)
}
