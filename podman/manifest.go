package podman

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Labels and names the manager puts on every pod it owns.
const (
	// LabelManaged marks a pod as owned by this worker ("true").
	LabelManaged = "flotta/managed"
	// LabelWorkload holds the workload name of a managed pod.
	LabelWorkload = "flotta/workload"
	// LabelManifestHash holds the hash of the manifest the pod was played from;
	// a pod whose hash differs from the desired manifest's is replaced.
	LabelManifestHash = "flotta/manifest-hash"
	// ExportPath is where every container sees its workload's host volume.
	ExportPath = "/export"
	// DeviceIDEnv is the environment variable carrying the device id.
	DeviceIDEnv = "DEVICE_ID"
)

// ManifestOptions are the device facts a manifest depends on.
type ManifestOptions struct {
	VolumesDir string // host directory holding one sub-directory per workload
	DeviceID   string // value of DEVICE_ID in every container
	// FilesDir holds, per workload, the files of its Secret and ConfigMap
	// volumes and its registry auth file (see WorkloadFilesDir).
	FilesDir string
	// DigestKey keys the digests that name podman secrets and identify
	// secret content in hashes, so that they reveal nothing of it.
	DigestKey []byte
}

// Manifest is a rendered Pod manifest and the hash that identifies it.
type Manifest struct {
	Name string // workload (and pod) name
	// YAML is what kube play gets: the workload's ConfigMap documents, if
	// any, then the Pod (apiVersion v1, kind Pod). It holds no secret value.
	YAML []byte
	// Hash is a hex digest of YAML without the hash label and of the
	// content of the Secret and ConfigMap volumes; also in LabelManifestHash.
	Hash string

	volumes    []volumeFiles     // Secret and ConfigMap volumes, as files to write
	secrets    map[string][]byte // podman secrets the pod needs: name → content
	authFile   []byte            // registry auth file; nil for none
	authDigest string            // keyed digest of authFile, for change detection

	Containers     []string             // names of the spec's containers
	InitContainers []string             // names of the spec's init containers
	RestartPolicy  corev1.RestartPolicy // as in the spec; empty means Always
}

// ExportVolumeName is the name of the /export volume of workload name.
func ExportVolumeName(name string) string { return "export-" + name }

// VolumeDir is the host directory backing the /export of workload name.
func VolumeDir(volumesDir, name string) string { return filepath.Join(volumesDir, name) }

// WorkloadFilesDir is the directory of workload name's own files under
// filesDir: auth.json (its registry auth file) and volumes/<volume>/ (its
// Secret and ConfigMap volumes).
func WorkloadFilesDir(filesDir, name string) string { return filepath.Join(filesDir, name) }

// BuildManifest validates w and renders its Pod manifest: the user's PodSpec
// plus the export-<name> hostPath volume mounted at /export in every container
// and init container, DEVICE_ID in their environment, and the ownership labels.
func BuildManifest(w Workload, opts ManifestOptions) (Manifest, error) {
	spec, err := parseWorkload(w)
	if err != nil {
		return Manifest{}, fmt.Errorf("workload %q: %w", w.Name, err)
	}
	ex, err := resolveObjects(w, spec, opts)
	if err != nil {
		return Manifest{}, fmt.Errorf("workload %q: %w", w.Name, err)
	}
	if w.AuthFile != "" {
		if err := checkAuthFile(w.AuthFile); err != nil {
			return Manifest{}, fmt.Errorf("workload %q: %w", w.Name, err)
		}
	}
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		Spec:     *spec,
	}
	pod.Name = w.Name
	pod.Namespace = w.Namespace
	pod.Labels = ownedLabels(w)
	pod.Annotations = initContainerType(copyMap(w.Annotations), spec)
	addExport(&pod.Spec, w.Name, VolumeDir(opts.VolumesDir, w.Name))
	setEnv(&pod.Spec, DeviceIDEnv, opts.DeviceID)

	unhashed, err := yaml.Marshal(&pod)
	if err != nil {
		return Manifest{}, fmt.Errorf("workload %q: render manifest: %w", w.Name, err)
	}
	// Without ConfigMaps and volume files the hash is that of the Pod alone,
	// as it always was, so existing pods are not replaced by an upgrade.
	h := sha256.New()
	h.Write(unhashed)
	for _, doc := range ex.configMaps {
		h.Write([]byte("\n---\n"))
		h.Write(doc)
	}
	if d := filesDigest(ex.volumes, opts.DigestKey); d != "" {
		h.Write([]byte("\nfiles " + d))
	}
	hash := hex.EncodeToString(h.Sum(nil)[:16]) // 32 characters: fits a 63-character label value
	pod.Labels[LabelManifestHash] = hash
	out, err := yaml.Marshal(&pod)
	if err != nil {
		return Manifest{}, fmt.Errorf("workload %q: render manifest: %w", w.Name, err)
	}
	var body []byte
	for _, doc := range ex.configMaps {
		body = append(append(body, doc...), "---\n"...)
	}
	m := Manifest{Name: w.Name, YAML: append(body, out...), Hash: hash, RestartPolicy: spec.RestartPolicy,
		volumes: ex.volumes, secrets: ex.secrets}
	if w.AuthFile != "" {
		m.authFile = []byte(w.AuthFile)
		m.authDigest = authDigest(m.authFile, opts.DigestKey)
	}
	for _, c := range spec.InitContainers {
		m.InitContainers = append(m.InitContainers, c.Name)
	}
	for _, c := range spec.Containers {
		m.Containers = append(m.Containers, c.Name)
	}
	return m, nil
}

