package syncstatus

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// identity are the fields that name a mapping: labels of the info metric,
// not values.
var identity = map[string]bool{"id": true, "direction": true, "local_dir": true, "bucket": true, "prefix": true}

// help describes the metrics of the known fields; any other field gets a
// generic description.
var help = map[string]string{
	"files_total":              "Files moved since the worker started.",
	"bytes_total":              "Bytes moved since the worker started.",
	"files_last_pass":          "Files moved by the last full pass.",
	"bytes_last_pass":          "Bytes moved by the last full pass.",
	"pending":                  "Files known to differ and not yet moved (the backlog).",
	"refused":                  "Files or objects the disk guard or the key checks would not write.",
	"unreadable":               "Entries the last pass could not read.",
	"conflicts":                "Local edits kept as conflict copies since the worker started.",
	"throttled":                "1 while a transfer waits on the bandwidth limit.",
	"last_error":               "1 while the mapping has an error (its text is in device-worker status).",
	"last_attempt":             "When the last pass started.",
	"last_success":             "When the last pass that worked ended.",
	"oldest_pending":           "When the oldest change not yet synced was first seen.",
	"oldest_unsent":            "When the oldest change not yet in the bucket was made (files held open included).",
	"bytes_saved_by_part_copy": "Bytes of growing and rotated files copied server-side instead of sent, since the worker started.",
	"status_written":           "When the worker wrote these figures.",
	"mapping_info":             "The mappings (data paths) of the device; always 1.",
}

// Metrics writes the Prometheus text format of v (node_exporter's textfile
// collector), one family per field, generically:
//
//   - a number: flotta_sync_<field>, a counter if the name ends in _total,
//     else a gauge;
//   - a boolean: a gauge, 0 or 1;
//   - a time (RFC 3339): flotta_sync_<field>_timestamp_seconds;
//   - last_error (and any field ending in "error"): a gauge, 1 while set;
//   - another string (such as a mode): flotta_sync_<field>_info with the
//     value as a label, always 1.
//
// Every sample is labelled with mapping and direction.
func Metrics(v View) []byte {
	fams := map[string]*family{}
	add := func(name, typ, about string, labels [][2]string, value float64) {
		f := fams[name]
		if f == nil {
			f = &family{typ: typ, help: about}
			fams[name] = f
		}
		f.samples = append(f.samples, sample{labels, value})
	}
	add("flotta_sync_status_written_timestamp_seconds", "gauge", help["status_written"], nil, seconds(v.Written))
	for _, m := range v.Mappings {
		id, _ := m["id"].(string)
		dir, _ := m["direction"].(string)
		base := [][2]string{{"mapping", id}, {"direction", dir}}
		info := slices.Clone(base)
		for _, k := range []string{"bucket", "prefix", "local_dir"} {
			s, _ := m[k].(string)
			info = append(info, [2]string{k, s})
		}
		add("flotta_sync_mapping_info", "gauge", help["mapping_info"], info, 1)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if identity[k] {
				continue
			}
			about := help[k]
			if about == "" {
				about = "The sync status field " + k + "."
			}
			name := "flotta_sync_" + metricName(k)
			switch x := m[k].(type) {
			case json.Number:
				f, err := x.Float64()
				if err != nil {
					continue
				}
				typ := "gauge"
				if strings.HasSuffix(name, "_total") {
					typ = "counter"
				}
				add(name, typ, about, base, f)
			case bool:
				add(name, "gauge", about, base, boolValue(x))
			case string:
				if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
					add(name+"_timestamp_seconds", "gauge", about, base, seconds(t))
				} else if strings.HasSuffix(k, "error") {
					add(name, "gauge", about, base, boolValue(x != ""))
				} else {
					add(name+"_info", "gauge", about, append(slices.Clone(base), [2]string{metricName(k), x}), 1)
				}
			}
		}
	}
	// The fields omitted when zero (omitempty, omitzero) are absent from
	// some mappings: their families have fewer samples, which is valid.
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		f := fams[name]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(f.help), name, f.typ)
		for _, s := range f.samples {
			b.WriteString(name)
			if len(s.labels) > 0 {
				b.WriteByte('{')
				for i, l := range s.labels {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, "%s=\"%s\"", l[0], escapeLabel(l[1]))
				}
				b.WriteByte('}')
			}
			fmt.Fprintf(&b, " %s\n", formatValue(s.value))
		}
	}
	return []byte(b.String())
}

type family struct {
	typ, help string
	samples   []sample
}

type sample struct {
	labels [][2]string
	value  float64
}

// metricName keeps the letters, digits and underscores of a field name.
func metricName(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, k)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func seconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func formatValue(f float64) string {
	return fmt.Sprintf("%g", f)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
