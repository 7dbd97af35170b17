package podman

import (
	"io/fs"
	"path/filepath"
	"sort"
	"testing"

	"github.com/opencontainers/selinux/go-selinux"
	"github.com/opencontainers/selinux/go-selinux/label"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// podmanRelabels are the hostPath types podman's kube play relabels for
// containers (see labelledHostPath).
var podmanRelabels = map[corev1.HostPathType]bool{
	corev1.HostPathDirectoryOrCreate: true,
	corev1.HostPathFileOrCreate:      true,
}

// generatedHostPaths checks the hostPath volumes of m's Pod against w's
// spec: a hostPath the user declared is passed on as written, and every
// other one, which the worker generated, has a type podman relabels. No
// Secret or ConfigMap volume is left for kube play. It returns the host
// paths of the generated volumes; volumesDir holds the /export volumes.
func generatedHostPaths(t *testing.T, what string, w Workload, m Manifest, volumesDir string) []string {
	t.Helper()
	var spec corev1.PodSpec
	require.NoError(t, yaml.Unmarshal([]byte(w.Specification), &spec), what)
	user := map[string]corev1.HostPathVolumeSource{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			user[v.Name] = *v.HostPath
		}
	}
	var paths []string
	for _, v := range podOf(t, m).Spec.Volumes {
		assert.Nil(t, v.Secret, "%s: volume %q is still a Secret volume", what, v.Name)
		assert.Nil(t, v.ConfigMap, "%s: volume %q is still a ConfigMap volume", what, v.Name)
		if v.HostPath == nil {
			continue
		}
		if u, ok := user[v.Name]; ok {
			assert.Equal(t, u, *v.HostPath, "%s: the user's hostPath %q is passed on as written", what, v.Name)
			continue
		}
		if assert.NotNil(t, v.HostPath.Type, "%s: volume %q: hostPath without a type is never relabelled by podman", what, v.Name) {
			assert.True(t, podmanRelabels[*v.HostPath.Type],
				"%s: volume %q: hostPath type %q is not one podman relabels (DirectoryOrCreate, FileOrCreate)", what, v.Name, *v.HostPath.Type)
		}
		paths = append(paths, v.HostPath.Path)
	}
	assert.Contains(t, paths, VolumeDir(volumesDir, w.Name), "%s: the /export volume is generated", what)
	return paths
}

// TestGoldenManifestsUseHostPathsPodmanRelabels checks every golden manifest
// in testdata/manifests, rendered from its inputs.
func TestGoldenManifestsUseHostPathsPodmanRelabels(t *testing.T) {
	inputs := map[string]struct {
		w    Workload
		opts ManifestOptions
	}{
		"os-stats.yaml":           {osStats, seedOpts},
		"multi.yaml":              {multiContainer, seedOpts},
		"secret-consumer.yaml":    {operatorWorkload(t, "secret.json"), objOpts},
		"configmap-consumer.yaml": {operatorWorkload(t, "configmap.json"), objOpts},
	}
	files, err := filepath.Glob(filepath.Join("..", "testdata", "manifests", "*.yaml"))
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	var want []string
	for n := range inputs {
		want = append(want, n)
	}
	sort.Strings(want)
	require.Equal(t, want, names, "every golden manifest has its inputs here")

	generated := 0
	for name, in := range inputs {
		m, err := BuildManifest(in.w, in.opts)
		require.NoError(t, err, name)
		golden(t, name, m.YAML) // what is checked is what the golden file holds
		generated += len(generatedHostPaths(t, name, in.w, m, in.opts.VolumesDir))
	}
	assert.Equal(t, 6, generated, "four /export volumes, one Secret and one ConfigMap volume")
}

// TestOperatorManifestsUseHostPathsPodmanRelabels renders every workload of
// every flotta-operator fixture message.
func TestOperatorManifestsUseHostPathsPodmanRelabels(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "operator-messages", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	workloads, objects := 0, 0
	for _, f := range files {
		for _, w := range operatorWorkloads(t, filepath.Base(f)) {
			what := filepath.Base(f) + "/" + w.Name
			m, err := BuildManifest(w, objOpts)
			require.NoError(t, err, what)
			workloads++
			objects += len(generatedHostPaths(t, what, w, m, objOpts.VolumesDir)) - 1
		}
	}
	assert.GreaterOrEqual(t, workloads, len(files))
	assert.Equal(t, 2, objects, "the secret fixture's Secret volume and the configmap fixture's ConfigMap volume")
}

// assertRelabelledForContainers checks, where SELinux is enabled, that
// every generated host path of the manager's workloads and everything
// under it carries the label podman gives a shared volume: the type of
// its containers' mount label at level s0 (as ":z" does). The hostPath
// types are checked everywhere.
func assertRelabelledForContainers(t *testing.T, m *Manager, ws []Workload) {
	t.Helper()
	byName := map[string]Workload{}
	for _, w := range ws {
		byName[w.Name] = w
	}
	m.mu.Lock()
	desired := append([]Manifest(nil), m.desired...)
	m.mu.Unlock()
	require.Len(t, desired, len(ws))
	var paths []string
	for _, mf := range desired {
		paths = append(paths, generatedHostPaths(t, mf.Name, byName[mf.Name], mf, m.cfg.VolumesDir)...)
	}
	if !selinux.GetEnabled() {
		t.Logf("SELinux is disabled on this host: hostPath types checked, labels of %d paths not", len(paths))
		return
	}
	_, mountLabel, err := label.InitLabels(nil) // as podman's LabelVolumePath
	require.NoError(t, err)
	require.NoError(t, label.ReleaseLabel(mountLabel))
	want, err := selinux.NewContext(mountLabel)
	require.NoError(t, err)
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			l, err := selinux.FileLabel(path)
			if err != nil {
				return err
			}
			got, err := selinux.NewContext(l)
			if err != nil {
				return err
			}
			assert.Equal(t, want["type"], got["type"], "%s: label %s", path, l)
			assert.Equal(t, "s0", got["level"], "%s: label %s: shared by the pod's containers", path, l)
			return nil
		})
		require.NoError(t, err, p)
	}
}
