package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/podman"
	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// HeartbeatDirective is the directive of heartbeat messages.
const HeartbeatDirective = "heartbeat"

// The heartbeat's wire types are defined here, with their JSON names, and
// fed from the podman and sync status types: what the control plane reads
// changes only when these change (testdata/heartbeat/full.json pins it).

// Heartbeat is the content of a heartbeat message.
type Heartbeat struct {
	// Status is "up", or "degraded" when a workload crashed, a mapping
	// reports an error or is short of space, or the last configuration did
	// not apply.
	Status    string              `json:"status"`
	Version   string              `json:"version"`
	Workloads []WorkloadHeartbeat `json:"workloads"`
	Events    []Event             `json:"events"`
	// DataSyncState is "on", or "off: no storage configured".
	DataSyncState string              `json:"data_sync_state"`
	DataSync      []DataSyncHeartbeat `json:"data_sync"`
	// BandwidthLimit is the worker's bandwidth limit (FLOTTA_BWLIMIT);
	// absent when none is set.
	BandwidthLimit *BandwidthLimitHeartbeat `json:"bandwidth_limit,omitempty"`
}

// BandwidthLimitHeartbeat is the engine-wide bandwidth limit: the setting,
// the rates in force now (they follow the timetable), and whether each
// direction is held at its rate right now (a transfer waited within the
// last second).
type BandwidthLimitHeartbeat struct {
	Setting       string `json:"setting"` // as configured, e.g. "08:00,512K 19:00,10M 23:00,off"
	Up            string `json:"up"`      // upload rate in force, bytes per second ("512K"), or "off"
	Down          string `json:"down"`    // download rate in force, or "off"
	ThrottledUp   bool   `json:"throttled_up"`
	ThrottledDown bool   `json:"throttled_down"`
}

// bandwidthLimitHeartbeat describes l now; nil when there is no limit.
func bandwidthLimitHeartbeat(l *bwlimit.Limiter) *BandwidthLimitHeartbeat {
	if l == nil {
		return nil
	}
	cur := l.Current()
	return &BandwidthLimitHeartbeat{
		Setting: l.Schedule().String(), Up: cur.Up.String(), Down: cur.Down.String(),
		ThrottledUp: l.Throttling(bwlimit.Up), ThrottledDown: l.Throttling(bwlimit.Down),
	}
}

// Event is something worth telling the control plane, sent once.
type Event struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Type    string `json:"type"` // EventInfo or EventWarn
}

// heartbeatEvents are the workload runner's events as the heartbeat sends
// them.
func heartbeatEvents(evs ...podman.Event) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, Event{Reason: e.Reason, Message: e.Message, Type: e.Type})
	}
	return out
}

