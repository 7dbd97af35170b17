package podman

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/manifests")

// seedOpts are the device facts of the seed document's example.
var seedOpts = ManifestOptions{VolumesDir: "/var/local/yggdrasil/device/volumes", DeviceID: "a1b2"}

// osStats is the seed document's example workload.
var osStats = Workload{
	Name:          "os-stats",
	Namespace:     "default",
	Labels:        map[string]string{"dc": "home"},
	Annotations:   map[string]string{},
	Specification: "containers:\n- name: stats-collector\n  image: quay.io/example/os-stats:v1\n",
}

// golden compares got with testdata/manifests/<name>, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "manifests", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden file missing; run go test ./podman -run Manifest -update")
	assert.Equal(t, string(want), string(got), "manifest differs from %s (rerun with -update if intended)", path)
}

func TestManifestSeedOSStats(t *testing.T) {
	m, err := BuildManifest(osStats, seedOpts)
	require.NoError(t, err)
	golden(t, "os-stats.yaml", m.YAML)

	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(m.YAML, &pod))
	// The seed document's generated pod spec, field by field.
	assert.Equal(t, "v1", pod.APIVersion)
	assert.Equal(t, "Pod", pod.Kind)
	assert.Equal(t, "os-stats", pod.Name)
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	assert.Equal(t, "stats-collector", c.Name)
	assert.Equal(t, "quay.io/example/os-stats:v1", c.Image)
	assert.Equal(t, []corev1.VolumeMount{{Name: "export-os-stats", MountPath: "/export"}}, c.VolumeMounts)
	assert.Equal(t, []corev1.EnvVar{{Name: "DEVICE_ID", Value: "a1b2"}}, c.Env)
	require.Len(t, pod.Spec.Volumes, 1)
	v := pod.Spec.Volumes[0]
	assert.Equal(t, "export-os-stats", v.Name)
	require.NotNil(t, v.HostPath)
	assert.Equal(t, "/var/local/yggdrasil/device/volumes/os-stats", v.HostPath.Path)
	require.NotNil(t, v.HostPath.Type)
	assert.Equal(t, corev1.HostPathDirectoryOrCreate, *v.HostPath.Type)
	// Ownership and change detection.
	assert.Equal(t, "home", pod.Labels["dc"])
	assert.Equal(t, "true", pod.Labels[LabelManaged])
	assert.Equal(t, "os-stats", pod.Labels[LabelWorkload])
	assert.Equal(t, m.Hash, pod.Labels[LabelManifestHash])
	assert.Len(t, m.Hash, 32)
}

// multiContainer has init containers, two containers and a hostPath of its
// own.
var multiContainer = Workload{
	Name: "multi",
	Specification: `initContainers:
- name: init
  image: localhost/busybox:v1
  env:
  - name: DEVICE_ID
    value: forged
containers:
- name: app
  image: localhost/busybox:v1
  env:
  - name: A
    value: "1"
  volumeMounts:
  - name: cfg
    mountPath: /etc/app
- name: sidecar
  image: localhost/busybox:v1
  command: ["sh", "-c", "sleep 3600"]
volumes:
- name: cfg
  hostPath:
    path: /etc/app
restartPolicy: OnFailure
`,
}

func TestManifestMultiContainer(t *testing.T) {
	w := multiContainer
	m, err := BuildManifest(w, seedOpts)
	require.NoError(t, err)
	golden(t, "multi.yaml", m.YAML)

	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(m.YAML, &pod))
	forEachContainer(&pod.Spec, func(c *corev1.Container) {
		assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "export-multi", MountPath: "/export"}, c.Name)
		var ids []string
		for _, e := range c.Env {
			if e.Name == DeviceIDEnv {
				ids = append(ids, e.Value)
			}
		}
		assert.Equal(t, []string{"a1b2"}, ids, "container %s: exactly one DEVICE_ID, the device's", c.Name)
	})
	assert.Len(t, pod.Spec.Volumes, 2)
}

