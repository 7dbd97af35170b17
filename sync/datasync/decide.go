package datasync

import (
	"strings"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// action is what a pass does with one name.
type action uint8

const (
	// actSkip: in sync, nothing to do.
	actSkip action = iota
	// actUpload (egress): send the local file.
	actUpload
	// actAdopt (egress): no journal row, and an object of the file's size is
	// there: keep it when it holds the file's content, else upload.
	// (ingress): the local file already holds the object's content (its MD5
	// is the object's ETag): recorded, not downloaded.
	actAdopt
	// actDownload (ingress): write the object to the local file.
	actDownload
	// actRefuse (ingress): the object's key may not become a local path.
	actRefuse
	// actRefused (ingress): refused before and unchanged: counted, not
	// logged again.
	actRefused
	// actPrune: the journal row describes a file or object that is gone.
	actPrune
	// actConflict (ingress): both the local file and the object changed
	// since the last download: the local version is kept as a conflict copy
	// (keys.ConflictName), then the object is downloaded. Also a local file
	// the journal does not know that differs from the object. The transfer
	// only checks, just before the rename, that the file is still the one
	// decided on.
	actConflict
	// actConfirm (egress, retention): the file was uploaded without a
	// confirmation; its object is compared with it (retention.go).
	actConfirm
	// actRemove (egress, retention): the file's upload is confirmed and
	// committed, and the retention lets it go (decideRetention).
	actRemove
)

var actionNames = [...]string{"skip", "upload", "adopt", "download", "refuse", "refused", "prune", "conflict", "confirm", "remove"}

func (a action) String() string { return actionNames[a] }

// decision is an action and why it was chosen (for logs, dry runs and tests).
type decision struct {
	act action
	why string
}

// sameStat reports whether the file is as the journal row recorded it.
func sameStat(r *journal.Record, s *stablefile.Stat) bool {
	return r.Size == s.Size && r.MtimeNs == s.MtimeNs && r.CtimeNs == s.CtimeNs && r.Inode == s.Inode
}

// decideEgress is the whole egress decision for one name. It is pure: it
// looks at nothing but its arguments.
//
// Egress never deletes objects: an object without a local file is left
// alone, whatever the journal says.
func decideEgress(it item, sc scope) decision {
	l, r, o := it.local, it.row, it.remote
	switch {
	case l == nil && r == nil:
		return decision{actSkip, "not ours"}
	case l == nil && sc.localWalked:
		return decision{actPrune, "file deleted"}
	case l == nil:
		return decision{actSkip, "file not looked at"}
	case r == nil && o != nil && o.Size == l.Size:
		return decision{actAdopt, "unknown file, object of the same size"}
	case r == nil:
		return decision{actUpload, "new file"}
	case !sameStat(r, l):
		return decision{actUpload, "file changed"}
	case !sc.remoteListed && sc.confirm && !r.Confirmed && !r.Unconfirmable:
		return decision{actConfirm, "uploaded without confirmation: compared with its object before retention may remove it"}
	case !sc.remoteListed:
		return decision{actSkip, "unchanged"}
	case o == nil:
		return decision{actUpload, "object missing from the bucket"}
	case o.Size != r.Size || (r.ETag != "" && o.ETag != r.ETag):
		return decision{actUpload, "object replaced in the bucket"}
	}
	if sc.confirm && !r.Confirmed && !r.Unconfirmable {
		return decision{actConfirm, "uploaded without confirmation: compared with its object before retention may remove it"}
	}
	return decision{actSkip, "unchanged"}
}

// sameObject reports whether the object is the version the row recorded.
func sameObject(r *journal.Record, o *Object) bool {
	return r.ETag == o.ETag && r.Size == o.Size
}

// decideIngress is the whole ingress decision for one name of a mapping
// under prefix. It is pure: it looks at nothing but its arguments.
//
// Ingress never deletes local files: a row whose object is gone is pruned
// and the file stays.
func decideIngress(it item, sc scope, prefix string) decision {
	d := decideObject(it, sc, prefix)
	if it.unsafe != nil && (d.act == actDownload || d.act == actConflict || d.act == actAdopt) {
		return decision{actRefuse, "its path cannot be written safely"}
	}
	return d
}

// decideObject is decideIngress before the path's safety is known.
func decideObject(it item, sc scope, prefix string) decision {
	l, r, o := it.local, it.row, it.remote
	if o == nil {
		switch {
		case r == nil:
			return decision{actSkip, "not ours"}
		case sc.remoteListed:
			return decision{actPrune, "object deleted"}
		case r.Refused:
			return decision{actSkip, "refused earlier"}
		case sc.localWalked && l == nil:
			// A change event (no listing): fetch the version the row names.
			return decision{actDownload, "file deleted locally"}
		}
		return decision{actSkip, "object not looked at"}
	}
	if _, err := keys.Rel(prefix, o.Key); err != nil {
		if r != nil && r.Refused && sameObject(r, o) {
			return decision{actRefused, "hostile key, refused earlier"}
		}
		return decision{actRefuse, "hostile key"}
	}
	if it.clash != "" {
		if r != nil && r.Refused && sameObject(r, o) {
			return decision{actRefused, "a parent directory is an object too, refused earlier"}
		}
		return decision{actRefuse, "a parent directory is an object too"}
	}
	switch {
	case r == nil:
		return decideLocal(it, "new object")
	case !sameObject(r, o):
		return decideLocal(it, "object changed")
	case r.Refused && sc.localWalked && sc.remoteListed:
		return decideLocal(it, "refused earlier, tried again by the reconcile")
	case r.Refused:
		return decision{actRefused, "refused earlier"}
	case sc.localWalked && l == nil:
		return decision{actDownload, "file deleted locally"}
	}
	return decision{actSkip, "unchanged"}
}

// decideLocal decides on an object to be written over the local file (if
// any): download, adopt the file when it already holds the object, or keep
// it as a conflict copy first when it holds a version made on the device.
func decideLocal(it item, why string) decision {
	l, o := it.local, it.remote
	switch {
	case l == nil:
		return decision{actDownload, why}
	case it.localSum != "" && isMD5(o.ETag) && strings.EqualFold(it.localSum, o.ETag):
		return decision{actAdopt, "the local file already holds the object"}
	case !localEdited(it):
		return decision{actDownload, why}
	case it.row == nil || it.row.Refused:
		return decision{actConflict, "a local file the journal does not know differs from the object: it is kept as a conflict copy"}
	}
	return decision{actConflict, "file changed locally and object changed: the local version is kept as a conflict copy"}
}

// localEdited reports whether the local file holds something ingress did
// not write: neither the version the row says was downloaded (same stat, or
// same content when the row's ETag is an MD5) nor the object about to be
// written (same size and mtime: a crash after the rename, before the journal
// recorded it), and it carries no version mark of ingress (markVersion)
// with its current size and mtime. A file no row describes is the device's
// own.
func localEdited(it item) bool {
	l, r, o := it.local, it.row, it.remote
	if l.Size == o.Size && l.MtimeNs == o.LastModified.UnixNano() {
		return false
	}
	known := r != nil && !r.Refused
	if known && !mayBeEdited(r, l) {
		return false
	}
	if known && isMD5(r.ETag) && l.Size == r.Size && it.localSum != "" && strings.EqualFold(it.localSum, r.ETag) {
		return false // touched, not changed
	}
	return !it.localMarked
}

// needsLocalCheck reports whether decideLocal must look into the local file
// (its MD5 where it can settle something, its version mark): only for a
// file that the journal does not vouch for and an object to be written.
func needsLocalCheck(it item) (check, sum bool) {
	l, r, o := it.local, it.row, it.remote
	if l == nil || o == nil || (r != nil && !r.Refused && sameObject(r, o)) {
		return false, false
	}
	known := r != nil && !r.Refused
	if known && !mayBeEdited(r, l) {
		return false, false
	}
	sum = (isMD5(o.ETag) && l.Size == o.Size) || (known && isMD5(r.ETag) && l.Size == r.Size)
	return true, sum
}