// DataSyncHeartbeat is one data path in a heartbeat: the engine's status,
// the path as the configuration message wrote it, and how far behind it is.
type DataSyncHeartbeat struct {
	ID        string `json:"id"`        // the mapping: <workload>/<direction>/<path under /export>
	Direction string `json:"direction"` // "egress" or "ingress"
	LocalDir  string `json:"local_dir"` // absolute directory on the device
	Bucket    string `json:"bucket"`    //
	Prefix    string `json:"prefix"`    // key prefix in the bucket

	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// FilesTotal and BytesTotal count what moved since the worker started.
	FilesTotal int64 `json:"files_total"`
	BytesTotal int64 `json:"bytes_total"`
	// FilesLastPass and BytesLastPass count what moved in the last pass.
	FilesLastPass int64 `json:"files_last_pass"`
	BytesLastPass int64 `json:"bytes_last_pass"`
	// Pending counts files known to differ and not yet moved.
	Pending int64 `json:"pending"`
	// Refused counts files the disk guard or the key checks would not write.
	Refused int64 `json:"refused"`
	// Unreadable counts entries the last pass skipped because they could
	// not be read or named; they are retried every pass.
	Unreadable int64 `json:"unreadable"`
	// Conflicts counts, since the worker started, ingress files changed both
	// on the device and in the bucket: the device's version was kept beside
	// the new one as a conflict copy (name.flotta-conflict-<UTC time>.ext).
	Conflicts int64  `json:"conflicts"`
	LastError string `json:"last_error,omitempty"`
	// OldestPending is when the oldest change not yet synced was first seen.
	OldestPending time.Time `json:"oldest_pending,omitzero"`

	Workload string `json:"workload"`
	// Source and Target are the message's data path: a directory under
	// /export and a bucket prefix, in the direction of the copy.
	Source string `json:"source"`
	Target string `json:"target"`
	// LagSeconds is the age of the oldest change not yet synchronised; 0
	// when nothing is pending.
	LagSeconds float64 `json:"lag_seconds"`
	// Throttled says a transfer of this data path is in flight and held
	// back by the bandwidth limit (FLOTTA_BWLIMIT) right now.
	Throttled bool `json:"throttled"`
	// OldestUnsentSeconds is the age of the oldest change not yet in the
	// bucket, files held open and written to (logs) included: they are sent
	// as snapshots at least every FLOTTA_MAX_STALENESS.
	OldestUnsentSeconds float64 `json:"oldest_unsent_seconds"`
	// BytesSavedByPartCopy counts, since the worker started, the bytes of
	// growing and rotated files copied server-side instead of sent.
	BytesSavedByPartCopy int64 `json:"bytes_saved_by_part_copy"`

	// Retention of an egress path (docs/retention.md): LocalBytes are the
	// bytes of all its files on the device, KeptFiles and KeptBytes those
	// already uploaded and kept, after the last full pass; RemovedFiles and
	// RemovedBytes what was removed after upload since the worker started.
	LocalBytes   int64 `json:"local_bytes"`
	KeptFiles    int64 `json:"kept_files"`
	KeptBytes    int64 `json:"kept_bytes"`
	RemovedFiles int64 `json:"removed_files"`
	RemovedBytes int64 `json:"removed_bytes"`
	// ShortOfSpace, when set, says the file system of an egress path is
	// below its free-space floor and nothing more may be removed (what is
	// left is not uploaded yet, or the path sets no retention).
	ShortOfSpace string `json:"short_of_space,omitempty"`

	// Ingress says, for an ingress data path, whether the server's bucket
	// notifications push new objects ("push") or the worker polls ("poll"),
	// with the reason it polls and since when.
	Ingress *datasync.IngressMode `json:"ingress,omitempty"`
}

// dataSyncHeartbeat describes one mapping status, now.
func dataSyncHeartbeat(m datasync.MappingStatus, now time.Time) DataSyncHeartbeat {
	h := DataSyncHeartbeat{
		ID: m.ID, Direction: string(m.Direction), LocalDir: m.LocalDir, Bucket: m.Bucket, Prefix: m.Prefix,
		LastAttempt: m.LastAttempt, LastSuccess: m.LastSuccess,
		FilesTotal: m.FilesTotal, BytesTotal: m.BytesTotal, FilesLastPass: m.FilesLastPass, BytesLastPass: m.BytesLastPass,
		Pending: m.Pending, Refused: m.Refused, Unreadable: m.Unreadable, Conflicts: m.Conflicts, LastError: m.LastError, OldestPending: m.OldestPending,
		Throttled: m.Throttled, Ingress: m.Ingress,
		LocalBytes: m.LocalBytes, KeptFiles: m.KeptFiles, KeptBytes: m.KeptBytes,
		RemovedFiles: m.RemovedFiles, RemovedBytes: m.RemovedBytes, ShortOfSpace: m.ShortOfSpace,
		BytesSavedByPartCopy: m.BytesSavedByPartCopy,
	}
	if !m.OldestUnsent.IsZero() {
		h.OldestUnsentSeconds = now.Sub(m.OldestUnsent).Round(time.Second).Seconds()
	}
	// IDs are <workload>/<direction>/<path under /export> (see MappingID).
	workload, rest, _ := strings.Cut(m.ID, "/")
	_, local, _ := strings.Cut(rest, "/")
	h.Workload, h.Source, h.Target = workload, local, m.Prefix
	if m.Direction == datasync.Ingress {
		h.Source, h.Target = m.Prefix, local
	}
	if m.Pending > 0 && !m.OldestPending.IsZero() {
		h.LagSeconds = now.Sub(m.OldestPending).Round(time.Second).Seconds()
	}
	return h
}

