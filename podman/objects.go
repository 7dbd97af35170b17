package podman

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// SecretPrefix starts the name of every podman secret the manager owns.
// A workload's secretKeyRef and secretRef are rewritten to
// "flotta-<secret>-<digest>", where digest is a keyed digest of the
// secret's content: a changed secret is a new podman secret (and so a new
// manifest), and secrets no workload names any more are removed.
const SecretPrefix = "flotta-"

// defaultFileMode is the mode of Secret and ConfigMap volume files unless
// the volume sets one, as on Kubernetes.
const defaultFileMode = 0o644

// volumeFiles is one Secret or ConfigMap volume materialised as files in a
// host directory that the pod mounts read-only.
type volumeFiles struct {
	Volume string               // volume name in the spec
	Dir    string               // host directory
	Files  map[string]fileEntry // path relative to Dir → content
}

type fileEntry struct {
	Data []byte
	Mode os.FileMode
}

// extras is what a workload needs beside its Pod document.
type extras struct {
	configMaps [][]byte          // rendered ConfigMap documents, played with the pod
	volumes    []volumeFiles     // Secret and ConfigMap volumes as files
	secrets    map[string][]byte // podman secret name → content
}

// resolveObjects rewrites spec so that it works under kube play with the
// workload's ConfigMaps and the device's Secrets: Secret and ConfigMap
// volumes become hostPath volumes of files under filesDir, env and envFrom
// references to Secrets name the podman secrets holding them, and references
// to missing objects are dropped when optional and errors otherwise.
func resolveObjects(w Workload, spec *corev1.PodSpec, opts ManifestOptions) (extras, error) {
	var ex extras
	cms, docs, err := parseConfigMaps(w.ConfigMaps)
	if err != nil {
		return ex, err
	}
	ex.configMaps = docs
	secrets := map[string]map[string][]byte{}
	for _, s := range w.Secrets {
		secrets[s.Name] = s.Data
	}
	ex.secrets = map[string][]byte{}
	podmanName := func(name string) (string, error) {
		data, err := json.Marshal(secrets[name]) // map[string][]byte: base64 values, sorted keys
		if err != nil {
			return "", fmt.Errorf("encode secret %q: %w", name, err)
		}
		n := podmanSecretName(name, data, opts.DigestKey)
		ex.secrets[n] = data
		return n, nil
	}

	forEachContainer(spec, func(c *corev1.Container) {
		if err != nil {
			return
		}
		env := c.Env[:0:0]
		for _, e := range c.Env {
			keep, eerr := resolveEnv(&e, secrets, cms, podmanName)
			if eerr != nil {
				err = fmt.Errorf("container %q env %q: %w", c.Name, e.Name, eerr)
				return
			}
			if keep {
				env = append(env, e)
			}
		}
		c.Env = env
		from := c.EnvFrom[:0:0]
		for _, f := range c.EnvFrom {
			keep, ferr := resolveEnvFrom(&f, secrets, cms, podmanName)
			if ferr != nil {
				err = fmt.Errorf("container %q envFrom: %w", c.Name, ferr)
				return
			}
			if keep {
				from = append(from, f)
			}
		}
		c.EnvFrom = from
		if len(c.EnvFrom) == 0 {
			c.EnvFrom = nil
		}
	})
	if err != nil {
		return ex, err
	}

	readOnly := map[string]bool{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		var files map[string]fileEntry
		var verr error
		switch {
		case v.Secret != nil:
			s := v.Secret
			data, ok := secrets[s.SecretName]
			if !ok && !isTrue(s.Optional) {
				verr = fmt.Errorf("secret %q is not in the configuration message (the control plane sends a secret only when a container refers to it from env or envFrom)", s.SecretName)
				break
			}
			files, verr = projectFiles(data, s.Items, s.DefaultMode, isTrue(s.Optional))
		case v.ConfigMap != nil:
			c := v.ConfigMap
			cm, ok := cms[c.Name]
			if !ok && !isTrue(c.Optional) {
				verr = fmt.Errorf("configmap %q is not among the workload's configmaps", c.Name)
				break
			}
			files, verr = projectFiles(configMapData(cm), c.Items, c.DefaultMode, isTrue(c.Optional))
		default:
			continue
		}
		if verr != nil {
			return ex, fmt.Errorf("volume %q: %w", v.Name, verr)
		}
		if err := validateName(v.Name); err != nil {
			return ex, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		dir := filepath.Join(WorkloadFilesDir(opts.FilesDir, w.Name), "volumes", v.Name)
		ex.volumes = append(ex.volumes, volumeFiles{Volume: v.Name, Dir: dir, Files: files})
		v.VolumeSource = corev1.VolumeSource{HostPath: labelledHostPath(dir)}
		readOnly[v.Name] = true
	}
	// Secret and ConfigMap volumes are read-only, as on Kubernetes.
	forEachContainer(spec, func(c *corev1.Container) {
		for j := range c.VolumeMounts {
			if readOnly[c.VolumeMounts[j].Name] {
				c.VolumeMounts[j].ReadOnly = true
			}
		}
	})
	return ex, nil
}

// resolveEnv rewrites one env var's Secret reference; keep is false when
// it refers to something optional that is missing.
func resolveEnv(e *corev1.EnvVar, secrets map[string]map[string][]byte, cms map[string]*corev1.ConfigMap, podmanName func(string) (string, error)) (keep bool, err error) {
	if e.ValueFrom == nil {
		return true, nil
	}
	if ref := e.ValueFrom.SecretKeyRef; ref != nil {
		data, ok := secrets[ref.Name]
		if !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("secret %q is not in the configuration message", ref.Name)
		}
		if _, ok := data[ref.Key]; !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		n, err := podmanName(ref.Name)
		if err != nil {
			return false, err
		}
		ref.Name = n
	}
	if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
		cm, ok := cms[ref.Name]
		if !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("configmap %q is not among the workload's configmaps", ref.Name)
		}
		if _, ok := configMapData(cm)[ref.Key]; !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
	}
	return true, nil
}

