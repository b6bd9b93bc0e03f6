// composecheck reads a docker-compose file the way `docker compose config` does (compose-go, the
// loader compose itself uses): the compose specification's schema, merges, interpolation and
// references between services. It prints the resolved project as JSON, or the problem and exits 1.
//
//	composecheck [-profile NAME]... FILE...
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

func main() {
	var profiles names
	flag.Var(&profiles, "profile", "a profile to enable (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-profile NAME]... FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(flag.Args(), cli.WithOsEnv, cli.WithProfiles(profiles))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.Marshal(project)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
