package datasync

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// TestProgressSortsOutcomes: what the CLI reports as skipped (vanished,
// changed) and as failed comes from here; refusals and unreadable files are
// the status's and counted nowhere else.
func TestProgressSortsOutcomes(t *testing.T) {
	p := &Progress{}
	outcomes := []error{
		nil,
		fmt.Errorf("upload a: open: %w", fs.ErrNotExist),
		fmt.Errorf("upload b: %w", stablefile.ErrChanged),
		fmt.Errorf("download c: %w", errObjectMoved),
		fmt.Errorf("upload d: %w", fs.ErrPermission),
		fmt.Errorf("%w %q", keys.ErrHostile, "../e"),
		fmt.Errorf("f: %w", diskguard.ErrQuota),
		errors.New("500 Internal Server Error"),
	}
	for range outcomes {
		p.planned(10)
		p.begin()
	}
	assert.Equal(t, ProgressSnapshot{PlannedFiles: 8, PlannedBytes: 80, InFlight: 8}, p.Snapshot())
	for _, err := range outcomes {
		p.end(10, err)
	}
	assert.Equal(t, ProgressSnapshot{PlannedFiles: 8, PlannedBytes: 80, DoneFiles: 8, DoneBytes: 80,
		Failed: 1, Vanished: 1, Changed: 2}, p.Snapshot())

	var none *Progress // a pass without a display
	none.planned(1)
	none.begin()
	none.end(1, errors.New("x"))
	assert.Equal(t, ProgressSnapshot{}, none.Snapshot())
}