// parseWorkload checks the workload's name and decodes its PodSpec strictly.
func parseWorkload(w Workload) (*corev1.PodSpec, error) {
	if err := validateName(w.Name); err != nil {
		return nil, err
	}
	var spec corev1.PodSpec
	// Strict: unknown or duplicate fields are errors, so that a typo such as
	// "imagePullPolice" is reported instead of silently ignored.
	if err := yaml.UnmarshalStrict([]byte(w.Specification), &spec); err != nil {
		return nil, fmt.Errorf("invalid specification: %w", err)
	}
	if err := validateSpec(w.Name, &spec); err != nil {
		return nil, err
	}
	return &spec, nil
}

// InitContainerTypeAnnotation is podman's pod annotation choosing how kube
// init containers run: "once" (podman's default: removed after the first
// pod start) or "always" (kept, run again whenever the pod starts).
const InitContainerTypeAnnotation = "io.podman.annotations.init.container.type"

// initContainerType makes init containers "always" unless the workload chose:
// they then run again when a dead pod is restarted, as on a Kubernetes pod
// restart, and podman 4.3's race removing "once" init containers that are
// still running cannot fail the play.
func initContainerType(annotations map[string]string, spec *corev1.PodSpec) map[string]string {
	if len(spec.InitContainers) == 0 {
		return annotations
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	if _, set := annotations[InitContainerTypeAnnotation]; !set {
		annotations[InitContainerTypeAnnotation] = "always"
	}
	return annotations
}

// ownedLabels is the workload's labels plus the manager's ownership labels,
// which win over user labels of the same key.
func ownedLabels(w Workload) map[string]string {
	l := copyMap(w.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelManaged] = "true"
	l[LabelWorkload] = w.Name
	delete(l, LabelManifestHash)
	return l
}

// addExport adds the export volume and mounts it at /export everywhere.
func addExport(spec *corev1.PodSpec, name, hostDir string) {
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name:         ExportVolumeName(name),
		VolumeSource: corev1.VolumeSource{HostPath: labelledHostPath(hostDir)},
	})
	mount := corev1.VolumeMount{Name: ExportVolumeName(name), MountPath: ExportPath}
	forEachContainer(spec, func(c *corev1.Container) {
		c.VolumeMounts = append(c.VolumeMounts, mount)
	})
}

// labelledHostPath is the hostPath of a directory the worker prepares for a
// pod (its /export, its Secret and ConfigMap volumes). It is always of type
// DirectoryOrCreate because that is what SELinux needs: podman's kube play
// (pkg/specgen/generate/kube/volume.go, 4.2 to 4.9) relabels a hostPath
// for containers, shared as with ":z", only when its type is
// DirectoryOrCreate or FileOrCreate. A Directory keeps the label of the data
// dir (/var/local), which a confined container may not read: on an
// enforcing host it would get "permission denied" reading its Secret.
// The user's own hostPath volumes are left as written: relabelling a host
// directory such as /etc/app is the user's decision, not the worker's.
func labelledHostPath(dir string) *corev1.HostPathVolumeSource {
	t := corev1.HostPathDirectoryOrCreate
	return &corev1.HostPathVolumeSource{Path: dir, Type: &t}
}

// setEnv sets name=value in every container, replacing an existing entry: the
// device's own value is authoritative.
func setEnv(spec *corev1.PodSpec, name, value string) {
	forEachContainer(spec, func(c *corev1.Container) {
		env := c.Env[:0:0]
		for _, e := range c.Env {
			if e.Name != name {
				env = append(env, e)
			}
		}
		c.Env = append(env, corev1.EnvVar{Name: name, Value: value})
	})
}

// forEachContainer calls f on every init container and container of spec.
func forEachContainer(spec *corev1.PodSpec, f func(*corev1.Container)) {
	for i := range spec.InitContainers {
		f(&spec.InitContainers[i])
	}
	for i := range spec.Containers {
		f(&spec.Containers[i])
	}
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
