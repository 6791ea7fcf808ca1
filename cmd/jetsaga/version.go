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

// versionJSON is the output of `version --json`.
type versionJSON struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Protocol int    `json:"protocol"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of jetsaga and of its protocol",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			ver, rev := buildVersion()
			if asJSON {
				return writeJSON(a.stdout, versionJSON{Version: ver, Revision: rev, Protocol: events.Version,
					Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH})
			}
			fmt.Fprintf(a.stdout, "jetsaga %s\n", ver)
			if rev != "" {
				fmt.Fprintf(a.stdout, "revision %s\n", rev)
			}
			fmt.Fprintf(a.stdout, "protocol v%d\n", events.Version)
			fmt.Fprintf(a.stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the versions as a JSON object")
	return cmd
}
