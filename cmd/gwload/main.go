// Command gwload measures the gateway end to end over loopback: throughput
// and latency of each path, each beside a baseline measured in the same run
// (a bare server of the same protocol), so figures are ratios that hold on a
// noisy machine. Run `gwload help` for the scenarios.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
)

// scenario is one measurement; each lives in its own file and registers itself.
type scenario struct {
	help string
	run  func(args []string) error
}

var scenarios = map[string]scenario{}

func register(name, help string, run func(args []string) error) {
	scenarios[name] = scenario{help: help, run: run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: gwload SCENARIO [flags]   (gwload SCENARIO -h for its flags)")
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, scenarios[n].help)
	}
}

func main() {
	flag.Usage = usage
	if len(os.Args) < 2 || os.Args[1] == "help" || os.Args[1] == "-h" {
		usage()
		os.Exit(2)
	}
	s, ok := scenarios[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "gwload: unknown scenario %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := s.run(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "gwload:", err)
		os.Exit(1)
	}
}
