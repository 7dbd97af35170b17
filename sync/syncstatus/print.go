package syncstatus

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
)

// column is one column of the status table. A column with keys is shown
// only when some mapping has one of them: the fields other work adds to
// datasync.MappingStatus get their column here, and it appears once the
// worker reports them.
type column struct {
	title string
	keys  []string // any of these makes the column shown; nil: always
	cell  func(m mapping, now time.Time) string
}

var columns = []column{
	{"DATA PATH", nil, func(m mapping, _ time.Time) string { return m.str("id") }},
	{"DIRECTION", nil, func(m mapping, _ time.Time) string { return m.str("direction") }},
	// How ingress learns of new objects: push (bucket notifications) or
	// poll, and why it polls (docs/s3-servers.md).
	{"MODE", []string{"ingress_mode"}, func(m mapping, _ time.Time) string {
		mode := m.first("ingress_mode")
		if r := m.str("ingress_reason"); r != "" {
			mode += " (" + r + ")"
		}
		return mode
	}},
	{"LAST SUCCESS", nil, func(m mapping, now time.Time) string { return ago(m.time("last_success"), now) }},
	{"BACKLOG", nil, func(m mapping, now time.Time) string {
		s := fmt.Sprintf("%d files", m.num("pending"))
		if t := m.time("oldest_pending"); !t.IsZero() {
			s += ", oldest " + ago(t, now)
		}
		return s
	}},
	{"ERRORS", nil, func(m mapping, _ time.Time) string {
		var parts []string
		for _, k := range []string{"refused", "unreadable", "conflicts"} {
			if n := m.num(k); n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, k))
			}
		}
		if m.str("last_error") != "" {
			parts = append([]string{"error (below)"}, parts...)
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}},
	// Retention (docs/retention.md): uploaded files still on the device,
	// and what was removed after a confirmed upload.
	{"KEPT LOCALLY", []string{"kept_bytes", "removed_bytes"}, func(m mapping, _ time.Time) string {
		s := fmt.Sprintf("%d files, %s", m.num("kept_files"), bytesize.Format(m.num("kept_bytes")))
		if n := m.num("removed_files"); n > 0 {
			s += fmt.Sprintf(" (%d removed, %s)", n, bytesize.Format(m.num("removed_bytes")))
		}
		if m.str("short_of_space") != "" {
			s += ", short of space"
		}
		return s
	}},
	{"MOVED SINCE START", nil, func(m mapping, _ time.Time) string {
		return fmt.Sprintf("%d files, %s", m.num("files_total"), bytesize.Format(m.num("bytes_total")))
	}},
}

// shown are the fields the table or the error lines already say.
var shown = map[string]bool{"id": true, "direction": true, "last_success": true, "pending": true, "oldest_pending": true,
	"refused": true, "unreadable": true, "conflicts": true, "last_error": true, "files_total": true, "bytes_total": true,
	"ingress_mode": true, "ingress_reason": true, "kept_files": true, "kept_bytes": true, "removed_files": true, "removed_bytes": true}

// Print writes v for a person at the device: a table of the data paths,
// their errors, then with all every other field of each.
func Print(w io.Writer, v View, now time.Time, all bool) {
	fmt.Fprintf(w, "sync status written %s (%s)", v.Written.Local().Format(time.DateTime), ago(v.Written, now))
	if v.Worker != "" {
		fmt.Fprintf(w, " by device-worker %s", v.Worker)
	}
	fmt.Fprintln(w)
	if now.Sub(v.Written) > 3*Refresh {
		fmt.Fprintf(w, "warning: the worker refreshes this every %s: it is not running, or cannot write\n", Refresh)
	}
	if len(v.Mappings) == 0 {
		fmt.Fprintln(w, "no data paths configured")
		return
	}
	ms := make([]mapping, len(v.Mappings))
	for i, m := range v.Mappings {
		ms[i] = mapping(m)
	}
	var cols []column
	for _, c := range columns {
		if c.keys == nil || slices.ContainsFunc(ms, func(m mapping) bool {
			return slices.ContainsFunc(c.keys, func(k string) bool { _, ok := m[k]; return ok })
		}) {
			cols = append(cols, c)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c.title)
	}
	fmt.Fprintln(tw)
	for _, m := range ms {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c.cell(m, now))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	for _, m := range ms {
		if e := m.str("last_error"); e != "" {
			fmt.Fprintf(w, "\n%s: %s\n", m.str("id"), e)
		}
	}
	if !all {
		return
	}
	for _, m := range ms {
		fmt.Fprintf(w, "\n%s:\n", m.str("id"))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !shown[k] {
				fmt.Fprintf(w, "  %s: %v\n", k, m[k])
			}
		}
	}
}

// mapping is one mapping of a View.
type mapping map[string]any

func (m mapping) str(k string) string {
	s, _ := m[k].(string)
	return s
}

func (m mapping) first(keys ...string) string {
	for _, k := range keys {
		if s := m.str(k); s != "" {
			return s
		}
	}
	return "-"
}

func (m mapping) num(k string) int64 {
	n, _ := m[k].(json.Number)
	i, err := n.Int64()
	if err != nil {
		f, _ := n.Float64()
		return int64(f)
	}
	return i
}

func (m mapping) time(k string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, m.str(k))
	return t
}

// ago says how long before now t was: "never", "12s ago", "3m ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.Local().Format(time.DateTime)
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	case d < 48*time.Hour:
		return d.Round(time.Hour).String() + " ago"
	}
	return t.Local().Format(time.DateTime)
}
