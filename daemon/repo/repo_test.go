package repo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func versionNames(vs []Version) []string {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.Version
	}
	return names
}

func TestScanFindsEveryExportedVersionComplete(t *testing.T) {
	for _, dir := range zooVersions(t) {
		model := filepath.Base(filepath.Dir(dir))
		vs, err := Scan(filepath.Dir(filepath.Dir(dir)), model)
		if err != nil {
			t.Errorf("%s: %v", model, err)
			continue
		}
		for _, v := range vs {
			if v.Err != nil || v.Fingerprint == "" || v.Manifest.Task == "" || !filepath.IsAbs(v.Dir) {
				t.Errorf("%s/%s: Err %v, Fingerprint %q, task %q, dir %q", model, v.Version, v.Err, v.Fingerprint, v.Manifest.Task, v.Dir)
			}
		}
	}
}

// An exported version cut short anywhere is refused, naming the file.
func TestAnExportedVersionCutShortByOneByteIsIncomplete(t *testing.T) {
	src := zooVersions(t)[0]
	tests := []struct {
		file string
		want string
	}{
		{filepath.Join(VariablesDir, shardName(0, 1)), "the index needs"},
		{IndexFile, "no table magic number"},
		{SavedModelFile, "still being copied?"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			repo := t.TempDir()
			dir := filepath.Join(repo, "m", "1")
			copyDir(t, src, dir)
			if vs, err := Scan(repo, "m"); err != nil || len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("the copy of %s is not complete: %v %+v", src, err, vs)
			}
			path := filepath.Join(dir, tt.file)
			truncateBy(t, path, 1)
			vs, err := Scan(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			if vs[0].Err == nil || !strings.Contains(vs[0].Err.Error(), path+": ") || !strings.Contains(vs[0].Err.Error(), tt.want) {
				t.Fatalf("Err = %v, want it to name %s and say %q", vs[0].Err, path, tt.want)
			}
		})
	}
}

func TestScanSaysWhyAVersionIsNotServable(t *testing.T) {
	data1 := filepath.Join(VariablesDir, shardName(1, 2))
	tests := []struct {
		name     string
		mutate   func(t *testing.T, dir string)
		file     string // the file Err must name
		want     string
		notExist bool // errors.Is(Err, fs.ErrNotExist)
	}{
		{"saved_model.pb missing", remove(SavedModelFile), SavedModelFile, "missing", true},
		{"saved_model.pb empty", write(SavedModelFile, ""), SavedModelFile, "empty", false},
		{"saved_model.pb cut short", cut(SavedModelFile, 100), SavedModelFile, "still being copied?", false},
		{"saved_model.pb not a SavedModel", write(SavedModelFile, "\x08\x01"), SavedModelFile, "no MetaGraphDef", false},
		{"edgeinfer.toml missing", remove("edgeinfer.toml"), "edgeinfer.toml", "missing", true},
		{"edgeinfer.toml invalid", write("edgeinfer.toml", strings.Replace(manifestTOML, `"classify"`, `"juggle"`, 1)), "edgeinfer.toml", `task "juggle"`, false},
		{"edgeinfer.toml with an unknown key", write("edgeinfer.toml", "colour = 1\n"+manifestTOML), "edgeinfer.toml", "unknown key colour", false},
		{"variables.index missing", remove(IndexFile), IndexFile, "missing", true},
		{"variables.index cut short", cut(IndexFile, 1), IndexFile, "incomplete or not a tensor bundle index", false},
		{"variables.index random bytes", write(IndexFile, strings.Repeat("\x9d\x17", 3000)), IndexFile, "not a tensor bundle index", false},
		{"data shard missing", remove(data1), data1, "missing, the index names it", true},
		{"data shard one byte short", cut(data1, 1), data1, "the index needs", false},
		{"data shard still empty", write(data1, ""), data1, "0 bytes, the index needs", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := t.TempDir()
			dir := writeVersion(t, repo, "m", "1", defaultBundle())
			tt.mutate(t, dir)
			vs, err := Scan(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 1 {
				t.Fatalf("got versions %v", versionNames(vs))
			}
			path := filepath.Join(dir, tt.file)
			if err := vs[0].Err; err == nil || !strings.Contains(err.Error(), path+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Err = %v, want it to name %s and say %q", err, path, tt.want)
			}
			if tt.notExist != errors.Is(vs[0].Err, fs.ErrNotExist) {
				t.Errorf("errors.Is(Err, fs.ErrNotExist) = %v", !tt.notExist)
			}
		})
	}
}

