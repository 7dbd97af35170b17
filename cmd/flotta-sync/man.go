package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd writes the man pages at build time (make man; the RPM installs
// them). Hidden: operators read the pages, they do not make them.
func newManCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages of flotta-sync into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return failed(err)
			}
			// The date comes from SOURCE_DATE_EPOCH when set (reproducible
			// builds), else today.
			header := &doc.GenManHeader{Title: "FLOTTA-SYNC", Section: "1", Source: "flotta-sync " + version,
				Manual: "Flotta device worker"}
			if err := doc.GenManTree(cmd.Root(), header, args[0]); err != nil {
				return failed(err)
			}
			return nil
		},
	}
}
