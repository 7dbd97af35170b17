package main

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// Where the operator finds the endpoint of in-cluster (OBC) buckets.
const (
	routeNamespace    = "openshift-storage"
	routeName         = "s3"
	routerCANamespace = "openshift-ingress-operator"
	routerCAName      = "router-ca"
)

// resolveStorage applies the control plane's rule: the device's Object
// Bucket Claim (status.dataObc; its ConfigMap and Secret are named like the
// claim) wins over the external storage named in spec.storage.s3. It returns
// nil when the device has neither, which leaves sync off on the device.
func resolveStorage(dev *edgeDevice, objs *objects, s settings) (*config.S3, error) {
	ns := dev.Namespace
	claim := dev.Status.DataOBC
	if claim == "" && objs.configMap(ns, dev.Name) != nil && objs.secret(ns, dev.Name) != nil {
		// The operator's controller names the claim like the device.
		claim = dev.Name
	}
	if claim != "" {
		st, err := claimStorage(ns, claim, objs, s)
		if err != nil {
			return nil, fmt.Errorf("object bucket claim %s/%s: %w", ns, claim, err)
		}
		return st, nil
	}
	if dev.Spec.Storage == nil || dev.Spec.Storage.S3 == nil {
		return nil, nil
	}
	ref := dev.Spec.Storage.S3
	if ref.ConfigMapName == "" || ref.SecretName == "" {
		return nil, fmt.Errorf("EdgeDevice %s/%s: spec.storage.s3 needs both configMapName and secretName", ns, dev.Name)
	}
	cm := objs.configMap(ns, ref.ConfigMapName)
	if cm == nil {
		return nil, fmt.Errorf("EdgeDevice %s/%s: ConfigMap %s/%s not found", ns, dev.Name, ns, ref.ConfigMapName)
	}
	sec := objs.secret(ns, ref.SecretName)
	if sec == nil {
		return nil, fmt.Errorf("EdgeDevice %s/%s: Secret %s/%s not found", ns, dev.Name, ns, ref.SecretName)
	}
	st, err := storageFrom(cm, sec, true)
	if err != nil {
		return nil, fmt.Errorf("external storage of EdgeDevice %s/%s: %w", ns, dev.Name, err)
	}
	return st, nil
}

// claimStorage is the storage of an Object Bucket Claim as the operator
// builds it: the bucket and keys from the claim's ConfigMap and Secret, the
// host from the openshift-storage/s3 Route (port 443, region "ignore") and
// the CA from the router-ca Secret. Without a Route (object or -route-host)
// it falls back to the ConfigMap's BUCKET_HOST and BUCKET_PORT, which the
// operator never uses, and says so on stderr.
func claimStorage(ns, claim string, objs *objects, s settings) (*config.S3, error) {
	cm, sec := objs.configMap(ns, claim), objs.secret(ns, claim)
	if cm == nil || sec == nil {
		return nil, fmt.Errorf("need the claim's ConfigMap and Secret %s/%s", ns, claim)
	}
	host := s.routeHost
	if r := objs.route(routeNamespace, routeName); r != nil && host == "" {
		host = strings.TrimSpace(r.Spec.Host)
	}
	ca := s.routerCA
	if rc := objs.secret(routerCANamespace, routerCAName); rc != nil && ca == "" {
		ca = string(secretData(rc)["tls.crt"])
	}
	if host == "" {
		warnf("no Route %s/%s (or -route-host): bucket_host is the claim ConfigMap's BUCKET_HOST, which the operator never sends", routeNamespace, routeName)
		return storageFrom(cm, sec, false)
	}
	var missing []string
	name := strings.TrimSpace(cm.Data["BUCKET_NAME"])
	if name == "" {
		missing = append(missing, "ConfigMap "+cm.Name+" key BUCKET_NAME")
	}
	access := strings.TrimSpace(secretValue(sec, "AWS_ACCESS_KEY_ID"))
	secret := strings.TrimSpace(secretValue(sec, "AWS_SECRET_ACCESS_KEY"))
	if access == "" {
		missing = append(missing, "Secret "+sec.Name+" key AWS_ACCESS_KEY_ID")
	}
	if secret == "" {
		missing = append(missing, "Secret "+sec.Name+" key AWS_SECRET_ACCESS_KEY")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	st := &config.S3{
		BucketHost: host, BucketPort: 443, BucketName: name, BucketRegion: "ignore",
		AccessKeyID:     base64.StdEncoding.EncodeToString([]byte(access)),
		SecretAccessKey: base64.StdEncoding.EncodeToString([]byte(secret)),
	}
	if ca != "" {
		if !strings.Contains(ca, "-----BEGIN CERTIFICATE-----") {
			return nil, fmt.Errorf("router CA (%s/%s tls.crt or -router-ca) is not a PEM certificate", routerCANamespace, routerCAName)
		}
		st.CABundle = base64.StdEncoding.EncodeToString([]byte(ca))
	}
	return st, nil
}

// storageFrom reads a bucket's ConfigMap and Secret. External storage must
// name its region and may carry a CA (tls.crt); an OBC's region is "ignore".
func storageFrom(cm *corev1.ConfigMap, sec *corev1.Secret, external bool) (*config.S3, error) {
	var missing []string
	need := func(kind, key, val string) string {
		if strings.TrimSpace(val) == "" {
			missing = append(missing, kind+" key "+key)
		}
		return strings.TrimSpace(val)
	}
	st := &config.S3{
		BucketName:   need("ConfigMap "+cm.Name, "BUCKET_NAME", cm.Data["BUCKET_NAME"]),
		BucketHost:   need("ConfigMap "+cm.Name, "BUCKET_HOST", cm.Data["BUCKET_HOST"]),
		BucketRegion: "ignore",
	}
	port := need("ConfigMap "+cm.Name, "BUCKET_PORT", cm.Data["BUCKET_PORT"])
	if external {
		st.BucketRegion = need("ConfigMap "+cm.Name, "BUCKET_REGION", cm.Data["BUCKET_REGION"])
	}
	access := need("Secret "+sec.Name, "AWS_ACCESS_KEY_ID", secretValue(sec, "AWS_ACCESS_KEY_ID"))
	secret := need("Secret "+sec.Name, "AWS_SECRET_ACCESS_KEY", secretValue(sec, "AWS_SECRET_ACCESS_KEY"))
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("ConfigMap %s: BUCKET_PORT %q is not a port number", cm.Name, port)
	}
	st.BucketPort = int64(p)
	st.AccessKeyID = base64.StdEncoding.EncodeToString([]byte(access))
	st.SecretAccessKey = base64.StdEncoding.EncodeToString([]byte(secret))
	if ca := secretValue(sec, "tls.crt"); external && ca != "" {
		if !strings.Contains(ca, "-----BEGIN CERTIFICATE-----") {
			return nil, fmt.Errorf("Secret %s: tls.crt is not a PEM certificate", sec.Name)
		}
		st.CABundle = base64.StdEncoding.EncodeToString([]byte(ca))
	}
	return st, nil
}

// secretValue returns a Secret's value whether given as data (already
// base64-decoded by the Kubernetes types) or as stringData.
func secretValue(s *corev1.Secret, key string) string {
	if v, ok := s.Data[key]; ok {
		return string(v)
	}
	return s.StringData[key]
}