// Data sync states in heartbeats.
const (
	DataSyncOn        = "on"
	DataSyncNoStorage = "off: no storage configured"
)

// syncReport is what a heartbeat last said about one mapping.
type syncReport struct {
	lastError string
	refused   int64
	conflicts int64
	short     string
}

// WorkloadHeartbeat is one workload in a heartbeat.
type WorkloadHeartbeat struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	// LastDataUpload is the latest time all the workload's mappings had
	// succeeded (RFC3339); empty when some never did.
	LastDataUpload string `json:"last_data_upload,omitempty"`
}

// Heartbeat statuses.
const (
	StatusUp       = "up"
	StatusDegraded = "degraded"
)

// runHeartbeats sends a heartbeat every period of the configuration in
// force, and right after a configuration was applied.
func (w *Worker) runHeartbeats(ctx context.Context) {
	t := time.NewTimer(w.heartbeatPeriod())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.sendHeartbeat(ctx)
		case <-w.heartbeatNow:
			w.sendHeartbeat(ctx)
		case <-w.rearm:
		}
		t.Stop()
		t.Reset(w.heartbeatPeriod())
	}
}

func (w *Worker) heartbeatPeriod() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := config.Heartbeat{}
	if w.desired != nil {
		h = w.desired.Configuration.Heartbeat
	}
	return time.Duration(h.Period()) * time.Second
}

