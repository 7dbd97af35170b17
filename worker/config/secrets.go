package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
)

// dns1123Subdomain is the Kubernetes rule for Secret and ConfigMap names.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ValidObjectName reports whether name is a valid Kubernetes Secret or
// ConfigMap name (a DNS-1123 subdomain of at most 253 characters).
func ValidObjectName(name string) bool {
	return len(name) <= 253 && dns1123Subdomain.MatchString(name)
}

// Values decodes the secret's data into its keys and raw values. Data is
// either a JSON string holding a JSON object (what flotta sends) or that
// object itself; each value is base64. Errors name the key at fault, never
// a value.
func (s Secret) Values() (map[string][]byte, error) {
	if len(s.Data) == 0 {
		return map[string][]byte{}, nil
	}
	raw := []byte(s.Data)
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		raw = []byte(text)
	}
	var encoded map[string]string
	if err := json.Unmarshal(raw, &encoded); err != nil || encoded == nil {
		return nil, errors.New("must be a JSON object (or a string holding one) mapping each key to the base64 of its value")
	}
	out := make(map[string][]byte, len(encoded))
	keys := make([]string, 0, len(encoded))
	for k := range encoded {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !validKey(k) {
			return nil, fmt.Errorf("key %q: must consist of letters, digits, '-', '_' or '.', and not be \".\" or \"..\"", k)
		}
		v, err := base64.StdEncoding.DecodeString(encoded[k])
		if err != nil {
			return nil, fmt.Errorf("key %q: value is not base64", k)
		}
		out[k] = v
	}
	return out, nil
}

var configKey = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)

// validKey is the Kubernetes rule for Secret and ConfigMap keys; it also
// makes every key a safe file name.
func validKey(k string) bool {
	return len(k) <= 253 && configKey.MatchString(k) && k != "." && k != ".."
}
