package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
)

// Retention and catch-up order of egress sources are set on the workload,
// as annotations. flotta-operator passes an EdgeWorkload's annotations that
// start with "podman/" with that prefix removed, so the EdgeWorkload carries
// "podman/data-sync.flotta.io/keep-size" and the worker reads
// "data-sync.flotta.io/keep-size". Each value is either one setting for
// every egress source of the workload ("2GiB") or settings per source
// ("stats=2GiB,logs/app=100MiB"); a source named must be one of the
// workload's data.egress sources. See docs/retention.md.
const (
	// AnnotationPrefix starts every data-sync annotation; an unknown key
	// under it is refused (a typo would otherwise keep every file).
	AnnotationPrefix = "data-sync.flotta.io/"
	// AnnotationRemoveAfterUpload: "true" or "false": remove each file
	// once its upload is confirmed.
	AnnotationRemoveAfterUpload = AnnotationPrefix + "remove-after-upload"
	// AnnotationKeepSize: bytes of uploaded files kept, oldest removed
	// first ("2GiB", "500M").
	AnnotationKeepSize = AnnotationPrefix + "keep-size"
	// AnnotationKeepAge: uploaded files modified longer ago are removed
	// ("24h", "90m", "7d").
	AnnotationKeepAge = AnnotationPrefix + "keep-age"
	// AnnotationUploadOrder: "oldest-first" or "newest-first".
	AnnotationUploadOrder = AnnotationPrefix + "upload-order"
	// AnnotationMaxStaleness: how long a change of a file that never
	// settles (a log held open) may wait before it is uploaded ("30s",
	// "5m"). Overrides the device's FLOTTA_MAX_STALENESS (which alone can
	// turn the bound off); see docs/growing-files.md.
	AnnotationMaxStaleness = AnnotationPrefix + "max-staleness"
)

// Upload orders of AnnotationUploadOrder.
const (
	OrderOldestFirst = "oldest-first"
	OrderNewestFirst = "newest-first"
)

// EgressSettings is the retention, order and staleness bound of one egress
// source.
type EgressSettings struct {
	RemoveAfterUpload bool
	KeepBytes         int64         // 0: no bound
	KeepAge           time.Duration // 0: no bound
	Order             string        // "", OrderOldestFirst or OrderNewestFirst
	MaxStaleness      time.Duration // 0 keeps the device's setting
}

var annotationParsers = map[string]func(v string, s *EgressSettings) error{
	AnnotationRemoveAfterUpload: func(v string, s *EgressSettings) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		s.RemoveAfterUpload = b
		return nil
	},
	AnnotationKeepSize: func(v string, s *EgressSettings) error {
		n, err := bytesize.Parse(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q: want a size such as 2GiB or 500M", v)
		}
		s.KeepBytes = n
		return nil
	},
	AnnotationKeepAge: func(v string, s *EgressSettings) error {
		d, err := parseAge(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q: want a duration such as 24h, 90m or 7d", v)
		}
		s.KeepAge = d
		return nil
	},
	AnnotationUploadOrder: func(v string, s *EgressSettings) error {
		if v != OrderOldestFirst && v != OrderNewestFirst {
			return fmt.Errorf("%q: want %s or %s", v, OrderOldestFirst, OrderNewestFirst)
		}
		s.Order = v
		return nil
	},
	AnnotationMaxStaleness: func(v string, s *EgressSettings) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return fmt.Errorf("%q: want a duration of at least 1s such as 30s or 5m", v)
		}
		s.MaxStaleness = d
		return nil
	},
}

// parseAge is time.ParseDuration with days ("7d") too.
func parseAge(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 32)
		if err != nil {
			return 0, err
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// EgressSettings returns the retention and order of each egress source of
// the workload (by cleaned source path) from its annotations; a source no
// annotation names is absent. Errors name the annotation, such as
// `annotations[data-sync.flotta.io/keep-size]: "lots": want a size ...`.
func (w *Workload) EgressSettings() (map[string]EgressSettings, error) {
	var keys []string
	for k := range w.Annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	sort.Strings(keys)
	var sources []string
	if w.Data != nil {
		for _, e := range w.Data.Egress {
			sources = append(sources, CleanPath(e.Source))
		}
	}
	out := map[string]EgressSettings{}
	for _, k := range keys {
		parse, ok := annotationParsers[k]
		if !ok {
			return nil, fmt.Errorf("annotations[%s]: unknown data-sync annotation (known: %s)", k, strings.Join(knownAnnotations(), ", "))
		}
		if len(sources) == 0 {
			return nil, fmt.Errorf("annotations[%s]: the workload has no data.egress source", k)
		}
		if err := applyAnnotation(strings.TrimSpace(w.Annotations[k]), sources, parse, out); err != nil {
			return nil, fmt.Errorf("annotations[%s]: %w", k, err)
		}
	}
	return out, nil
}

// applyAnnotation applies one annotation's value: one setting for every
// source, or SOURCE=VALUE pairs separated by commas.
func applyAnnotation(v string, sources []string, parse func(string, *EgressSettings) error, out map[string]EgressSettings) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	if !strings.Contains(v, "=") {
		for _, src := range sources {
			s := out[src]
			if err := parse(v, &s); err != nil {
				return err
			}
			out[src] = s
		}
		return nil
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(v, ",") {
		src, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		src, val = CleanPath(strings.TrimSpace(src)), strings.TrimSpace(val)
		if !ok || val == "" {
			return fmt.Errorf("%q: want SOURCE=VALUE pairs separated by commas, or one VALUE for every source", pair)
		}
		if !contains(sources, src) {
			return fmt.Errorf("%q is not a data.egress source of the workload (sources: %s)", src, strings.Join(sources, ", "))
		}
		if seen[src] {
			return fmt.Errorf("%q is named twice", src)
		}
		seen[src] = true
		s := out[src]
		if err := parse(val, &s); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		out[src] = s
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func knownAnnotations() []string {
	out := make([]string, 0, len(annotationParsers))
	for k := range annotationParsers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
