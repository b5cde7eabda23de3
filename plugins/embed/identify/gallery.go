package identify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // gallery and enrolment images may be JPEG
	_ "image/png"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Embedder turns an image into an embedding: the plugin's model, run on
// the whole image (a crop already). The package normalises what it returns
// and refuses NaN, infinite and zero vectors.
type Embedder interface {
	Embed(img image.Image) ([]float32, error)
}

// Problem is something wrong with one file or folder that did not stop the
// rest: an image skipped, an identity left out, an exemplar dropped.
type Problem struct {
	Path string // the file or folder
	Err  error
}

func (p Problem) Error() string { return p.Path + ": " + p.Err.Error() }
func (p Problem) Unwrap() error { return p.Err }

// ErrEmptyGallery is the Problem of a gallery folder with no identity.
var ErrEmptyGallery = errors.New("no identities: every probe will be unknown")

// GalleryConfig is the name of the optional configuration file at the top
// of a gallery folder.
const GalleryConfig = "gallery.toml"

// NegativesFolder is the name of the folder, inside an identity's folder,
// of the images that are not that identity.
const NegativesFolder = "not"

// Gallery is a gallery folder enrolled: the identities with their positive
// and negative vectors, and the thresholds of gallery.toml. It is not
// changed once loaded; a reload makes a new one.
type Gallery struct {
	dir        string
	identities map[string]*galleryIdentity
	thresholds map[string]float64
	dim        int
}

type galleryIdentity struct {
	positives [][]float64 // unit vectors
	negatives [][]float64
}

// Names lists the identities enrolled, sorted.
func (g *Gallery) Names() []string { return slices.Sorted(maps.Keys(g.identities)) }

// galleryFile is gallery.toml.
type galleryFile struct {
	// Thresholds: identity name -> the largest distance at which a probe
	// matches it, in (0, 2]; identities not named use Options.Threshold.
	Thresholds map[string]float64 `toml:"thresholds"`
}

// LoadGallery enrols the gallery folder dir:
//
//	<dir>/gallery.toml                 optional: [thresholds] alice = 0.8
//	<dir>/<identity>/*.{png,jpg,jpeg}  the identity's images
//	<dir>/<identity>/not/*.{png,jpg,jpeg}  images that are not the identity
//
// Hidden files and folders (a name starting with ".") are ignored. Every
// image is decoded and embedded with emb. A file that cannot be used (not
// an image, undecodable, refused by emb, an embedding with NaN or Inf, a
// zero vector) is skipped and listed in the Problems, as is an identity
// left with no usable image, a folder name that is not a valid identity
// name, and an empty gallery. The error is for what makes the whole
// gallery unusable: dir unreadable, gallery.toml malformed, ctx ended.
func LoadGallery(ctx context.Context, dir string, emb Embedder) (*Gallery, []Problem, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("gallery: %w", err)
	}
	g := &Gallery{dir: dir, identities: map[string]*galleryIdentity{}}
	l := &galleryLoader{g: g, emb: emb}
	hasConfig := false
	for _, ent := range entries {
		name, path := ent.Name(), filepath.Join(dir, ent.Name())
		switch {
		case strings.HasPrefix(name, "."):
		case name == GalleryConfig && !ent.IsDir():
			hasConfig = true
		case !ent.IsDir():
			l.problem(path, errors.New("not an identity folder (a file at the top of the gallery)"))
		default:
			if err := ctx.Err(); err != nil {
				return nil, nil, fmt.Errorf("gallery %s: %w", dir, err)
			}
			if err := ValidName(name); err != nil {
				l.problem(path, err)
				continue
			}
			l.identity(ctx, name, path)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("gallery %s: %w", dir, err)
	}
	if hasConfig {
		if err := l.config(filepath.Join(dir, GalleryConfig)); err != nil {
			return nil, nil, err
		}
	}
	if len(g.identities) == 0 {
		l.problem(dir, ErrEmptyGallery)
	}
	return g, l.problems, nil
}

// galleryLoader is the state of one LoadGallery.
type galleryLoader struct {
	g        *Gallery
	emb      Embedder
	problems []Problem
}

func (l *galleryLoader) problem(path string, err error) {
	l.problems = append(l.problems, Problem{Path: path, Err: err})
}