func remove(name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func write(name, content string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cut(name string, n int64) func(*testing.T, string) {
	return func(t *testing.T, dir string) { truncateBy(t, filepath.Join(dir, name), n) }
}

func TestScanNamesEveryProblemOfAVersion(t *testing.T) {
	repo := t.TempDir()
	dir := writeVersion(t, repo, "m", "1", defaultBundle())
	remove(SavedModelFile)(t, dir)
	cut(filepath.Join(VariablesDir, shardName(0, 2)), 1)(t, dir)
	vs, err := Scan(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	msg := vs[0].Err.Error()
	if !strings.Contains(msg, SavedModelFile) || !strings.Contains(msg, shardName(0, 2)) || strings.Contains(msg, "\n") {
		t.Fatalf("Err = %q, want both problems on one line", msg)
	}
}

func TestScanListsNumberedFoldersHighestFirstAndIgnoresOtherNames(t *testing.T) {
	repo := t.TempDir()
	for _, v := range []string{"2", "10", "1", ".3.tmp", ".11", "latest", "+4", "-5", "1e3"} {
		writeVersion(t, repo, "m", v, defaultBundle())
	}
	if err := os.WriteFile(filepath.Join(repo, "m", "12"), nil, 0o644); err != nil { // a file, not a folder
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repo, "m", "2"), filepath.Join(repo, "m", "7")); err != nil {
		t.Fatal(err)
	}
	vs, err := Scan(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := versionNames(vs), []string{"10", "7", "2", "1"}; !slices.Equal(got, want) {
		t.Fatalf("versions %v, want %v", got, want)
	}
	for _, v := range vs {
		if v.Err != nil || v.Num == 0 || v.Model != "m" || v.Dir != filepath.Join(repo, "m", v.Version) {
			t.Errorf("version %+v", v)
		}
	}
}

func TestScanOfAMissingModelFolderNamesIt(t *testing.T) {
	repo := t.TempDir()
	for _, model := range []string{"lenet5", "../lenet5", ""} {
		_, err := Scan(repo, model)
		if err == nil || !strings.Contains(err.Error(), "model ") || !strings.Contains(err.Error(), filepath.Join(repo, model)) && model == "lenet5" {
			t.Errorf("Scan(%q) = %v", model, err)
		}
	}
}

func TestServableReturnsTheHighestCompleteVersion(t *testing.T) {
	repo := t.TempDir()
	writeVersion(t, repo, "m", "1", defaultBundle())
	writeVersion(t, repo, "m", "2", defaultBundle())
	dir3 := writeVersion(t, repo, "m", "3", defaultBundle())
	cut(filepath.Join(VariablesDir, shardName(0, 2)), 1)(t, dir3) // still being copied
	v, err := Servable(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "2" || v.Num != 2 || v.Err != nil || v.Manifest.Task != "classify" || v.Fingerprint == "" {
		t.Fatalf("got %+v", v)
	}
}

func TestServableExplainsWhyNothingIsServable(t *testing.T) {
	repo := t.TempDir()
	if _, err := Servable(repo, "m"); err == nil || !strings.Contains(err.Error(), "model m") {
		t.Fatalf("missing model: %v", err)
	}
	os.MkdirAll(filepath.Join(repo, "m", ".1.tmp"), 0o755)
	if _, err := Servable(repo, "m"); err == nil || !strings.Contains(err.Error(), "no numbered version folder") {
		t.Fatalf("no versions: %v", err)
	}
	writeVersion(t, repo, "m", "1", defaultBundle())
	remove("edgeinfer.toml")(t, filepath.Join(repo, "m", "1"))
	dir := writeVersion(t, repo, "m", "2", defaultBundle())
	remove(IndexFile)(t, dir)
	_, err := Servable(repo, "m")
	if err == nil || !strings.Contains(err.Error(), "the highest, 2,") || !strings.Contains(err.Error(), filepath.Join(dir, IndexFile)) {
		t.Fatalf("nothing servable: %v", err)
	}
}

func TestFingerprintChangesWhenAFileChanges(t *testing.T) {
	data := filepath.Join(VariablesDir, shardName(0, 2))
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		change bool
	}{
		{"nothing touched", func(*testing.T, string) {}, false},
		{"a file read", func(t *testing.T, dir string) { os.ReadFile(filepath.Join(dir, data)) }, false},
		{"a byte appended", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, data), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
		}, true},
		{"same size, new time", func(t *testing.T, dir string) {
			later := time.Now().Add(time.Minute)
			os.Chtimes(filepath.Join(dir, "golden", "input_images.npy"), later, later)
		}, true},
		{"a file added", write("golden/more.npy", "x"), true},
		{"a file removed", remove("golden/input_images.npy"), true},
		{"a file renamed", func(t *testing.T, dir string) {
			os.Rename(filepath.Join(dir, "golden", "input_images.npy"), filepath.Join(dir, "golden", "input.npy"))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := t.TempDir()
			dir := writeVersion(t, repo, "m", "1", defaultBundle())
			age(t, dir)
			before, err := Scan(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			tt.mutate(t, dir)
			after, err := Scan(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			if changed := before[0].Fingerprint != after[0].Fingerprint; changed != tt.change {
				t.Fatalf("fingerprint changed: %v, want %v (%s -> %s)", changed, tt.change, before[0].Fingerprint, after[0].Fingerprint)
			}
		})
	}
}

func TestACompressedIndexIsTakenAsComplete(t *testing.T) {
	repo := t.TempDir()
	b := defaultBundle()
	b.compression = 1
	dir := writeVersion(t, repo, "m", "1", b)
	remove(filepath.Join(VariablesDir, shardName(1, 2)))(t, dir) // cannot be known from the index
	vs, err := Scan(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].Err != nil {
		t.Fatalf("Err = %v, want nil: the index is whole, its entries unreadable", vs[0].Err)
	}
}
