package podman

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// objOpts are device facts for workloads with Secrets and ConfigMaps.
var objOpts = ManifestOptions{
	VolumesDir: "/data/volumes", DeviceID: "a1b2", FilesDir: "/data/workloads",
	DigestKey: []byte("0123456789abcdef0123456789abcdef"),
}

// operatorWorkload reads workload 0 of a flotta-operator fixture message
// (testdata/operator-messages), as the worker would hand it over.
func operatorWorkload(t *testing.T, name string) Workload {
	t.Helper()
	return operatorWorkloads(t, name)[0]
}

// operatorWorkloads reads every workload of a flotta-operator fixture
// message, each with the message's secrets.
func operatorWorkloads(t *testing.T, name string) []Workload {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "operator-messages", name))
	require.NoError(t, err)
	var msg struct {
		Secrets []struct {
			Name string `json:"name"`
			Data string `json:"data"`
		} `json:"secrets"`
		Workloads []struct {
			Name            string   `json:"name"`
			Namespace       string   `json:"namespace"`
			Specification   string   `json:"specification"`
			ConfigMaps      []string `json:"configmaps"`
			ImageRegistries struct {
				AuthFile string `json:"authFile"`
			} `json:"imageRegistries"`
		} `json:"workloads"`
	}
	require.NoError(t, json.Unmarshal(b, &msg))
	require.NotEmpty(t, msg.Workloads, "%s has no workload", name)
	var out []Workload
	for _, w := range msg.Workloads {
		ow := Workload{Name: w.Name, Namespace: w.Namespace, Specification: w.Specification,
			ConfigMaps: w.ConfigMaps, AuthFile: w.ImageRegistries.AuthFile}
		for _, s := range msg.Secrets {
			var data map[string][]byte
			require.NoError(t, json.Unmarshal([]byte(s.Data), &data))
			ow.Secrets = append(ow.Secrets, Secret{Name: s.Name, Data: data})
		}
		out = append(out, ow)
	}
	return out
}

func podOf(t *testing.T, m Manifest) corev1.Pod {
	t.Helper()
	docs := strings.Split(string(m.YAML), "---\n")
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs[len(docs)-1]), &pod))
	return pod
}

func TestManifestSecretFromOperator(t *testing.T) {
	w := operatorWorkload(t, "secret.json")
	m, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	golden(t, "secret-consumer.yaml", m.YAML)
	for _, v := range []string{"placeholder-token-0001", "placeholder-password-0002", "cGxhY2Vob2xkZXI"} {
		assert.NotContains(t, string(m.YAML), v, "no secret value in the manifest")
	}
	pod := podOf(t, m)
	c := pod.Spec.Containers[0]
	require.Len(t, m.secrets, 1)
	var podmanName string
	for n := range m.secrets {
		podmanName = n
	}
	assert.True(t, strings.HasPrefix(podmanName, "flotta-app-creds-"), podmanName)
	assert.Equal(t, podmanName, c.Env[0].ValueFrom.SecretKeyRef.Name)
	assert.Equal(t, "token", c.Env[0].ValueFrom.SecretKeyRef.Key)
	var stored map[string][]byte
	require.NoError(t, json.Unmarshal(m.secrets[podmanName], &stored))
	assert.Equal(t, "placeholder-token-0001", string(stored["token"]))

	// The secret volume is a read-only hostPath of files.
	require.Len(t, m.volumes, 1)
	dir := "/data/workloads/secret-consumer/volumes/creds"
	assert.Equal(t, dir, m.volumes[0].Dir)
	assert.Equal(t, map[string]fileEntry{
		"token":    {Data: []byte("placeholder-token-0001"), Mode: 0o644},
		"password": {Data: []byte("placeholder-password-0002"), Mode: 0o644},
	}, m.volumes[0].Files)
	assert.Equal(t, dir, pod.Spec.Volumes[0].HostPath.Path)
	assert.Nil(t, pod.Spec.Volumes[0].Secret)
	assert.True(t, c.VolumeMounts[0].ReadOnly)

	// A changed value is a new podman secret and a new hash.
	w2 := operatorWorkload(t, "secret.json")
	w2.Secrets[0].Data["token"] = []byte("rotated")
	m2, err := BuildManifest(w2, objOpts)
	require.NoError(t, err)
	assert.NotEqual(t, m.Hash, m2.Hash)
	assert.NotContains(t, m2.secrets, podmanName)
	// Same content, same everything: no pod replacement on resend.
	m3, err := BuildManifest(operatorWorkload(t, "secret.json"), objOpts)
	require.NoError(t, err)
	assert.Equal(t, m.Hash, m3.Hash)
	assert.Equal(t, m.YAML, m3.YAML)
}

func TestManifestSecretVolumeOnlyChangeReplacesThePod(t *testing.T) {
	w := operatorWorkload(t, "secret.json")
	// Drop the env reference: only the volume uses the secret.
	w.Specification = strings.Replace(w.Specification, "  env:\n  - name: TOKEN\n    valueFrom:\n      secretKeyRef:\n        key: token\n        name: app-creds\n", "", 1)
	m, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	assert.Empty(t, m.secrets)
	w.Secrets[0].Data["password"] = []byte("other")
	m2, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	assert.NotEqual(t, m.Hash, m2.Hash)
	assert.Equal(t, strings.Replace(string(m.YAML), m.Hash, m2.Hash, 1), string(m2.YAML), "only the hash label differs")
}

