package repo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Version is one model version folder.
type Version struct {
	Model    string
	Version  string            // folder name, decimal
	Num      int               // numeric value of Version
	Dir      string            // absolute path
	Manifest manifest.Manifest // valid only when Err == nil
	// Fingerprint changes whenever any file of the version changes: it is a
	// hash (hex) of the relative path, size and modification time (ns) of
	// every file under Dir. A version rejected for any reason need not be
	// tried again until its Fingerprint changes.
	Fingerprint string
	// Err says why the version cannot be served yet (nil: complete and its
	// manifest valid). It names the file, e.g.
	// ".../2/variables/variables.data-00000-of-00001: 1200 bytes, the index
	// needs 4096 (still being copied?)".
	Err error
}

// Files of a version folder.
const (
	SavedModelFile = "saved_model.pb"
	VariablesDir   = "variables"
	IndexFile      = VariablesDir + "/" + indexFile
)

// found is a version folder as listed, before the deep check.
type found struct {
	v      Version
	newest time.Time // latest modification time of its files
}

// Scan lists every numbered version folder of model, highest first, each
// with its Fingerprint and Err (the deep completeness check). Folders whose
// name is not a non-negative decimal integer are ignored, and so are
// dot-names such as ".3.tmp" (where a version is copied before it is moved
// into place). A missing model folder is an error naming it.
func Scan(repository, model string) ([]Version, error) {
	list, err := listVersions(repository, model)
	if err != nil {
		return nil, err
	}
	out := make([]Version, len(list))
	for i, f := range list {
		out[i] = f.v
		if note := check(&out[i]); note != "" {
			slog.Warn("model version only partly checked", "model", model, "version", f.v.Version, "note", note)
		}
	}
	return out, nil
}

// Servable returns the highest version of model that is complete and whose
// manifest is valid (Err == nil). When there is none, the error says why the
// highest version is not servable.
func Servable(repository, model string) (Version, error) {
	list, err := listVersions(repository, model)
	if err != nil {
		return Version{}, err
	}
	if len(list) == 0 {
		dir, _ := modelDir(repository, model)
		return Version{}, fmt.Errorf("model %s: no numbered version folder in %s", model, dir)
	}
	var highest Version
	for i, f := range list {
		v := f.v
		if note := check(&v); note != "" {
			slog.Warn("model version only partly checked", "model", model, "version", v.Version, "note", note)
		}
		if v.Err == nil {
			return v, nil
		}
		if i == 0 {
			highest = v
		}
	}
	return Version{}, fmt.Errorf("model %s: no servable version; the highest, %s, is not: %w", model, highest.Version, highest.Err)
}

// ServingManifest returns the manifest of the version of model that
// version ("latest", or a version number) would serve, reading only the
// manifests: for "latest", that of the highest version whose manifest is
// valid. It tells what a model does (its task, its labels) without the deep
// check; an error says why it cannot.
func ServingManifest(repository, model, version string) (manifest.Manifest, error) {
	list, err := listVersions(repository, model)
	if err != nil {
		return manifest.Manifest{}, err
	}
	var highest error
	for _, f := range list {
		if version != "latest" && f.v.Version != version {
			continue
		}
		m, err := readManifest(f.v.Dir)
		if err == nil || version != "latest" {
			return m, err
		}
		if highest == nil {
			highest = err
		}
	}
	switch {
	case version != "latest":
		return manifest.Manifest{}, fmt.Errorf("model %s: version %s is not in the repository", model, version)
	case highest == nil:
		return manifest.Manifest{}, fmt.Errorf("model %s: no version in the repository", model)
	}
	return manifest.Manifest{}, fmt.Errorf("model %s: no version with a valid %s; the highest: %w", model, manifest.File, highest)
}