func TestManifestHashIsStableAndSensitive(t *testing.T) {
	a, err := BuildManifest(osStats, seedOpts)
	require.NoError(t, err)
	b, err := BuildManifest(osStats, seedOpts)
	require.NoError(t, err)
	assert.Equal(t, a.YAML, b.YAML)
	assert.Equal(t, a.Hash, b.Hash)

	changed := osStats
	changed.Specification = strings.Replace(osStats.Specification, ":v1", ":v2", 1)
	c, err := BuildManifest(changed, seedOpts)
	require.NoError(t, err)
	assert.NotEqual(t, a.Hash, c.Hash)

	otherDevice := seedOpts
	otherDevice.DeviceID = "zz"
	d, err := BuildManifest(osStats, otherDevice)
	require.NoError(t, err)
	assert.NotEqual(t, a.Hash, d.Hash)

	// A user label cannot forge ownership or the hash.
	forged := osStats
	forged.Labels = map[string]string{LabelManaged: "no", LabelManifestHash: "x", LabelWorkload: "other"}
	f, err := BuildManifest(forged, seedOpts)
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, yaml.Unmarshal(f.YAML, &pod))
	assert.Equal(t, "true", pod.Labels[LabelManaged])
	assert.Equal(t, "os-stats", pod.Labels[LabelWorkload])
	assert.Equal(t, f.Hash, pod.Labels[LabelManifestHash])
}

// TestManifestRejectsHostileSpecs checks every rejection; the messages are
// kept in a golden file so that a change of wording is a reviewed change.
func TestManifestRejectsHostileSpecs(t *testing.T) {
	const ok = "containers:\n- name: c\n  image: localhost/busybox:v1\n"
	cases := []struct {
		name string
		w    Workload
		want string // substring of the error
	}{
		{"export volume name taken", Workload{Name: "evil", Specification: ok + "volumes:\n- name: export-evil\n  hostPath:\n    path: /etc\n"}, `volume name "export-evil" is reserved`},
		{"mount at /export", Workload{Name: "evil", Specification: "containers:\n- name: c\n  image: i\n  volumeMounts:\n  - name: v\n    mountPath: /export\nvolumes:\n- name: v\n  emptyDir: {}\n"}, `mounts "v" at "/export"`},
		{"mount at /export/ unclean", Workload{Name: "evil", Specification: "containers:\n- name: c\n  image: i\n  volumeMounts:\n  - name: v\n    mountPath: //export/./\nvolumes:\n- name: v\n  emptyDir: {}\n"}, `is reserved for the workload's data`},
		{"mount inside /export", Workload{Name: "evil", Specification: "containers:\n- name: c\n  image: i\n  volumeMounts:\n  - name: v\n    mountPath: /export/stats\nvolumes:\n- name: v\n  emptyDir: {}\n"}, `mounts "v" at "/export/stats"`},
		{"init container mounts /export", Workload{Name: "evil", Specification: ok + "initContainers:\n- name: i\n  image: i\n  volumeMounts:\n  - name: v\n    mountPath: /export\n"}, `container "i" mounts`},
		{"invalid yaml", Workload{Name: "bad", Specification: "containers: [\n"}, "invalid specification"},
		{"yaml not a mapping", Workload{Name: "bad", Specification: "- a\n- b\n"}, "invalid specification"},
		{"unknown field", Workload{Name: "bad", Specification: ok + "imagePullPolice: Never\n"}, `unknown field "imagePullPolice"`},
		{"duplicate field", Workload{Name: "bad", Specification: ok + "hostname: a\nhostname: b\n"}, "invalid specification"},
		{"empty spec", Workload{Name: "bad", Specification: ""}, "no containers"},
		{"empty container list", Workload{Name: "bad", Specification: "containers: []\n"}, "no containers"},
		{"only init containers", Workload{Name: "bad", Specification: "initContainers:\n- name: c\n  image: i\n"}, "no containers"},
		{"empty name", Workload{Name: "", Specification: ok}, "invalid name: empty"},
		{"upper-case name", Workload{Name: "OS-Stats", Specification: ok}, `invalid name "OS-Stats"`},
		{"path traversal name", Workload{Name: "../etc", Specification: ok}, `invalid name "../etc"`},
		{"name too long", Workload{Name: strings.Repeat("a", 64), Specification: ok}, "must be no more than 63 characters"},
	}
	var report strings.Builder
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildManifest(tc.w, seedOpts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			report.WriteString("# " + tc.name + "\n" + err.Error() + "\n")
		})
	}
	golden(t, "rejected.txt", []byte(report.String()))
}
