package watch_test

import (
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/watch"
)

// An egress mapping's loop: create the watcher before the first full pass,
// upload what it reports, run a full pass on Rescan, and keep the periodic
// pass as the safety net, at a longer interval while the watcher is healthy.
func Example() {
	const source = "/var/local/yggdrasil/device/volumes/os-stats/stats"
	changed := func(rels []string) {} // e.g. Engine.Changed(mappingID, rels)
	fullPass := func() {}             // e.g. a pass over the mapping

	w, err := watch.New(source, watch.Options{}, zap.NewNop())
	if err != nil {
		return
	}
	defer w.Close()
	fullPass()
	for {
		interval := 15 * time.Second
		if w.Healthy() {
			interval = 5 * time.Minute
		}
		select {
		case b, ok := <-w.Events():
			if !ok {
				return
			}
			if b.Rescan {
				fullPass()
			} else {
				changed(b.Paths)
			}
		case <-time.After(interval):
			fullPass()
		}
	}
}
