package config

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Endpoint is the decoded S3 storage of a message: how to reach the server
// and who to be there. The worker hands it to the synchroniser.
type Endpoint struct {
	Host      string // host name or IP address, without scheme or port
	Port      int    // the scheme's default (80/443) when the message has none
	Secure    bool   // https unless bucket_host says http://
	Region    string // as sent; "ignore" for in-cluster buckets
	AccessKey string // decoded from base64
	SecretKey string // decoded from base64
	CAPEM     []byte // decoded aws_ca_bundle: extra trusted CA certificates, PEM
}

// Endpoint decodes the S3 settings. The error starts with the offending
// field name (relative to the s3 object) and never contains a credential.
func (s *S3) Endpoint() (*Endpoint, error) {
	host, secure, err := splitScheme(s.BucketHost)
	if err != nil {
		return nil, fmt.Errorf("bucket_host: %w", err)
	}
	port := int(s.BucketPort)
	switch {
	case s.BucketPort < 0 || s.BucketPort > 65535:
		return nil, errors.New("bucket_port: must be between 0 and 65535")
	case port == 0 && secure:
		port = 443
	case port == 0:
		port = 80
	}
	if s.BucketName == "" {
		return nil, errors.New("bucket_name: must not be empty")
	}
	access, err := decodeBase64(s.AccessKeyID)
	if err != nil {
		return nil, fmt.Errorf("aws_access_key_id: %w", err)
	}
	secret, err := decodeBase64(s.SecretAccessKey)
	if err != nil {
		return nil, fmt.Errorf("aws_secret_access_key: %w", err)
	}
	var ca []byte
	if s.CABundle != "" {
		if ca, err = decodeBase64(s.CABundle); err != nil {
			return nil, fmt.Errorf("aws_ca_bundle: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return nil, errors.New("aws_ca_bundle: must be base64 of PEM certificates; none found")
		}
	}
	return &Endpoint{
		Host:      host,
		Port:      port,
		Secure:    secure,
		Region:    s.BucketRegion,
		AccessKey: string(access),
		SecretKey: string(secret),
		CAPEM:     ca,
	}, nil
}

// splitScheme applies the bucket_host rule: "http://host" is plain http,
// "https://host" or a bare host is https. The host must be a name or an IP
// address, without port, path or credentials.
func splitScheme(raw string) (host string, secure bool, err error) {
	host, secure = raw, true
	lower := strings.ToLower(raw)
	switch {
	case strings.HasPrefix(lower, "http://"):
		host, secure = raw[len("http://"):], false
	case strings.HasPrefix(lower, "https://"):
		host = raw[len("https://"):]
	case strings.Contains(raw, "://"):
		return "", false, errors.New(`scheme must be "http://" or "https://"`)
	}
	host = strings.TrimSuffix(host, "/")
	if host == "" {
		return "", false, errors.New("must not be empty")
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if ip := net.ParseIP(host[1 : len(host)-1]); ip != nil && strings.Contains(host, ":") {
			return host[1 : len(host)-1], secure, nil
		}
		return "", false, errors.New("not a valid IPv6 address")
	}
	if net.ParseIP(host) != nil {
		return host, secure, nil
	}
	if strings.ContainsAny(host, "/?#@") {
		return "", false, errors.New("must be a host name or address, without path, query or credentials")
	}
	if strings.Contains(host, ":") {
		return "", false, errors.New("must not carry a port; set bucket_port")
	}
	if len(host) > 253 {
		return "", false, errors.New("host name longer than 253 characters")
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return "", false, fmt.Errorf("host name contains %q", r)
		}
	}
	return host, secure, nil
}

// decodeBase64 decodes a base64 value as Kubernetes Secrets and flotta
// carry them (padded or not, line breaks ignored). The error never quotes
// the value.
func decodeBase64(v string) ([]byte, error) {
	if v == "" {
		return nil, errors.New("must not be empty")
	}
	v = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, v)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(v); err != nil {
			return nil, errors.New("must be base64 (the value itself is not shown)")
		}
	}
	if len(b) == 0 {
		return nil, errors.New("must not decode to an empty value")
	}
	return b, nil
}