func TestManifestConfigMapsFromOperator(t *testing.T) {
	w := operatorWorkload(t, "configmap.json")
	m, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	golden(t, "configmap-consumer.yaml", m.YAML)
	docs := strings.Split(string(m.YAML), "---\n")
	require.Len(t, docs, 3, "two ConfigMaps, then the Pod")
	var cm corev1.ConfigMap
	require.NoError(t, yaml.Unmarshal([]byte(docs[0]), &cm))
	assert.Equal(t, "app-env", cm.Name)
	assert.Equal(t, "hello-from-configmap", cm.Data["greeting"])
	pod := podOf(t, m)
	assert.Equal(t, "app-env", pod.Spec.Containers[0].Env[0].ValueFrom.ConfigMapKeyRef.Name, "configMapKeyRef is left to kube play")
	require.Len(t, m.volumes, 1)
	assert.Equal(t, "mode=edge\nlevel=3\n", string(m.volumes[0].Files["settings.conf"].Data))
	assert.Equal(t, m.volumes[0].Dir, pod.Spec.Volumes[0].HostPath.Path)

	// A change of a ConfigMap alone replaces the pod.
	w.ConfigMaps[0] = strings.Replace(w.ConfigMaps[0], "hello-from-configmap", "bonjour", 1)
	m2, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	assert.NotEqual(t, m.Hash, m2.Hash)
}

func TestManifestObjectErrors(t *testing.T) {
	sec := operatorWorkload(t, "secret.json")
	cm := operatorWorkload(t, "configmap.json")
	cases := map[string]struct {
		w    Workload
		want string
	}{
		"secret not sent": {func() Workload { w := sec; w.Secrets = nil; return w }(),
			`container "app" env "TOKEN": secret "app-creds" is not in the configuration message`},
		"secret key missing": {func() Workload {
			w := sec
			w.Secrets = []Secret{{Name: "app-creds", Data: map[string][]byte{"password": []byte("x")}}}
			return w
		}(), `secret "app-creds" has no key "token"`},
		"configmap not sent": {func() Workload { w := cm; w.ConfigMaps = w.ConfigMaps[1:]; return w }(),
			`configmap "app-env" is not among the workload's configmaps`},
		"volume of a secret not sent": {Workload{Name: "v", Specification: "containers:\n- name: a\n  image: i\nvolumes:\n- name: s\n  secret:\n    secretName: gone\n"},
			`volume "s": secret "gone" is not in the configuration message`},
		"not a configmap": {func() Workload {
			w := cm
			w.ConfigMaps = []string{"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n"}
			return w
		}(),
			`configmaps[0]: kind "Pod"`},
		"bad auth file":         {Workload{Name: "r", Specification: "containers:\n- name: a\n  image: i\n", AuthFile: "user:secret-pass"}, "imageRegistries.authFile: not a JSON auth file"},
		"auth not user:pass":    {Workload{Name: "r", Specification: "containers:\n- name: a\n  image: i\n", AuthFile: `{"auths":{"r.example":{"auth":"c2VjcmV0LXBhc3M="}}}`}, `registry "r.example": auth is not the base64 of user:password`},
		"auth without registry": {Workload{Name: "r", Specification: "containers:\n- name: a\n  image: i\n", AuthFile: `{"auths":{}}`}, `no registry under "auths"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := BuildManifest(c.w, objOpts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.NotContains(t, err.Error(), "secret-pass")
			assert.NotContains(t, err.Error(), "c2VjcmV0LXBhc3M")
		})
	}
}

func TestManifestOptionalReferencesToMissingObjectsAreDropped(t *testing.T) {
	w := Workload{Name: "opt", Specification: `containers:
- name: a
  image: i
  env:
  - name: S
    valueFrom: {secretKeyRef: {name: gone, key: k, optional: true}}
  - name: C
    valueFrom: {configMapKeyRef: {name: gone, key: k, optional: true}}
  envFrom:
  - secretRef: {name: gone, optional: true}
volumes:
- name: s
  secret: {secretName: gone, optional: true}
`}
	m, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	pod := podOf(t, m)
	assert.Equal(t, []corev1.EnvVar{{Name: "DEVICE_ID", Value: "a1b2"}}, pod.Spec.Containers[0].Env)
	assert.Empty(t, pod.Spec.Containers[0].EnvFrom)
	require.Len(t, m.volumes, 1)
	assert.Empty(t, m.volumes[0].Files, "an optional missing secret is an empty volume")
}

func TestManifestAuthFileIsNotInTheManifest(t *testing.T) {
	w := operatorWorkload(t, "image-registries.json")
	m, err := BuildManifest(w, objOpts)
	require.NoError(t, err)
	assert.NotContains(t, string(m.YAML), "cGxhY2Vob2xkZXI")
	assert.Equal(t, w.AuthFile, string(m.authFile))
	plain, err := BuildManifest(Workload{Name: w.Name, Namespace: w.Namespace, Specification: w.Specification}, objOpts)
	require.NoError(t, err)
	assert.Equal(t, plain.Hash, m.Hash, "credentials matter for pulls only: a rotation does not replace the pod")
	assert.NotEmpty(t, m.authDigest)
}
