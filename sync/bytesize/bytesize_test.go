package bytesize

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "-1": None, "1048576": 1 << 20, " 42 ": 42, "512B": 512, "512b": 512,
		"1K": 1024, "1k": 1024, "1Ki": 1024, "1KiB": 1024, "1kib": 1024, "1KB": 1024, "1 K": 1024,
		"4M": 4 << 20, "4MiB": 4 << 20, "1G": 1 << 30, "1GB": 1 << 30, "2T": 2 << 40, "2TiB": 2 << 40,
		"1.5G": 3 << 29, "0.5K": 512, "1.0001K": 1024, "8388607T": 8388607 << 40,
	} {
		got, err := Parse(in)
		if assert.NoError(t, err, in) {
			assert.Equal(t, want, got, in)
		}
	}
	for _, in := range []string{"", "-2", "-1K", "1Q", "1KK", "1Kii", "1iB", "K", "1.5", "1.5B", "1..5K",
		"9223372036854775808", "8388608T", "1e3", "0x10", "1 000", "one"} {
		_, err := Parse(in)
		assert.Error(t, err, in)
	}
}

func TestSettingNamesItselfAndTheForms(t *testing.T) {
	_, err := Setting("FLOTTA_MIN_FREE", "1Q")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `FLOTTA_MIN_FREE "1Q"`)
	assert.Contains(t, err.Error(), Forms)
	n, err := Setting("FLOTTA_MIN_FREE", "1G")
	require.NoError(t, err)
	assert.Equal(t, int64(1<<30), n)
}

func TestValueAsFlag(t *testing.T) {
	n := int64(7)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(NewValue(&n), "min-free", "")
	require.NoError(t, fs.Parse(nil))
	assert.Equal(t, int64(7), n, "unset keeps the default")
	require.NoError(t, fs.Parse([]string{"-min-free", "2M"}))
	assert.Equal(t, int64(2<<20), n)
	err := fs.Parse([]string{"-min-free", "lots"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-min-free")
	assert.Contains(t, err.Error(), Forms)
}

func TestDiskGuard(t *testing.T) {
	for _, c := range []struct {
		quota, minFree, wantQuota, wantBytes int64
		wantPct                              float64
	}{
		{0, 0, 0, 0, 0},                          // both defaults: no quota, engine default guard
		{-1, -1, 0, -1, -1},                      // none: no quota, no guard
		{1 << 30, 4 << 20, 1 << 30, 4 << 20, -1}, // exactly 4 MiB free, no percent
	} {
		q, b, p := DiskGuard(c.quota, c.minFree)
		assert.Equal(t, []any{c.wantQuota, c.wantBytes, c.wantPct}, []any{q, b, p}, "%+v", c)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1: "1 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 20: "10.0 MiB",
		3 << 30: "3.0 GiB", 1 << 40: "1.0 TiB", 1 << 62: "4.0 EiB", -2048: "-2.0 KiB", -5: "-5 B",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
	// What Format writes, Parse reads back (to the shown precision).
	for _, n := range []int64{1 << 10, 3 << 19, 10 << 20, 7 << 30} {
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}
