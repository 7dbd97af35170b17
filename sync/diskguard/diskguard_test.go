package diskguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fixedFree(avail, total uint64) FreeFunc {
	return func(string) (uint64, uint64, error) { return avail, total, nil }
}

func TestQuota(t *testing.T) {
	g := New(Config{Path: "/d", Quota: 100, Used: 40, Free: fixedFree(1<<30, 1<<31)})
	r1, err := g.Reserve(50, 0)
	require.NoError(t, err)
	_, err = g.Reserve(20, 0) // 40 + 50 reserved + 20 > 100
	assert.ErrorIs(t, err, ErrQuota)
	r1.Commit()
	assert.Equal(t, int64(90), g.Used())
	// Replacing a 30-byte file with a 40-byte one needs 10 more.
	r2, err := g.Reserve(40, 30)
	require.NoError(t, err)
	r2.Commit()
	assert.Equal(t, int64(100), g.Used())
	_, err = g.Reserve(1, 0)
	assert.ErrorIs(t, err, ErrQuota)
	r3, err := g.Reserve(5, 5)
	require.NoError(t, err)
	r3.Release()
	r3.Commit() // no effect after Release
	assert.Equal(t, int64(100), g.Used())
}

func TestFreeSpace(t *testing.T) {
	// 1000 bytes available of 10000; keep max(100, 5% = 500) = 500.
	g := New(Config{Path: "/d", MinFreeBytes: 100, MinFreePercent: 5, Free: fixedFree(1000, 10000)})
	r, err := g.Reserve(400, 0)
	require.NoError(t, err)
	_, err = g.Reserve(200, 0) // 1000 - 400 reserved - 200 = 400 < 500
	assert.ErrorIs(t, err, ErrFreeSpace)
	r.Release()
	_, err = g.Reserve(500, 0)
	assert.NoError(t, err)
}

func TestStatfs(t *testing.T) {
	avail, total, err := Statfs(t.TempDir())
	require.NoError(t, err)
	assert.Positive(t, total)
	assert.LessOrEqual(t, avail, total)
}
