// Command tfmodels inspects and checks SavedModels through edgeinfer's
// TensorFlow binding.
//
//	tfmodels show <model dir>          print every signature: inputs, outputs, dtypes, shapes
//	tfmodels check <repository|dir>    run each version's golden input and compare with Python's output
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/golden"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tfmodels show <model dir> | tfmodels check <repository or model dir>")
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	switch flag.Arg(0) {
	case "show":
		err = show(flag.Arg(1))
	case "check":
		err = check(flag.Arg(1))
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func show(dir string) error {
	m, err := tfmodels.Load(dir, tfmodels.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Printf("%s (TensorFlow %s)\n", dir, tfmodels.Version())
	for _, s := range m.Signatures() {
		fmt.Printf("signature %q (%s)\n", s.Key, s.MethodName)
		for _, t := range s.Inputs {
			fmt.Printf("  input  %-40s %s\n", t, t.Name)
		}
		for _, t := range s.Outputs {
			fmt.Printf("  output %-40s %s\n", t, t.Name)
		}
	}
	return nil
}

// check accepts one version directory or a repository <name>/<version>/.
func check(path string) error {
	dirs := []string{path}
	if _, err := os.Stat(filepath.Join(path, "saved_model.pb")); err != nil {
		dirs, _ = filepath.Glob(filepath.Join(path, "*", "*", "saved_model.pb"))
		for i := range dirs {
			dirs[i] = filepath.Dir(dirs[i])
		}
		sort.Strings(dirs)
		if len(dirs) == 0 {
			return fmt.Errorf("%s: no SavedModel and no <name>/<version>/saved_model.pb below it", path)
		}
	}
	failed := 0
	for _, d := range dirs {
		t0 := time.Now()
		rep, err := golden.Check(d)
		took := time.Since(t0).Round(time.Millisecond)
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: %v\n", d, err)
		case !rep.OK():
			failed++
			fmt.Printf("FAIL %s: %s\n", d, summary(rep))
		default:
			fmt.Printf("ok   %-40s %s (load+run %s)\n", d, summary(rep), took)
		}
	}
	fmt.Printf("%d passed, %d failed\n", len(dirs)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d models differ from Python's golden output", failed, len(dirs))
	}
	return nil
}

func summary(r golden.Report) string {
	parts := make([]string, len(r.Outputs))
	for i, o := range r.Outputs {
		parts[i] = fmt.Sprintf("%s%v Δ%.1g", o.Key, o.Shape, o.MaxAbsDiff)
	}
	return strings.Join(parts, " ")
}
