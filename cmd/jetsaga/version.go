package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/events"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3". Without it the module version from
// the build information is used.
var version = ""

// buildVersion returns the version and VCS revision of this binary.
func buildVersion() (ver, revision string) {
	ver = version
	info, ok := debug.ReadBuildInfo()
	if ok {
		if ver == "" {
			ver = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				if s.Value == "true" && revision != "" {
					revision += "-dirty"
				}
			}
		}
	}
	if ver == "" {
		ver = "(devel)"
	}
	return ver, revision
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of jetsaga and of its protocol",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			ver, rev := buildVersion()
			fmt.Fprintf(a.stdout, "jetsaga %s\n", ver)
			if rev != "" {
				fmt.Fprintf(a.stdout, "revision %s\n", rev)
			}
			fmt.Fprintf(a.stdout, "protocol v%d\n", events.Version)
			fmt.Fprintf(a.stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
