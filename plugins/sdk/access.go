package sdk

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
)

// Access is what a plugin process reaches beyond its binary and libraries
// when it is confined (Options.Confine): files and folders it reads, and
// folders it changes.
type Access struct {
	Read  []string
	Write []string
}

// pathOptions are the pipeline options, whichever the task, that name a
// file or folder the plugin opens, and whether it writes there. A confined
// plugin is granted them (AccessFor), so a task that opens a path from its
// options names the option here.
var pathOptions = map[string]bool{
	"gallery":   false, // embed: folder of identities
	"verify":    false, // embed: reference image
	"state_dir": true,  // embed: clusters and runtime identities
}

// AccessFor is what the process of the model version in dir needs for
// these pipelines (name -> options JSON): the version, read-only, and the
// paths the options name (pathOptions), made absolute as the plugin, which
// shares the daemon's working folder, would open them.
func AccessFor(dir string, pipelines map[string]json.RawMessage) Access {
	a := Access{Read: []string{dir}}
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		for key, path := range optionPaths(pipelines[name]) {
			if pathOptions[key] {
				a.Write = append(a.Write, path)
			} else {
				a.Read = append(a.Read, path)
			}
		}
	}
	slices.Sort(a.Read)
	slices.Sort(a.Write)
	return Access{Read: slices.Compact(a.Read), Write: slices.Compact(a.Write)}
}

// optionPaths are the path options (pathOptions) set in opts, absolute; a
// pipeline's options that do not decode name none (the plugin refuses them).
func optionPaths(opts json.RawMessage) map[string]string {
	var all map[string]any
	if json.Unmarshal(opts, &all) != nil {
		return nil
	}
	paths := map[string]string{}
	for key := range pathOptions {
		if s, ok := all[key].(string); ok && s != "" {
			if abs, err := filepath.Abs(s); err == nil {
				paths[key] = abs
			}
		}
	}
	return paths
}

// allows reports whether a grants the path options of every pipeline, and
// otherwise names the first pipeline, option and path it does not grant.
func (a Access) allows(pipelines map[string]json.RawMessage) error {
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		paths := optionPaths(pipelines[name])
		for _, key := range slices.Sorted(maps.Keys(paths)) {
			granted := a.Write
			if !pathOptions[key] {
				granted = append(slices.Clone(a.Read), a.Write...)
			}
			if !slices.ContainsFunc(granted, func(g string) bool { return within(paths[key], g) }) {
				return fmt.Errorf("pipeline %s: %s %s is out of reach of the confined plugin process, which was started before a pipeline named it: it is granted to the model's next process (a new version, a restart of the process or of the daemon)",
					name, key, paths[key])
			}
		}
	}
	return nil
}

// within reports whether path is dir or beneath it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}
