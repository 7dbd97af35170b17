package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// edgeDevice is the part of flotta's EdgeDevice resource this tool reads.
type edgeDevice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Heartbeat *struct {
			PeriodSeconds   int64 `json:"periodSeconds"`
			HardwareProfile *struct {
				Include bool   `json:"include"`
				Scope   string `json:"scope"`
			} `json:"hardwareProfile"`
		} `json:"heartbeat"`
		Storage *struct {
			S3 *struct {
				ConfigMapName string `json:"configMapName"`
				SecretName    string `json:"secretName"`
			} `json:"s3"`
		} `json:"storage"`
	} `json:"spec"`
	Status struct {
		// DataOBC names the device's Object Bucket Claim.
		DataOBC string `json:"dataObc"`
	} `json:"status"`
}

// route is the part of an OpenShift Route this tool reads.
type route struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Host string `json:"host"`
	} `json:"spec"`
}

// edgeWorkload is the part of flotta's EdgeWorkload resource this tool reads.
type edgeWorkload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Type            string       `json:"type"`
		Data            *config.Data `json:"data"`
		ImageRegistries *struct {
			SecretRef *struct {
				Name string `json:"name"`
			} `json:"secretRef"`
		} `json:"imageRegistries"`
		Pod struct {
			Spec corev1.PodSpec `json:"spec"`
		} `json:"pod"`
	} `json:"spec"`
}

// objects is every resource read from the input files, by kind.
type objects struct {
	devices    []edgeDevice
	workloads  []edgeWorkload
	configMaps []corev1.ConfigMap
	secrets    []corev1.Secret
	routes     []route
}

// readObjects decodes every YAML (or JSON) document of the given files.
func readObjects(paths []string) (*objects, error) {
	all := &objects{}
	for _, p := range paths {
		if err := all.readFile(p); err != nil {
			return nil, err
		}
	}
	return all, nil
}

func (o *objects) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if err := o.add(doc); err != nil {
			return fmt.Errorf("%s: document %d: %w", path, n, err)
		}
	}
}

func (o *objects) add(doc []byte) error {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return err
	}
	var err error
	switch meta.Kind {
	case "":
		return nil // an empty document between separators
	case "EdgeDevice":
		var d edgeDevice
		if err = yaml.Unmarshal(doc, &d); err == nil {
			o.devices = append(o.devices, d)
		}
	case "EdgeWorkload":
		var w edgeWorkload
		if err = yaml.Unmarshal(doc, &w); err == nil {
			o.workloads = append(o.workloads, w)
		}
	case "ConfigMap":
		var c corev1.ConfigMap
		if err = yaml.Unmarshal(doc, &c); err == nil {
			o.configMaps = append(o.configMaps, c)
		}
	case "Secret":
		var s corev1.Secret
		if err = yaml.Unmarshal(doc, &s); err == nil {
			o.secrets = append(o.secrets, s)
		}
	case "Route":
		var r route
		if err = yaml.Unmarshal(doc, &r); err == nil {
			o.routes = append(o.routes, r)
		}
	case "ObjectBucketClaim":
		// The claim itself carries nothing the message needs: its
		// ConfigMap and Secret (named like it) do.
	default:
		return fmt.Errorf("unsupported kind %q (want EdgeDevice, EdgeWorkload, ConfigMap, Secret, Route or ObjectBucketClaim)", meta.Kind)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", meta.Kind, err)
	}
	return nil
}

func (o *objects) configMap(namespace, name string) *corev1.ConfigMap {
	for i := range o.configMaps {
		if c := &o.configMaps[i]; c.Name == name && c.Namespace == namespace {
			return c
		}
	}
	return nil
}

func (o *objects) secret(namespace, name string) *corev1.Secret {
	for i := range o.secrets {
		if s := &o.secrets[i]; s.Name == name && s.Namespace == namespace {
			return s
		}
	}
	return nil
}

func (o *objects) route(namespace, name string) *route {
	for i := range o.routes {
		if r := &o.routes[i]; r.Name == name && r.Namespace == namespace {
			return r
		}
	}
	return nil
}
