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

// A confirmed row stays confirmed across a reopen (retention removes files
// only on a committed confirmation), and an older row reads as unconfirmed.
func TestConfirmedSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sync-journal.db")
	db, err := journal.Open(path)
	require.NoError(t, err)
	_, err = db.Prepare("m", "fp")
	require.NoError(t, err)
	require.NoError(t, db.Put("m", journal.Files, []journal.Entry{
		{Key: "a", Record: journal.Record{Size: 3, ETag: "e", Confirmed: true}},
		{Key: "b", Record: journal.Record{Size: 4, ETag: "f", Refused: true}},
	}))
	require.NoError(t, db.Close())

	db, err = journal.Open(path)
	require.NoError(t, err)
	defer db.Close()
	recs, found := make([]journal.Record, 2), make([]bool, 2)
	require.NoError(t, db.Lookup("m", journal.Files, []string{"a", "b"}, recs, found))
	require.Equal(t, []bool{true, true}, found)
	assert.True(t, recs[0].Confirmed)
	assert.False(t, recs[0].Refused)
	assert.False(t, recs[1].Confirmed)
	assert.True(t, recs[1].Refused)
}
