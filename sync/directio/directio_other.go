//go:build !linux

package directio

import (
	"errors"
	"os"
)

// Elsewhere Copy is a plain copy.

type direct struct{}

func enable(*os.File) (*direct, error) { return nil, errors.ErrUnsupported }

func (*direct) disable() {}

func (*direct) writeAt([]byte, int64) error { return errors.ErrUnsupported }
