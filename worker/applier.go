package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// runApplier is the only goroutine that calls Workloads and DataSync. It
// applies the latest desired configuration, coalescing changes that arrive
// while it is busy, retries a failed application, and carries out
// disconnects.
func (w *Worker) runApplier(ctx context.Context) {
	var retry *time.Timer
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			if retry != nil {
				retry.Stop()
			}
			return
		case <-w.kick:
		case <-retryC:
		}
		retrying := retry != nil
		if retry != nil {
			retry.Stop()
			retry = nil
		}
		if failed := w.applyLatest(ctx, retrying); failed && ctx.Err() == nil {
			w.log.Info("will retry applying the configuration", zap.Duration("in", w.opts.RetryInterval))
			retry = time.NewTimer(w.opts.RetryInterval)
		}
	}
}

// applyLatest applies desired configurations until none arrived during the
// last application. A generation already applied is skipped unless retry
// is set (the last attempt failed). It reports whether the last one failed.
func (w *Worker) applyLatest(ctx context.Context, retry bool) (failed bool) {
	for {
		w.mu.Lock()
		gen, desired, remove := w.gen, w.desired, w.removeAll
		w.removeAll = false
		done := gen == w.appliedGen && !retry
		w.mu.Unlock()
		if done {
			return false
		}
		retry = false

		var err error
		if remove {
			if err = w.removeEverything(ctx); err != nil {
				w.mu.Lock()
				w.removeAll = true // still owed
				w.mu.Unlock()
			}
		}
		if desired != nil {
			err = errors.Join(err, w.apply(ctx, desired))
		}
		w.mu.Lock()
		if remove || desired != nil {
			w.applied, w.applyErr = desired, err
		}
		switch {
		case desired != nil:
			w.version, w.hasVersion = desired.Version, true
		case remove:
			w.version, w.hasVersion = "", false
		}
		w.appliedGen = gen
		again := w.gen != gen
		w.mu.Unlock()
		if ctx.Err() != nil {
			return true
		}
		if !again {
			if desired != nil {
				signal(w.heartbeatNow)
			}
			return err != nil
		}
	}
}

// apply hands one configuration to the workload runner and the
// synchroniser; both are attempted even when one fails.
func (w *Worker) apply(ctx context.Context, m *config.Message) error {
	log := w.log.With(zap.String("version", m.Version))
	plan, err := Translate(m, w.VolumesDir())
	if err != nil {
		w.warn("ApplyFailed", err.Error())
		return fmt.Errorf("translate configuration: %w", err)
	}
	for _, msg := range plan.Warnings {
		log.Warn(msg)
		w.warn("DataNotSynchronised", msg)
	}
	var errs []error
	w.wl.SetMonitorInterval(time.Duration(m.WorkloadsMonitoringInterval) * time.Second)
	if err := w.wl.Apply(ctx, plan.Workloads); err != nil {
		log.Error("applying workloads failed", zap.Error(err))
		w.warn("WorkloadsApplyFailed", fmt.Sprintf("configuration %s: %v", m.Version, err))
		errs = append(errs, fmt.Errorf("apply workloads: %w", err))
	}
	// What a removed workload wrote before its pod stopped still goes up.
	w.finalEgress(ctx, removedEgress(w.mappings, plan.Mappings))
	if err := w.ds.Configure(plan.Endpoint, plan.Mappings); err != nil {
		log.Error("configuring data synchronisation failed", zap.Error(err))
		w.warn("DataSyncConfigureFailed", fmt.Sprintf("configuration %s: %v", m.Version, err))
		errs = append(errs, fmt.Errorf("configure data sync: %w", err))
	} else {
		w.mappings = plan.Mappings
	}
	w.mu.Lock()
	w.mappingsOf = plan.MappingsOf
	w.syncOff = plan.Endpoint == nil
	w.mu.Unlock()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	storage := "none"
	if plan.Endpoint != nil {
		storage = plan.Endpoint.String() // never carries credentials
	}
	log.Info("configuration applied", zap.Int("workloads", len(plan.Workloads)), zap.Int("mappings", len(plan.Mappings)), zap.String("storage", storage))
	w.info("ConfigurationApplied", fmt.Sprintf("configuration %s applied: %d workloads, %d data mappings", m.Version, len(plan.Workloads), len(plan.Mappings)))
	return nil
}

// finalEgress runs the last egress pass of mappings about to stop, bounded
// by FinalSyncTimeout; a failure is reported, not retried.
func (w *Worker) finalEgress(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.opts.FinalSyncTimeout)
	defer cancel()
	w.log.Info("final egress pass of removed data paths", zap.Strings("mappings", ids))
	if err := w.ds.SyncNow(ctx, ids...); err != nil {
		w.log.Warn("final egress pass failed", zap.Strings("mappings", ids), zap.Error(err))
		w.warn("FinalSyncFailed", fmt.Sprintf("last upload of %s: %v", strings.Join(ids, ", "), err))
	}
}

// removedEgress lists the egress mappings of old that next no longer has.
func removedEgress(old, next []datasync.Mapping) []string {
	kept := make(map[string]bool, len(next))
	for _, m := range next {
		kept[m.ID] = true
	}
	var ids []string
	for _, m := range old {
		if m.Direction == datasync.Egress && !kept[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// removeEverything carries out an unregistration: synchronisation stops
// and forgets its journal, workloads are removed.
func (w *Worker) removeEverything(ctx context.Context) error {
	var errs []error
	if err := w.ds.RemoveAll(); err != nil {
		errs = append(errs, fmt.Errorf("remove data sync state: %w", err))
	}
	if err := w.wl.RemoveAll(ctx); err != nil {
		errs = append(errs, fmt.Errorf("remove workloads: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		w.log.Error("removing everything after disconnect failed", zap.Error(err))
	} else {
		w.log.Info("removed workloads and data synchronisation state")
		w.mappings = nil
		w.mu.Lock()
		w.mappingsOf = nil
		w.mu.Unlock()
	}
	return err
}
