// Package bytesize is the one unit rule of every size and rate of the worker
// and of flotta-sync (FLOTTA_INGRESS_QUOTA, FLOTTA_MIN_FREE, --max-bytes,
// --min-free, and the rates of FLOTTA_BWLIMIT and --bwlimit through package
// bwlimit): a bare number is bytes, a suffix is binary. Format writes byte
// counts back for people.
//
// Accepted forms, exactly:
//
//   - a whole number of bytes: 0, 1048576;
//   - a number, whole or decimal, followed by a suffix K, M, G or T
//     (powers of 1024: 1K = 1024, 1.5G = 1610612736), optionally followed by
//     "i", "iB" or "B": 1K, 1Ki, 1KiB and 1KB are the same; suffixes are
//     case-insensitive (1k = 1K), and a lone "B" means bytes (512B);
//   - -1, which a setting reads as "none" (see Setting).
//
// A decimal size is rounded down to a whole byte. Spaces around the value
// and between the number and the suffix are ignored.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Forms describes the accepted forms, for error messages and usage text.
const Forms = "a number of bytes or a number with a suffix K, M, G or T (binary: 1K = 1024; Ki, KiB, KB and lower case accepted), 0 for the default, -1 for none"

// Special values of a size setting.
const (
	Default int64 = 0  // the setting's default (documented with each setting)
	None    int64 = -1 // no limit: no quota, no free-space guard
)

// multipliers maps every accepted suffix, in lower case, to its value.
var multipliers = func() map[string]int64 {
	m := map[string]int64{"": 1, "b": 1}
	for i, u := range []string{"k", "m", "g", "t"} {
		v := int64(1) << (10 * (i + 1))
		m[u], m[u+"i"], m[u+"ib"], m[u+"b"] = v, v, v, v
	}
	return m
}()

// Parse reads a size: a whole number of bytes, a number with a suffix, or -1
// (None). Any other negative value is an error.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "-1" {
		return None, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	if num == "" {
		return 0, errors.New("no number")
	}
	mult, ok := multipliers[unit]
	if !ok {
		return 0, fmt.Errorf("unknown suffix %q", s[i:])
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, errors.New("too large")
		}
		return n * mult, nil
	}
	if mult == 1 {
		return 0, errors.New("a decimal number needs a suffix K, M, G or T")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", num)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, errors.New("too large")
	}
	return int64(v), nil
}

// Setting reads the size setting called name (a variable or a flag, named as
// the user wrote it); the error names the setting and the accepted forms.
func Setting(name, value string) (int64, error) {
	n, err := Parse(value)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %v; want %s", name, value, err, Forms)
	}
	return n, nil
}

// Value is a flag.Value holding a size setting.
type Value struct{ n *int64 }

// NewValue returns a flag value storing into p, which keeps its current
// value until the flag is set.
func NewValue(p *int64) Value { return Value{p} }

// String implements flag.Value.
func (v Value) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.FormatInt(*v.n, 10)
}

// Type implements pflag.Value: help shows the flag's operand as "size".
func (v Value) Type() string { return "size" }

// Set implements flag.Value; the flag package names the flag in the error.
func (v Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return fmt.Errorf("%v; want %s", err, Forms)
	}
	*v.n = n
	return nil
}

// DiskGuard turns the two size settings of ingress into the sync engine's
// options (datasync.Options DefaultQuota, MinFreeBytes, MinFreePercent),
// with the one meaning the worker and flotta-sync give them: a quota of 0
// (Default) or -1 (None) is unlimited; a minimum free space of 0 is the
// engine's default, max(512 MiB, 5%), -1 is no guard, and any other value
// is exactly that many bytes.
func DiskGuard(quota, minFree int64) (quotaBytes, minFreeBytes int64, minFreePercent float64) {
	quotaBytes = max(quota, 0)
	switch {
	case minFree == Default:
		return quotaBytes, 0, 0
	case minFree < 0:
		return quotaBytes, -1, -1
	}
	return quotaBytes, minFree, -1
}

// Format writes a byte count for people: "512 B", "1.5 KiB", "2.0 GiB". It is
// the one formatter of byte counts in flotta-sync and device-worker output.
func Format(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	neg := ""
	if n < 0 {
		neg, n = "-", -n
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%s%.1f %ciB", neg, float64(n)/float64(div), "KMGTPE"[exp])
}
