package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// retention.json is a message as flotta-operator sends it for an
// EdgeWorkload annotated "podman/data-sync.flotta.io/...": the prefix
// "podman/" removed.
func TestEgressSettingsFromOperatorMessage(t *testing.T) {
	m, err := config.Parse(readMessage(t, "retention.json"))
	require.NoError(t, err)
	got, err := m.Workloads[0].EgressSettings()
	require.NoError(t, err)
	assert.Equal(t, map[string]config.EgressSettings{
		"metrics":      {RemoveAfterUpload: true, Order: config.OrderNewestFirst},
		"camera/clips": {KeepBytes: 2 << 30, KeepAge: 24 * time.Hour, Order: config.OrderNewestFirst},
	}, got)
}

func TestEgressSettingsErrorsNameTheKey(t *testing.T) {
	wl := func(ann string) string {
		return `{"workloads":[{"name":"w","specification":"containers: []","annotations":{` + ann +
			`},"data":{"egress":[{"source":"a","target":"t"},{"source":"b/c","target":"u"}]}}]}`
	}
	for name, tc := range map[string]struct{ msg, err string }{
		"bad size":        {wl(`"data-sync.flotta.io/keep-size":"lots"`), `workloads[0].annotations[data-sync.flotta.io/keep-size]: "lots": want a size`},
		"zero size":       {wl(`"data-sync.flotta.io/keep-size":"0"`), `annotations[data-sync.flotta.io/keep-size]: "0"`},
		"bad age":         {wl(`"data-sync.flotta.io/keep-age":"a=soon"`), `annotations[data-sync.flotta.io/keep-age]: a: "soon": want a duration`},
		"bad bool":        {wl(`"data-sync.flotta.io/remove-after-upload":"yes please"`), `annotations[data-sync.flotta.io/remove-after-upload]: "yes please": want true or false`},
		"bad order":       {wl(`"data-sync.flotta.io/upload-order":"random"`), `annotations[data-sync.flotta.io/upload-order]: "random": want oldest-first or newest-first`},
		"bad staleness":   {wl(`"data-sync.flotta.io/max-staleness":"a=never"`), `annotations[data-sync.flotta.io/max-staleness]: a: "never": want a duration of at least 1s`},
		"tiny staleness":  {wl(`"data-sync.flotta.io/max-staleness":"10ms"`), `annotations[data-sync.flotta.io/max-staleness]: "10ms"`},
		"unknown source":  {wl(`"data-sync.flotta.io/keep-age":"x=1h"`), `annotations[data-sync.flotta.io/keep-age]: "x" is not a data.egress source of the workload (sources: a, b/c)`},
		"source twice":    {wl(`"data-sync.flotta.io/keep-age":"a=1h,a=2h"`), `"a" is named twice`},
		"typo in the key": {wl(`"data-sync.flotta.io/keep-sise":"1G"`), `annotations[data-sync.flotta.io/keep-sise]: unknown data-sync annotation`},
		"empty":           {wl(`"data-sync.flotta.io/keep-age":""`), `annotations[data-sync.flotta.io/keep-age]: empty value`},
		"no egress":       {`{"workloads":[{"name":"w","specification":"containers: []","annotations":{"data-sync.flotta.io/keep-age":"1h"}}]}`, `the workload has no data.egress source`},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := config.Parse([]byte(tc.msg))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), tc.err)
		})
	}

	// Per source, days, and other annotations left alone.
	m, err := config.Parse([]byte(wl(`"data-sync.flotta.io/keep-age":"a=7d, b/c/=90m","other.io/x":"y"`)))
	require.NoError(t, err)
	got, err := m.Workloads[0].EgressSettings()
	require.NoError(t, err)
	assert.Equal(t, map[string]config.EgressSettings{"a": {KeepAge: 7 * 24 * time.Hour}, "b/c": {KeepAge: 90 * time.Minute}}, got)

	// The staleness bound of growing files, per source.
	m, err = config.Parse([]byte(wl(`"data-sync.flotta.io/max-staleness":"a=2m,b/c=10s"`)))
	require.NoError(t, err)
	got, err = m.Workloads[0].EgressSettings()
	require.NoError(t, err)
	assert.Equal(t, map[string]config.EgressSettings{"a": {MaxStaleness: 2 * time.Minute}, "b/c": {MaxStaleness: 10 * time.Second}}, got)
}