// identity enrols one identity folder.
func (l *galleryLoader) identity(ctx context.Context, name, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		l.problem(dir, err)
		return
	}
	id := &galleryIdentity{}
	for _, ent := range entries {
		fn, path := ent.Name(), filepath.Join(dir, ent.Name())
		switch {
		case strings.HasPrefix(fn, "."):
		case ent.IsDir() && fn == NegativesFolder:
			id.negatives = l.images(ctx, path, id.negatives)
		case ent.IsDir():
			l.problem(path, fmt.Errorf("unexpected folder (only %q, for negative examples, is read)", NegativesFolder))
		default:
			if v, ok := l.image(ctx, path); ok {
				id.positives = append(id.positives, v)
			}
		}
	}
	if len(id.positives) == 0 {
		l.problem(dir, fmt.Errorf("identity %q has no usable image: not enrolled", name))
		return
	}
	l.g.identities[name] = id
}

// images embeds every image of a negatives folder.
func (l *galleryLoader) images(ctx context.Context, dir string, vs [][]float64) [][]float64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		l.problem(dir, err)
		return vs
	}
	for _, ent := range entries {
		fn, path := ent.Name(), filepath.Join(dir, ent.Name())
		switch {
		case strings.HasPrefix(fn, "."):
		case ent.IsDir():
			l.problem(path, errors.New("unexpected folder in a negatives folder"))
		default:
			if v, ok := l.image(ctx, path); ok {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

// image embeds one image file; a problem is recorded when it cannot.
func (l *galleryLoader) image(ctx context.Context, path string) ([]float64, bool) {
	if ctx.Err() != nil {
		return nil, false // LoadGallery reports it
	}
	if !isImageName(path) {
		l.problem(path, errors.New("not an image (.png, .jpg, .jpeg): skipped"))
		return nil, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		l.problem(path, err)
		return nil, false
	}
	v, err := embedBytes(l.emb, data)
	if err != nil {
		l.problem(path, err)
		return nil, false
	}
	if l.g.dim == 0 {
		l.g.dim = len(v)
	} else if len(v) != l.g.dim {
		l.problem(path, fmt.Errorf("embedding has %d dimensions, the gallery's first %d", len(v), l.g.dim))
		return nil, false
	}
	return v, true
}

// config reads gallery.toml strictly.
func (l *galleryLoader) config(path string) error {
	var f galleryFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return fmt.Errorf("gallery %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("gallery %s: unknown key %s", path, und[0])
	}
	for _, name := range slices.Sorted(maps.Keys(f.Thresholds)) {
		t := f.Thresholds[name]
		if err := checkThreshold(t); err != nil {
			return fmt.Errorf("gallery %s: thresholds.%s: %w", path, name, err)
		}
		if err := ValidName(name); err != nil {
			return fmt.Errorf("gallery %s: thresholds.%s: %w", path, name, err)
		}
		if _, ok := l.g.identities[name]; !ok {
			l.problem(path, fmt.Errorf("thresholds.%s: no identity %q enrolled from the gallery (it applies to a runtime identity of that name only)", name, name))
		}
	}
	l.g.thresholds = f.Thresholds
	return nil
}

// checkThreshold accepts a distance threshold in (0, 2].
func checkThreshold(t float64) error {
	if !(t > 0 && t <= 2) || math.IsNaN(t) {
		return fmt.Errorf("threshold %g must be in (0, 2] (distance between unit vectors)", t)
	}
	return nil
}

// isImageName reports whether path has an image extension.
func isImageName(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// decodeImage decodes PNG or JPEG bytes.
func decodeImage(data []byte) (image.Image, error) {
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("cannot decode image: %w", err)
	}
	if b := img.Bounds(); b.Empty() {
		return nil, fmt.Errorf("empty %s image", format)
	}
	return img, nil
}

// embedBytes decodes data and embeds it into a unit vector.
func embedBytes(emb Embedder, data []byte) ([]float64, error) {
	img, err := decodeImage(data)
	if err != nil {
		return nil, err
	}
	return embedImage(emb, img)
}

// embedImage embeds img into a unit vector.
func embedImage(emb Embedder, img image.Image) ([]float64, error) {
	e, err := emb.Embed(img)
	if err != nil {
		return nil, fmt.Errorf("embedder: %w", err)
	}
	v, err := Unit(e)
	if err != nil {
		return nil, fmt.Errorf("embedding: %w", err)
	}
	return v, nil
}

// ValidName checks an identity name: a folder name of the gallery or the
// name in a command. It must be 1..128 bytes of UTF-8 with no path
// separator, no control character, no leading or trailing space, and must
// not start with "." (hidden folders are ignored).
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("identity name is empty")
	case len(name) > 128:
		return fmt.Errorf("identity name %.20q... is %d bytes, at most 128", name, len(name))
	case !utf8.ValidString(name):
		return fmt.Errorf("identity name %q is not UTF-8", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("identity name %q starts with \".\"", name)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("identity name %q has leading or trailing space", name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("identity name %q contains a path separator", name)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("identity name %q contains a control character", name)
	}
	return nil
}