func modelDir(repository, model string) (string, error) {
	if model == "" || model == "." || model == ".." || strings.ContainsAny(model, `/\`) {
		return "", fmt.Errorf("model %q: not a folder name", model)
	}
	dir, err := filepath.Abs(filepath.Join(repository, model))
	if err != nil {
		return "", fmt.Errorf("model %s: %w", model, err)
	}
	return dir, nil
}

// versionNum returns the value of a version folder name: decimal digits
// only (no sign, no dot-names).
func versionNum(name string) (int, bool) {
	if name == "" {
		return 0, false
	}
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(name)
	return n, err == nil
}

// listVersions lists the numbered version folders of model, highest first,
// with their fingerprints but without the deep check.
func listVersions(repository, model string) ([]found, error) {
	dir, err := modelDir(repository, model)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", model, err)
	}
	var list []found
	for _, e := range entries {
		n, ok := versionNum(e.Name())
		if !ok {
			continue
		}
		vdir := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			// A symbolic link to a folder is a version too.
			if st, err := os.Stat(vdir); err != nil || !st.IsDir() {
				continue
			}
		}
		f := found{v: Version{Model: model, Version: e.Name(), Num: n, Dir: vdir}}
		f.v.Fingerprint, f.newest, f.v.Err = fingerprint(vdir)
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].v.Num != list[j].v.Num {
			return list[i].v.Num > list[j].v.Num
		}
		return list[i].v.Version > list[j].v.Version
	})
	return list, nil
}

// maxDepth bounds the walk of a version folder (symbolic links are
// followed, so a loop must end somewhere).
const maxDepth = 8

// fingerprint hashes the relative path, size and modification time of every
// file under dir and returns the latest modification time.
func fingerprint(dir string) (string, time.Time, error) {
	h := sha256.New()
	var newest time.Time
	var walk func(rel string, depth int) error
	walk = func(rel string, depth int) error {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			if rel != "" && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we looked
			}
			return err
		}
		for _, e := range entries {
			name := filepath.Join(rel, e.Name())
			st, err := os.Stat(filepath.Join(dir, name)) // follows symbolic links
			if errors.Is(err, fs.ErrNotExist) {
				continue // renamed or removed while we looked
			}
			if err != nil {
				return err
			}
			if st.IsDir() {
				if depth >= maxDepth {
					return fmt.Errorf("%s: folders nested deeper than %d", filepath.Join(dir, name), maxDepth)
				}
				if err := walk(name, depth+1); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(h, "%s\x00%d\x00%d\n", filepath.ToSlash(name), st.Size(), st.ModTime().UnixNano())
			if st.ModTime().After(newest) {
				newest = st.ModTime()
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		// Still a fingerprint: the error text stands for the unreadable part.
		fmt.Fprintf(h, "error\x00%v\n", err)
		return hex.EncodeToString(h.Sum(nil)[:16]), newest, fmt.Errorf("%s: %w", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), newest, nil
}

// fileError is a problem with one file of a version.
type fileError struct {
	path string
	msg  string
	err  error // wrapped, may be nil
}

func (e *fileError) Error() string { return e.path + ": " + e.msg }
func (e *fileError) Unwrap() error { return e.err }

func missing(path, msg string) error {
	return &fileError{path: path, msg: msg, err: fs.ErrNotExist}
}

// problems joins the reasons a version is not servable on one line.
type problems []error

func (p problems) Error() string {
	s := make([]string, len(p))
	for i, e := range p {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (p problems) Unwrap() []error { return p }

// check runs the deep completeness check of v (unless listing it already
// failed) and fills v.Err, and v.Manifest when it passes. note, when not
// empty, says what could not be checked.
func check(v *Version) (note string) {
	if v.Err != nil {
		return ""
	}
	var errs problems
	if err := checkSavedModel(filepath.Join(v.Dir, SavedModelFile)); err != nil {
		errs = append(errs, err)
	}
	m, err := readManifest(v.Dir)
	if err != nil {
		errs = append(errs, err)
	}
	verrs, note := checkVariables(filepath.Join(v.Dir, VariablesDir))
	errs = append(errs, verrs...)
	switch len(errs) {
	case 0:
		v.Manifest = m
	case 1:
		v.Err = errs[0]
	default:
		v.Err = errs
	}
	return note
}

// checkSavedModel checks that saved_model.pb is a whole SavedModel message:
// its top-level fields (saved_model_schema_version = 1, meta_graphs = 2)
// each end within the file, and there is a MetaGraphDef. A file cut short
// while being copied almost always ends inside the big meta_graphs field.
func checkSavedModel(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return missing(path, "missing")
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return &fileError{path: path, msg: "empty (still being copied?)"}
	}
	var buf [2 * maxVarintLen]byte
	metaGraphs := 0
	for pos := int64(0); pos < size; {
		n, err := f.ReadAt(buf[:], pos)
		if err != nil && err != io.EOF {
			return err
		}
		b := buf[:n]
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 && n < len(buf) {
			return truncatedPB(path, pos, size)
		}
		if tn < 0 {
			return &fileError{path: path, msg: fmt.Sprintf("not a SavedModel: bad field tag at byte %d", pos)}
		}
		var end int64
		switch typ {
		case protowire.VarintType:
			_, vn := protowire.ConsumeVarint(b[tn:])
			if vn < 0 {
				return truncatedPB(path, pos, size)
			}
			end = pos + int64(tn+vn)
		case protowire.Fixed32Type:
			end = pos + int64(tn) + 4
		case protowire.Fixed64Type:
			end = pos + int64(tn) + 8
		case protowire.BytesType:
			l, ln := protowire.ConsumeVarint(b[tn:])
			if ln < 0 {
				return truncatedPB(path, pos, size)
			}
			if l > uint64(size) {
				l = uint64(size) + 1 // runs past the end, whatever its length
			}
			end = pos + int64(tn+ln) + int64(l)
		default:
			return &fileError{path: path, msg: fmt.Sprintf("not a SavedModel: field %d has wire type %d at byte %d", num, typ, pos)}
		}
		if end > size {
			return &fileError{path: path, msg: fmt.Sprintf("%d bytes, cut inside its field %d that starts at byte %d (still being copied?)", size, num, pos)}
		}
		if num == 2 && typ == protowire.BytesType {
			metaGraphs++
		}
		pos = end
	}
	if metaGraphs == 0 {
		return &fileError{path: path, msg: "holds no MetaGraphDef: not a SavedModel"}
	}
	return nil
}

// maxVarintLen is the length of the longest varint.
const maxVarintLen = 10

func truncatedPB(path string, pos, size int64) error {
	return &fileError{path: path, msg: fmt.Sprintf("%d bytes, cut inside the field that starts at byte %d (still being copied?)", size, pos)}
}

// readManifest reads and validates edgeinfer.toml.
func readManifest(dir string) (manifest.Manifest, error) {
	path := filepath.Join(dir, manifest.File)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return manifest.Manifest{}, missing(path, "missing")
	}
	m, err := manifest.Read(dir) // its errors name the file
	if err != nil {
		return manifest.Manifest{}, err
	}
	if err := m.Validate(); err != nil {
		return manifest.Manifest{}, &fileError{path: path, msg: strings.ReplaceAll(err.Error(), "\n", "; "), err: err}
	}
	return m, nil
}

// checkVariables checks the tensor bundle: the index is a whole table, and
// every data shard it names holds all the bytes the index places in it.
func checkVariables(dir string) (errs []error, note string) {
	path := filepath.Join(dir, indexFile)
	idx, err := readBundleIndex(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []error{missing(path, "missing")}, ""
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return []error{err}, ""
		}
		return []error{&fileError{path: path, msg: err.Error(), err: err}}, ""
	}
	if idx.compressed {
		// TensorFlow writes bundles uncompressed. The table itself was
		// checked (footer, checksums); its entries cannot be read without
		// snappy, so the data shards are taken as complete.
		return nil, path + ": compressed blocks, the data shards' lengths were not checked"
	}
	shards := make([]int, 0, len(idx.need))
	for s := range idx.need {
		shards = append(shards, s)
	}
	sort.Ints(shards)
	for _, s := range shards {
		p := filepath.Join(dir, shardName(s, idx.numShards))
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, missing(p, "missing, the index names it (still being copied?)"))
		case err != nil:
			errs = append(errs, err)
		case st.IsDir():
			errs = append(errs, &fileError{path: p, msg: "is a folder"})
		case st.Size() < idx.need[s]:
			errs = append(errs, &fileError{path: p, msg: fmt.Sprintf("%d bytes, the index needs %d (still being copied?)", st.Size(), idx.need[s])})
		}
	}
	return errs, ""
}
