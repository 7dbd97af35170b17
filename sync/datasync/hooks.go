package datasync

import (
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/s3wire"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/watch"
)

// hooks are the engine's seams for tests, in one place: the clocks and
// tunables a test shortens, and callbacks that let a test act at a precise
// point (between a read and a rename, before an unlink). Production leaves
// the defaults New sets; tests set them after New, before Configure.
type hooks struct {
	free           diskguard.FreeFunc // free space of a directory (disk guard, retention)
	settle         time.Duration      // how old a file's last change must be before it is read
	backoffBase    time.Duration      // first retry backoff of a failed file
	backoffCeiling time.Duration      // longest retry backoff
	now            func() time.Time   // the schedule's clock
	watch          watch.Options      // the watchers' tuning (settle time, limits)

	beforeUpload func(rel string)                              // an upload is about to read rel
	beforeRemove func(rel string)                              // retention: rel is about to be unlinked
	walkFault    func(dir string) error                        // fails the walk of dir
	onPass       func(id string, po PassOptions, partial bool) // a pass starts
	onRound      func(id string, round int)                    // an ordered pass starts another round
	notifyTune   func(*s3wire.ListenConfig)                    // the notification stream's deadlines
	syncGroup    func(dir *safefs.Dir) error                   // replaces dir.SyncFS in group commits
}
