package podman

import (
	"errors"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validateName checks that name can be a pod name and a directory name: a
// DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters).
func validateName(name string) error {
	if name == "" {
		return errors.New("invalid name: empty")
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return fmt.Errorf("invalid name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// validateSpec rejects specs the manager cannot run as they are: no
// containers, or anything that would collide with the /export volume it adds.
func validateSpec(name string, spec *corev1.PodSpec) error {
	if len(spec.Containers) == 0 {
		return errors.New("invalid specification: no containers")
	}
	export := ExportVolumeName(name)
	for _, v := range spec.Volumes {
		if v.Name == export {
			return fmt.Errorf("invalid specification: volume name %q is reserved for the workload's %s", export, ExportPath)
		}
	}
	var err error
	forEachContainer(spec, func(c *corev1.Container) {
		for _, m := range c.VolumeMounts {
			if err == nil && underExport(m.MountPath) {
				err = fmt.Errorf("invalid specification: container %q mounts %q at %q: %s is reserved for the workload's data",
					c.Name, m.Name, m.MountPath, ExportPath)
			}
		}
	})
	return err
}

// underExport reports whether mountPath is /export or a path inside it.
func underExport(mountPath string) bool {
	p := path.Clean("/" + mountPath)
	return p == ExportPath || strings.HasPrefix(p, ExportPath+"/")
}
