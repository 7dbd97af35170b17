package safefs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
)

// maxAside bounds the names KeepAside tries.
const maxAside = 100

// KeepAside gives the file at rel a second name in its directory: the first
// of name(1), name(2), ... that is not taken. It is a hard link (the same
// file: a writer holding it open loses nothing), made durable (the directory
// is synced) before KeepAside returns the name, so that rel may then be
// replaced.
func (d *Dir) KeepAside(rel string, name func(n int) string) (string, error) {
	if err := checkComponents(d.root, rel, false); err != nil {
		return "", err
	}
	for n := 1; n <= maxAside; n++ {
		aside := name(n)
		if path.Dir(aside) != path.Dir(rel) {
			return "", fmt.Errorf("%w: %s is not beside %s", ErrUnsafe, aside, rel)
		}
		err := d.root.Link(rel, aside)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("keep %s as %s: %w", rel, aside, err)
		}
		f, err := d.root.Open(path.Dir(rel))
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err != nil {
			return "", fmt.Errorf("keep %s as %s: sync directory: %w", rel, aside, err)
		}
		return aside, nil
	}
	return "", fmt.Errorf("keep %s aside: %d names taken", rel, maxAside)
}
