package syncstatus

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// engineWithPasses runs a real engine against versitygw: an egress mapping
// that uploaded two files and an ingress mapping that fails (no bucket).
func engineWithPasses(t *testing.T) *datasync.Engine {
	srv := s3test.Start(t, s3test.WithBuckets("bkt"))
	root := t.TempDir()
	src := filepath.Join(root, "out")
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "b"), bytes.Repeat([]byte("b"), 3000), 0o644))
	time.Sleep(100 * time.Millisecond) // older than the engine's stable-file window
	eng, err := datasync.New(datasync.Options{StateDir: t.TempDir(), Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1},
		zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close() })
	ep := &datasync.Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}
	require.NoError(t, eng.Configure(ep, []datasync.Mapping{
		{ID: "w/egress/out", Direction: datasync.Egress, Root: root, LocalDir: src, Bucket: "bkt", Prefix: "up"},
		{ID: "w/ingress/in", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "in"), Bucket: "no-such-bucket", Prefix: "down"},
	}))
	require.NoError(t, eng.SyncNow(t.Context(), "w/egress/out"))
	_ = eng.SyncNow(t.Context(), "w/ingress/in") // fails: the bucket does not exist
	return eng
}

func parseMetrics(t *testing.T, data []byte) map[string]*familyView {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	require.NoError(t, err, "%s", data)
	out := map[string]*familyView{}
	for name, f := range fams {
		fv := &familyView{typ: f.GetType().String(), samples: map[string]float64{}}
		for _, m := range f.Metric {
			var key []string
			for _, l := range m.Label {
				if l.GetName() == "mapping" || l.GetName() == "ingress_mode" {
					key = append(key, l.GetValue())
				}
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			fv.samples[strings.Join(key, ",")] = v
		}
		out[name] = fv
	}
	return out
}

type familyView struct {
	typ     string
	samples map[string]float64
}

func TestPublishWritesStatusAndMetrics(t *testing.T) {
	eng := engineWithPasses(t)
	dir := t.TempDir()
	p := &Publisher{Path: filepath.Join(dir, "sync", FileName), MetricsFile: filepath.Join(dir, "textfile", "flotta.prom"),
		Worker: "1.2.3", Status: eng.Status, Log: zaptest.NewLogger(t)}
	now := time.Now()
	require.NoError(t, p.Publish(now))

	v, err := Read(p.Path)
	require.NoError(t, err)
	assert.Equal(t, "1.2.3", v.Worker)
	assert.WithinDuration(t, now, v.Written, time.Second)
	require.Len(t, v.Mappings, 2)

	data, err := os.ReadFile(p.MetricsFile)
	require.NoError(t, err)
	m := parseMetrics(t, data)
	assert.Equal(t, "COUNTER", m["flotta_sync_files_total"].typ)
	assert.Equal(t, 2.0, m["flotta_sync_files_total"].samples["w/egress/out"])
	assert.Equal(t, 3005.0, m["flotta_sync_bytes_total"].samples["w/egress/out"])
	assert.Equal(t, "GAUGE", m["flotta_sync_pending"].typ)
	assert.Equal(t, 0.0, m["flotta_sync_last_error"].samples["w/egress/out"])
	assert.Equal(t, 1.0, m["flotta_sync_last_error"].samples["w/ingress/in"], "the ingress mapping fails")
	assert.InDelta(t, float64(time.Now().Unix()), m["flotta_sync_last_success_timestamp_seconds"].samples["w/egress/out"], 60)
	assert.NotContains(t, m["flotta_sync_last_success_timestamp_seconds"].samples, "w/ingress/in", "never succeeded")
	assert.Equal(t, 1.0, m["flotta_sync_mapping_info"].samples["w/ingress/in"])
	// The engine's ingress mode (a nested object) is exported flat.
	assert.Equal(t, 1.0, m["flotta_sync_ingress_mode_info"].samples["w/ingress/in,poll"], "%s", data)
	assert.NotContains(t, m, "flotta_sync_ingress_mode_info_info")
	assert.InDelta(t, float64(now.Unix()), m["flotta_sync_status_written_timestamp_seconds"].samples[""], 1)

	// Nothing changed: nothing written (the same inode, no temp file).
	before, err := os.Stat(p.MetricsFile)
	require.NoError(t, err)
	require.NoError(t, p.Publish(now.Add(time.Second)))
	after, err := os.Stat(p.MetricsFile)
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, after), "unchanged status, file left alone")
	// Once a minute it is written again, so a reader can tell a live worker.
	require.NoError(t, p.Publish(now.Add(Refresh+time.Second)))
	after, err = os.Stat(p.MetricsFile)
	require.NoError(t, err)
	assert.False(t, os.SameFile(before, after), "replaced by a rename")
	for _, d := range []string{filepath.Dir(p.Path), filepath.Dir(p.MetricsFile)} {
		entries, err := os.ReadDir(d)
		require.NoError(t, err)
		assert.Len(t, entries, 1, "no temp file left in %s", d)
	}
}

// TestNewFieldsNeedNoCode: fields other work adds to MappingStatus (such as
// an ingress mode or the bytes kept locally) are exported and printed
// without a change here; the known ones get their column.
func TestNewFieldsNeedNoCode(t *testing.T) {
	snap := []byte(`{"written":"2026-12-07T10:00:00Z","worker":"9","mappings":[
	 {"id":"a/ingress/x","direction":"ingress","bucket":"b","prefix":"p","local_dir":"/d",
	  "last_success":"2026-12-07T09:59:00Z","pending":3,"ingress":{"mode":"poll","reason":"no notifications","since":"2026-12-07T09:00:00Z"},
	  "kept_files":1,"kept_bytes":2048,"shiny_new_count":7,"last_error":"boom \"quoted\"\nsecond line"},
	 {"id":"a/egress/y","direction":"egress","bucket":"b","prefix":"q","local_dir":"/e","files_total":4,"bytes_total":4096}]}`)
	v, err := Parse(snap)
	require.NoError(t, err)
	m := parseMetrics(t, Metrics(v))
	assert.Equal(t, 1.0, m["flotta_sync_ingress_mode_info"].samples["a/ingress/x,poll"])
	assert.Equal(t, 2048.0, m["flotta_sync_kept_bytes"].samples["a/ingress/x"])
	assert.Equal(t, 7.0, m["flotta_sync_shiny_new_count"].samples["a/ingress/x"])
	assert.Equal(t, 1.0, m["flotta_sync_last_error"].samples["a/ingress/x"])

	var out bytes.Buffer
	Print(&out, v, time.Date(2026, 12, 7, 10, 0, 30, 0, time.UTC), true)
	text := out.String()
	for _, want := range []string{"DATA PATH", "MODE", "LAST SUCCESS", "BACKLOG", "ERRORS", "KEPT LOCALLY",
		"a/ingress/x", "poll", "1m30s ago", "3 files", "error (below)", "2.0 KiB", "4 files, 4.0 KiB",
		"a/ingress/x: boom \"quoted\"\nsecond line", "shiny_new_count: 7", "poll (no notifications)", "ingress_since: 2026-12-07T09:00:00Z"} {
		assert.Contains(t, text, want)
	}
	// Without those fields, no empty columns.
	v.Mappings = v.Mappings[1:]
	out.Reset()
	Print(&out, v, time.Date(2026, 12, 7, 10, 0, 30, 0, time.UTC), false)
	assert.NotContains(t, out.String(), "MODE")
	assert.NotContains(t, out.String(), "KEPT")
	assert.Contains(t, out.String(), "never")
}