// sendHeartbeat delivers one heartbeat; its events are forgotten only once
// it was delivered.
func (w *Worker) sendHeartbeat(ctx context.Context) {
	w.mu.Lock()
	paused := w.paused
	w.mu.Unlock()
	if paused {
		return
	}
	hb, end, ok := w.buildHeartbeat()
	if !ok {
		// Nothing applied or loaded yet: a heartbeat would carry an empty
		// version, which the control plane records as the device's synced
		// version. Events wait for the first configuration.
		w.log.Debug("heartbeat held back: no configuration applied yet")
		return
	}
	content, err := json.Marshal(hb)
	if err != nil {
		w.log.Error("cannot encode heartbeat", zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.opts.SendTimeout)
	defer cancel()
	_, err = w.opts.Dispatcher.Send(ctx, &yggdrasil.Data{
		MessageId: newMessageID(),
		Directive: HeartbeatDirective,
		Content:   content,
	})
	if err != nil {
		w.log.Warn("heartbeat not delivered; events kept for the next one", zap.Error(err))
		return
	}
	w.events.drop(end)
	w.log.Debug("heartbeat sent", zap.String("status", hb.Status), zap.String("version", hb.Version), zap.Int("events", len(hb.Events)))
}

// buildHeartbeat gathers the current state; end is the event sequence
// number to drop through once delivered. ok is false while there is no
// version to report.
func (w *Worker) buildHeartbeat() (hb Heartbeat, end uint64, ok bool) {
	w.events.add(heartbeatEvents(w.wl.Events()...)...)
	statuses := w.wl.Statuses()
	mappings := w.ds.Status()
	w.events.add(w.syncEvents(mappings)...)
	events, end := w.events.peek()

	w.mu.Lock()
	version, hasVersion := w.version, w.hasVersion
	applyFailed := w.applyErr != nil
	mappingsOf := w.mappingsOf
	syncState := DataSyncOn
	if w.syncOff {
		syncState = DataSyncNoStorage
	}
	w.mu.Unlock()
	if !hasVersion {
		return Heartbeat{}, 0, false
	}

	hb = Heartbeat{
		Status:         StatusUp,
		Version:        version,
		Workloads:      make([]WorkloadHeartbeat, 0, len(statuses)),
		Events:         events,
		DataSyncState:  syncState,
		DataSync:       make([]DataSyncHeartbeat, 0, len(mappings)),
		BandwidthLimit: bandwidthLimitHeartbeat(w.opts.Bandwidth),
	}
	now := time.Now()
	for _, m := range mappings {
		hb.DataSync = append(hb.DataSync, dataSyncHeartbeat(m, now))
	}
	if applyFailed {
		hb.Status = StatusDegraded
	}
	byID := make(map[string]datasync.MappingStatus, len(mappings))
	for _, m := range mappings {
		byID[m.ID] = m
		if m.LastError != "" || m.ShortOfSpace != "" {
			hb.Status = StatusDegraded
		}
	}
	for _, s := range statuses {
		if s.State == podman.Crashed {
			hb.Status = StatusDegraded
		}
		wh := WorkloadHeartbeat{Name: s.Name, Status: string(s.State), Message: s.Message}
		if t := lastDataUpload(mappingsOf[s.Name], byID); !t.IsZero() {
			wh.LastDataUpload = t.UTC().Format(time.RFC3339)
		}
		hb.Workloads = append(hb.Workloads, wh)
	}
	return hb, end, true
}

// syncEvents turns what changed in the mappings' status since the last
// heartbeat into events: a new error or new refusals (disk guard, unsafe
// keys) are warnings, an error that cleared is news too.
func (w *Worker) syncEvents(mappings []datasync.MappingStatus) []Event {
	var evs []Event
	seen := make(map[string]syncReport, len(mappings))
	for _, m := range mappings {
		prev := w.syncSeen[m.ID]
		now := syncReport{lastError: m.LastError, refused: m.Refused, conflicts: m.Conflicts, short: m.ShortOfSpace}
		seen[m.ID] = now
		if now.short != "" && prev.short == "" {
			evs = append(evs, Event{Reason: "DataSyncShortOfSpace", Type: EventWarn, Message: m.ID + ": " + now.short})
		}
		if now.conflicts > prev.conflicts {
			evs = append(evs, Event{Reason: "DataSyncConflict", Type: EventWarn,
				Message: fmt.Sprintf("%s: %d file(s) changed on the device and in the bucket: the device's version kept as *.flotta-conflict-* beside the new one",
					m.ID, now.conflicts-prev.conflicts)})
		}
		switch {
		case now.refused > prev.refused:
			evs = append(evs, Event{Reason: "DataSyncRefused", Type: EventWarn,
				Message: fmt.Sprintf("%s: %d file(s) not written: %s", m.ID, now.refused-prev.refused, m.LastError)})
		case now.lastError != "" && now.lastError != prev.lastError:
			evs = append(evs, Event{Reason: "DataSyncFailed", Type: EventWarn,
				Message: fmt.Sprintf("%s: %s", m.ID, m.LastError)})
		case now.lastError == "" && prev.lastError != "":
			evs = append(evs, Event{Reason: "DataSyncRecovered", Type: EventInfo,
				Message: m.ID + ": synchronising again"})
		}
	}
	w.syncSeen = seen
	return evs
}

// lastDataUpload is the latest time all the given mappings had succeeded:
// the earliest of their last successes, or zero when one never succeeded or
// the workload has no mappings.
func lastDataUpload(ids []string, byID map[string]datasync.MappingStatus) time.Time {
	var min time.Time
	for _, id := range ids {
		s, ok := byID[id]
		if !ok || s.LastSuccess.IsZero() {
			return time.Time{}
		}
		if min.IsZero() || s.LastSuccess.Before(min) {
			min = s.LastSuccess
		}
	}
	return min
}

// newMessageID returns a random UUID-shaped message id.
func newMessageID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
