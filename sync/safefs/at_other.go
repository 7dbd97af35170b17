//go:build !linux

package safefs

import "os"

// Elsewhere every path goes through os.Root (safefs.go).

type atDirs struct{}

type dirHandle struct{}

func openAt(*os.Root) *atDirs { return nil }

func (*atDirs) close()                             {}
func (*atDirs) existing(string) (int64, error)     { panic("unreachable") }
func (*atDirs) create(*Dir, string) (*Temp, error) { panic("unreachable") }
func (*Temp) placeAt() error                       { panic("unreachable") }
func (*Temp) abortAt()                             {}