// resolveEnvFrom is resolveEnv for one envFrom source.
func resolveEnvFrom(f *corev1.EnvFromSource, secrets map[string]map[string][]byte, cms map[string]*corev1.ConfigMap, podmanName func(string) (string, error)) (keep bool, err error) {
	if ref := f.SecretRef; ref != nil {
		if _, ok := secrets[ref.Name]; !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("secret %q is not in the configuration message", ref.Name)
		}
		n, err := podmanName(ref.Name)
		if err != nil {
			return false, err
		}
		ref.Name = n
	}
	if ref := f.ConfigMapRef; ref != nil {
		if _, ok := cms[ref.Name]; !ok {
			if isTrue(ref.Optional) {
				return false, nil
			}
			return false, fmt.Errorf("configmap %q is not among the workload's configmaps", ref.Name)
		}
	}
	return true, nil
}

// parseConfigMaps decodes the workload's ConfigMap documents and renders
// each again as one clean document, so that nothing but a ConfigMap is
// ever played with the pod.
func parseConfigMaps(docs []string) (map[string]*corev1.ConfigMap, [][]byte, error) {
	cms := map[string]*corev1.ConfigMap{}
	var out [][]byte
	for i, doc := range docs {
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			return nil, nil, fmt.Errorf("configmaps[%d]: not a ConfigMap YAML document: %w", i, err)
		}
		if cm.Kind != "ConfigMap" || (cm.APIVersion != "" && cm.APIVersion != "v1") {
			return nil, nil, fmt.Errorf("configmaps[%d]: kind %q, apiVersion %q: want a v1 ConfigMap", i, cm.Kind, cm.APIVersion)
		}
		if msgs := validation.IsDNS1123Subdomain(cm.Name); len(msgs) > 0 {
			return nil, nil, fmt.Errorf("configmaps[%d]: name %q: %s", i, cm.Name, strings.Join(msgs, "; "))
		}
		if _, dup := cms[cm.Name]; dup {
			return nil, nil, fmt.Errorf("configmaps[%d]: configmap %q is listed twice", i, cm.Name)
		}
		for k := range configMapData(&cm) {
			if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
				return nil, nil, fmt.Errorf("configmaps[%d] (%s): key %q: %s", i, cm.Name, k, strings.Join(msgs, "; "))
			}
		}
		clean := corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: cm.Name},
			Data:       cm.Data,
			BinaryData: cm.BinaryData,
		}
		b, err := yaml.Marshal(&clean)
		if err != nil {
			return nil, nil, fmt.Errorf("configmaps[%d]: render: %w", i, err)
		}
		cms[cm.Name] = &clean
		out = append(out, b)
	}
	return cms, out, nil
}

