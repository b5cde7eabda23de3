// Package repo reads the model repository (TensorFlow Serving's layout):
// <repository>/<model>/<version>/{saved_model.pb, variables/, edgeinfer.toml}
// with numeric version folders; the highest complete version is served.
package repo

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Version is one servable model version.
type Version struct {
	Model    string
	Version  string
	Dir      string // absolute
	Manifest manifest.Manifest
}

// Newest returns the highest numbered complete version of model: one with
// saved_model.pb, variables/ and a valid edgeinfer.toml. Incomplete
// version folders (still being copied) are passed over.
func Newest(repository, model string) (Version, error) {
	dir, err := filepath.Abs(filepath.Join(repository, model))
	if err != nil {
		return Version{}, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Version{}, fmt.Errorf("model %s: %w", model, err)
	}
	var nums []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && n >= 0 {
			nums = append(nums, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	var lastErr error
	for _, n := range nums {
		v := Version{Model: model, Version: strconv.Itoa(n), Dir: filepath.Join(dir, strconv.Itoa(n))}
		if err := complete(v.Dir); err != nil {
			lastErr = err
			continue
		}
		m, err := manifest.Read(v.Dir)
		if err == nil {
			err = m.Validate()
		}
		if err != nil {
			lastErr = err
			continue
		}
		v.Manifest = m
		return v, nil
	}
	if lastErr != nil {
		return Version{}, fmt.Errorf("model %s: no servable version: %w", model, lastErr)
	}
	return Version{}, fmt.Errorf("model %s: no numbered version folder in %s", model, dir)
}

func complete(dir string) error {
	for _, name := range []string{"saved_model.pb", "variables", "edgeinfer.toml"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("%s: incomplete version: %w", dir, err)
		}
	}
	return nil
}
