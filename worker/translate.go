package worker

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/project-flotta/flotta-device-worker/podman"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// Plan is a configuration message translated into the inputs of the
// workload runner and the synchroniser.
type Plan struct {
	Workloads []podman.Workload
	// Endpoint is nil when the device has no storage.
	Endpoint *datasync.Endpoint
	// Mappings is empty when the device has no storage.
	Mappings []datasync.Mapping
	// MappingsOf lists, per workload name, the IDs of its mappings.
	MappingsOf map[string][]string
	// Warnings are things worth telling the control plane that do not make
	// the configuration invalid.
	Warnings []string
}

// MappingID is the stable identity of a data path: the workload, the
// direction and the local path (egress source or ingress target), for
// example "os-stats/egress/stats".
func MappingID(workload string, dir datasync.Direction, localPath string) string {
	return workload + "/" + string(dir) + "/" + localPath
}

// syncEndpoint is the synchroniser's view of the message's storage.
func syncEndpoint(ep *config.Endpoint) *datasync.Endpoint {
	return &datasync.Endpoint{
		Host:      ep.Host,
		Port:      ep.Port,
		Secure:    ep.Secure,
		Region:    ep.Region,
		AccessKey: ep.AccessKey,
		SecretKey: ep.SecretKey,
		CAPEM:     ep.CAPEM,
	}
}

// Translate turns a validated message into a Plan. Each workload's /export
// is volumesDir/<workload>.
func Translate(m *config.Message, volumesDir string) (Plan, error) {
	p := Plan{Workloads: make([]podman.Workload, 0, len(m.Workloads)), MappingsOf: map[string][]string{}}
	var bucket string
	if st := m.Configuration.Storage; st != nil && st.S3 != nil {
		ep, err := st.S3.Endpoint()
		if err != nil {
			return Plan{}, fmt.Errorf("configuration.storage.s3.%w", err)
		}
		p.Endpoint, bucket = syncEndpoint(ep), st.S3.BucketName
	}
	secrets, err := decodeSecrets(m.Secrets)
	if err != nil {
		return Plan{}, err
	}
	for _, w := range m.Workloads {
		pw := podman.Workload{
			Name:          w.Name,
			Namespace:     w.Namespace,
			Labels:        w.Labels,
			Annotations:   podAnnotations(w.Annotations),
			Specification: w.Specification,
			ConfigMaps:    w.ConfigMaps,
			Secrets:       secrets,
		}
		if w.ImageRegistries != nil {
			pw.AuthFile = w.ImageRegistries.AuthFile
		}
		p.Workloads = append(p.Workloads, pw)
		if w.Data == nil {
			continue
		}
		if p.Endpoint == nil {
			p.Warnings = append(p.Warnings, fmt.Sprintf("workload %s declares data paths but the device has no storage; they are not synchronised", w.Name))
			continue
		}
		settings, err := w.EgressSettings()
		if err != nil {
			return Plan{}, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		root := filepath.Join(volumesDir, w.Name)
		add := func(dir datasync.Direction, local, prefix string) {
			id := MappingID(w.Name, dir, config.CleanPath(local))
			m := datasync.Mapping{
				ID:        id,
				Direction: dir,
				Root:      root,
				LocalDir:  filepath.Join(root, filepath.FromSlash(config.CleanPath(local))),
				Bucket:    bucket,
				Prefix:    config.CleanPath(prefix),
			}
			if s, ok := settings[config.CleanPath(local)]; ok && dir == datasync.Egress {
				m.Retention = datasync.Retention{RemoveAfterUpload: s.RemoveAfterUpload, KeepBytes: s.KeepBytes, KeepAge: s.KeepAge}
				m.Order = datasync.Order(s.Order)
				m.MaxStaleness = s.MaxStaleness
			}
			p.Mappings = append(p.Mappings, m)
			p.MappingsOf[w.Name] = append(p.MappingsOf[w.Name], id)
		}
		for _, e := range w.Data.Egress {
			add(datasync.Egress, e.Source, e.Target)
		}
		for _, i := range w.Data.Ingress {
			add(datasync.Ingress, i.Target, i.Source)
		}
	}
	return p, nil
}

// decodeSecrets decodes the device's secrets; every workload may refer to
// any of them (podman uses those its specification names).
func decodeSecrets(list []config.Secret) ([]podman.Secret, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]podman.Secret, 0, len(list))
	for i, s := range list {
		data, err := s.Values()
		if err != nil {
			return nil, fmt.Errorf("secrets[%d].data (secret %q): %w", i, s.Name, err)
		}
		out = append(out, podman.Secret{Name: s.Name, Data: data})
	}
	return out, nil
}

// podAnnotations are the workload's annotations without the data-sync ones
// (config.AnnotationPrefix): those are for the synchroniser, and changing
// a retention must not change the pod (which would restart it).
func podAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if strings.HasPrefix(k, config.AnnotationPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(a))
		}
		out[k] = v
	}
	return out
}