// configMapData is a ConfigMap's keys with their bytes (data and binaryData).
func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	if cm == nil {
		return nil
	}
	out := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out
}

// projectFiles lays out a volume's files: every key, or only the listed
// items at their paths, with the volume's modes.
func projectFiles(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, optional bool) (map[string]fileEntry, error) {
	mode := os.FileMode(defaultFileMode)
	if defaultMode != nil {
		mode = os.FileMode(*defaultMode) & 0o777
	}
	files := map[string]fileEntry{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = fileEntry{Data: v, Mode: mode}
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("items: no key %q", it.Key)
		}
		p := path.Clean(it.Path)
		if it.Path == "" || path.IsAbs(it.Path) || p == "." || p == ".." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("items: path %q must be relative and stay inside the volume", it.Path)
		}
		m := mode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode) & 0o777
		}
		files[p] = fileEntry{Data: v, Mode: m}
	}
	return files, nil
}

// podmanSecretName is the podman secret holding secret name with content
// data: SecretPrefix, the name and a keyed digest of both. The digest is
// keyed so that it reveals nothing of a guessable secret.
func podmanSecretName(name string, data, key []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write(data)
	digest := hex.EncodeToString(mac.Sum(nil))[:16]
	if max := 253 - len(SecretPrefix) - 1 - len(digest); len(name) > max {
		name = name[:max]
	}
	return SecretPrefix + name + "-" + digest
}

// filesDigest is a keyed digest of a workload's materialised files: part
// of its manifest hash, so a change of a Secret or ConfigMap volume
// replaces the pod, without revealing the content.
func filesDigest(vols []volumeFiles, key []byte) string {
	if len(vols) == 0 {
		return ""
	}
	mac := hmac.New(sha256.New, key)
	for _, v := range vols {
		fmt.Fprintf(mac, "volume %s %s\n", v.Volume, v.Dir)
		names := make([]string, 0, len(v.Files))
		for n := range v.Files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f := v.Files[n]
			fmt.Fprintf(mac, "file %s %o %d\n", n, f.Mode, len(f.Data))
			mac.Write(f.Data)
		}
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// authDigest is a keyed digest of an auth file, so that a changed auth file
// is noticed without keeping it in comparable form.
func authDigest(auth, key []byte) string {
	if len(auth) == 0 {
		return ""
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(auth)
	return hex.EncodeToString(mac.Sum(nil))[:16]
}

// checkAuthFile checks that auth is a containers auth file:
// {"auths":{"<registry>":{"auth":"<base64 of user:password>"}, ...}}.
// Errors name the registry at fault, never a credential.
func checkAuthFile(auth string) error {
	var f struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal([]byte(auth), &f); err != nil {
		return errors.New(`imageRegistries.authFile: not a JSON auth file ({"auths":{"<registry>":{"auth":"<base64 user:password>"}}})`)
	}
	if len(f.Auths) == 0 {
		return errors.New(`imageRegistries.authFile: no registry under "auths"`)
	}
	for reg, raw := range f.Auths {
		var e struct {
			Auth *string `json:"auth"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("imageRegistries.authFile: registry %q: not an object", reg)
		}
		if e.Auth == nil {
			continue // identity tokens and credential helpers carry no "auth"
		}
		dec, err := decodeBase64(*e.Auth)
		if err != nil {
			return fmt.Errorf("imageRegistries.authFile: registry %q: auth is not base64", reg)
		}
		if !strings.Contains(string(dec), ":") {
			return fmt.Errorf("imageRegistries.authFile: registry %q: auth is not the base64 of user:password", reg)
		}
	}
	return nil
}

func isTrue(b *bool) bool { return b != nil && *b }

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
