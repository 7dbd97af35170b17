// Package datasync keeps local directories and S3 prefixes in sync, both ways.
// It knows nothing of yggdrasil or podman: it takes an S3 endpoint and a set of
// mappings (Configure), and runs a pass over each mapping on change events
// (Changed: the file-system watcher of an egress source, the bucket's
// notifications for ingress), on a schedule that is the safety net for what
// events miss (Run), and, now and then, a reconcile that compares each side
// with the other (PassOptions.Reconcile).
//
// Each mapping is owned by one goroutine, its service loop (mapping.go): it
// holds the mapping's schedule, status, ingress mode and retry backoff, and
// everyone else (the Engine's methods, the watchers, the notification
// streams, the passes it starts) sends it messages. Status reads the
// snapshot the loop publishes.
//
// A pass is plan then execute: a walker yields the local files in key order,
// the journal (sync/journal) its rows in the same order, the bucket's listing
// its objects in the same order; the march walks the three in lock step and
// hands each name to one pure decision function per direction; actions that
// move data become jobs run by bounded transfers, and one recorder writes
// every outcome to the journal, the status and the retry backoff. What the
// engine promises is in docs/sync.md; its shape in docs/design.md.
//
// The files, one job each (doc.go is this comment):
//   - types.go: the public types: Direction, Endpoint, Mapping, Retention,
//     Order, Options and their defaults, MappingStatus;
//   - engine.go: the Engine and its API: New, Configure, Run, SyncNow, Sync,
//     Changed, SetWatched, Status, RemoveAll, Close (each a message to the
//     mappings' loops); config.go: Configure and the validation of a Mapping;
//   - mapping.go: a mapping's service loop, its messages and its state (the
//     one place a mapping's state changes), and memo, what passes share;
//   - schedule.go: when a mapping's next full pass is due (interval, jitter,
//     watched, adaptive poll, reconcile, prompt);
//   - runpass.go: one pass of a mapping as its loop asks for it (runPass,
//     prepare), the pass statistics, and finishPass, which writes them into
//     the loop's status;
//   - transfer.go: the bounded executor (executeReleasing), copy buffers and
//     serverWide errors;
//   - hooks.go: every test seam and tunable of the Engine, in one struct;
//   - backend.go: the Backend interface over the bucket (list in key order,
//     stat, put, get, ranged get) and its minio-go implementation;
//   - multipart.go: multipart uploads the engine drives itself, resuming an
//     unfinished one from its stored parts, and the retries of uploads;
//   - bandwidth.go: the bandwidth limit's direction of a mapping and the
//     count of its transfers in flight (the status's throttled);
//   - flow.go: the engine-wide limit of transfers in flight, fixed or
//     adaptive (it follows the goodput of the link);
//   - walk.go: the local walker, in key order, bounded by the biggest
//     directory; statLocal for change events;
//   - march.go: item and scope, and the march of local files, journal rows
//     and the listing in lock step;
//   - marchdir.go: MarchDir and the ETag helpers, the walker, march and
//     ETag rules exported for sync/check;
//   - decide.go: the actions and the pure decision functions decideEgress and
//     decideIngress (decide_test.go has their tables; dryrun_test.go runs
//     every ingress decision as a dry run and as a real pass);
//   - pass.go: the one pass skeleton of both directions (sources of a full
//     pass or of a change event, plan, execute, and the recorder, the one
//     writer of every outcome), the per-file retry backoff, PassOptions and
//     dry runs (the same plan, an executor that does nothing);
//   - egress.go: the upload transfer: settled files, adoption of objects that
//     already hold the file's content, confirmation for retention;
//   - ingress.go: the download transfer: the target directory, the disk
//     guard, atomic downloads (whole or in ranges) checked against the ETag;
//   - groupcommit.go: downloads made durable in groups (one syncfs) before
//     they are renamed into place;
//   - conflict.go: the ingress planner (parent objects, restores, and what
//     decideIngress needs of the local file: stat, MD5, version mark in an
//     xattr), refusals, and the check before the rename that the file is
//     still the one decided on, with conflict copies of local edits;
//   - mtime.go: the file's modification time carried as object metadata, the
//     way rclone does;
//   - growing.go: files that never settle (logs held open): prefix snapshots
//     within MaxStaleness, part copies of what the bucket already holds,
//     rotation; parts.go: the Backend's part assembly (UploadPartCopy);
//   - retention.go: removal of confirmed uploads (Mapping.Retention): the
//     decision, the cut-off from a bounded histogram, the removal;
//   - order.go: the catch-up order of an egress backlog, in rounds of bounded
//     memory;
//   - watchers.go: the inotify watchers of egress sources while Run runs
//     (sync/watch), and their health, which sets the safety-net interval;
//   - poll.go: the adaptive poll step of ingress mappings (nextPoll);
//   - notify.go: push-based ingress: one bucket-notification stream per
//     bucket (sync/s3wire), its events applied through Changed;
//   - mode.go: the ingress mode in the status (push or poll, and why);
//   - progress.go: Progress, the live counters of a pass for flotta-sync.
package datasync
