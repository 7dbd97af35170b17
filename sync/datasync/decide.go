package datasync

import (
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
	actAdopt
	// actDownload (ingress): write the object to the local file (a local
	// file with the object's content and no journal row is adopted).
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
	// (keys.ConflictName), then the object is downloaded. The transfer
	// checks again, by content, just before the file is replaced.
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
		return decision{actDownload, "new object"}
	case !sameObject(r, o) && !r.Refused && l != nil && mayBeEdited(r, l):
		return decision{actConflict, "file changed locally and object changed: the local version is kept as a conflict copy"}
	case !sameObject(r, o):
		return decision{actDownload, "object changed"}
	case r.Refused && sc.localWalked && sc.remoteListed:
		return decision{actDownload, "refused earlier, tried again by the reconcile"}
	case r.Refused:
		return decision{actRefused, "refused earlier"}
	case sc.localWalked && l == nil:
		return decision{actDownload, "file deleted locally"}
	}
	return decision{actSkip, "unchanged"}
}
