package e2e_test

// Issue 24 end to end: the real worker under the dev dispatcher keeps its
// sync status where "device-worker status" reads it, and writes its figures
// for node_exporter's textfile collector.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusCommandAndMetricsFile(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "textfile", "flotta.prom")
	dv, _ := statsDevice(t, deviceOptions{args: []string{"--env", "FLOTTA_METRICS_FILE=" + metrics}})
	dv.waitObject(t, "statistics/s-1.txt", 30*time.Second)

	// The metrics file follows the status: parsed as Prometheus does.
	sampleOf := func(fams map[string]*dto.MetricFamily, name, mapping string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "mapping" && l.GetValue() == mapping {
					if m.Counter != nil {
						return m.GetCounter().GetValue(), true
					}
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	var fams map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(metrics)
		if err != nil {
			return false
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err = p.TextToMetricFamilies(bytes.NewReader(data))
		require.NoError(t, err, "%s", data)
		n, ok := sampleOf(fams, "flotta_sync_files_total", egressID)
		return ok && n > 0
	}, 30*time.Second, 200*time.Millisecond, "the metrics file never showed the upload")
	assert.Equal(t, dto.MetricType_COUNTER, fams["flotta_sync_files_total"].GetType())
	ok, _ := sampleOf(fams, "flotta_sync_last_error", egressID)
	assert.Equal(t, 0.0, ok)
	_, listed := sampleOf(fams, "flotta_sync_mapping_info", ingressID)
	assert.True(t, listed, "the ingress mapping is exported too")
	last, _ := sampleOf(fams, "flotta_sync_last_success_timestamp_seconds", egressID)
	assert.InDelta(t, float64(time.Now().Unix()), last, 120)

	// A person at the device: the built device-worker reads the data dir.
	cmd := exec.Command(filepath.Join(binDir, "device-worker"), "status")
	cmd.Env = []string{"FLOTTA_DATA_DIR=" + dv.dataDir}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("device-worker status:\n%s", out)
	for _, want := range []string{"DATA PATH", egressID, ingressID, "LAST SUCCESS", "BACKLOG"} {
		assert.Contains(t, string(out), want)
	}
	dv.assertNoSecrets(t, accessKey, secretKey)
}
