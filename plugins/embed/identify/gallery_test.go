package identify

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadGalleryEnrolsGoodImagesAndReportsTheRest(t *testing.T) {
	dir := t.TempDir()
	red, green, blue := colorRGBA(255, 0, 0), colorRGBA(0, 255, 0), colorRGBA(0, 0, 255)
	writeFile(t, filepath.Join(dir, "alice", "a.png"), pngBytes(t, uniform(4, red)))
	writeFile(t, filepath.Join(dir, "alice", "b.JPG"), jpegBytes(t, uniform(8, colorRGBA(250, 10, 0))))
	writeFile(t, filepath.Join(dir, "alice", NegativesFolder, "sister.png"), pngBytes(t, uniform(4, colorRGBA(200, 0, 150))))
	writeFile(t, filepath.Join(dir, "alice", ".DS_Store"), []byte("hidden"))
	writeFile(t, filepath.Join(dir, "alice", "notes.txt"), []byte("not an image"))
	writeFile(t, filepath.Join(dir, "bob", "b.png"), pngBytes(t, uniform(4, green)))
	writeFile(t, filepath.Join(dir, "bob", "extra", "x.png"), pngBytes(t, uniform(4, green)))
	writeFile(t, filepath.Join(dir, "carol", "black.png"), pngBytes(t, uniform(4, colorRGBA(0, 0, 0))))
	writeFile(t, filepath.Join(dir, "carol", "broken.png"), pngBytes(t, uniform(4, blue))[:40])
	writeFile(t, filepath.Join(dir, "dave", "tiny.png"), pngBytes(t, uniform(1, blue)))
	writeFile(t, filepath.Join(dir, "erin", "nan.jpeg"), jpegBytes(t, uniform(2, blue)))
	writeFile(t, filepath.Join(dir, ".trash", "old", "x.png"), pngBytes(t, uniform(4, blue)))
	writeFile(t, filepath.Join(dir, " frank", "f.png"), pngBytes(t, uniform(4, blue)))
	writeFile(t, filepath.Join(dir, "README"), []byte("gallery"))
	writeFile(t, filepath.Join(dir, GalleryConfig), []byte("[thresholds]\nalice = 0.8\nzed = 0.5\n"))

	emb := &meanColour{}
	g, problems, err := LoadGallery(context.Background(), dir, emb)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Names(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("identities %v, want alice and bob", got)
	}
	if a := g.identities["alice"]; len(a.positives) != 2 || len(a.negatives) != 1 {
		t.Errorf("alice has %d positives and %d negatives, want 2 and 1", len(a.positives), len(a.negatives))
	}
	if g.thresholds["alice"] != 0.8 {
		t.Errorf("alice's threshold %g, want 0.8", g.thresholds["alice"])
	}
	want := map[string]string{
		"alice/notes.txt":  "not an image",
		"bob/extra":        "unexpected folder",
		"carol/black.png":  "no usable content",
		"carol/broken.png": "cannot decode image",
		"carol":            `identity "carol" has no usable image`,
		"dave/tiny.png":    "embedder: image too small",
		"dave":             `identity "dave" has no usable image`,
		"erin/nan.jpeg":    "component 0 is NaN",
		"erin":             `identity "erin" has no usable image`,
		" frank":           "leading or trailing space",
		"README":           "not an identity folder",
		GalleryConfig:      `thresholds.zed: no identity "zed" enrolled from the gallery`,
	}
	got := map[string]string{}
	for _, p := range problems {
		rel, _ := filepath.Rel(dir, p.Path)
		got[filepath.ToSlash(rel)] = p.Error()
		if !strings.HasPrefix(p.Error(), p.Path+": ") {
			t.Errorf("problem %q does not start with its path", p.Error())
		}
	}
	for path, sub := range want {
		if !strings.Contains(got[path], sub) {
			t.Errorf("problem for %s: %q, want %q", path, got[path], sub)
		}
	}
	for path, msg := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected problem %s", msg)
		}
	}
	if !errors.Is(problemFor(problems, filepath.Join(dir, "carol", "black.png")), ErrZeroVector) {
		t.Error("black.png's problem does not wrap ErrZeroVector")
	}
	if !errors.Is(problemFor(problems, filepath.Join(dir, "erin", "nan.jpeg")), ErrNotFinite) {
		t.Error("nan.jpeg's problem does not wrap ErrNotFinite")
	}
	if n := emb.calls.Load(); n != 7 {
		t.Errorf("%d images embedded, want 7 (hidden, misnamed, misplaced and undecodable ones are not)", n)
	}

	// Matched against: a red probe is alice (at 0: a.png), a magenta one
	// is vetoed by alice's negative.
	id := newTestIdentifier(t, Options{Threshold: 0.5})
	if err := id.SetGallery(g); err != nil {
		t.Fatal(err)
	}
	if m, _ := id.Match(embedOf(t, uniform(4, red)), 1); m.Name != "alice" || m.Distance > 1e-6 {
		t.Errorf("red probe: %+v, want alice at 0", m)
	}
	if m, _ := id.Match(embedOf(t, uniform(4, colorRGBA(200, 0, 150))), 2); m.Name != "" || !m.Top[0].Vetoed {
		t.Errorf("alice's sister: %+v, want unknown, alice vetoed", m)
	}
}

func problemFor(problems []Problem, path string) error {
	for _, p := range problems {
		if p.Path == path {
			return p
		}
	}
	return nil
}

func TestLoadGalleryOfAnEmptyFolderIsValidButReported(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, ".hidden", "a.png"), pngBytes(t, uniform(4, colorRGBA(255, 0, 0))))
	g, problems, err := LoadGallery(context.Background(), dir, &meanColour{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Names()) != 0 || len(problems) != 1 || !errors.Is(problems[0], ErrEmptyGallery) || problems[0].Path != dir {
		t.Errorf("names %v, problems %v; want none and one ErrEmptyGallery for %s", g.Names(), problems, dir)
	}
}

func TestLoadGalleryFailsOnWhatMakesItUnusable(t *testing.T) {
	good := pngBytes(t, uniform(4, colorRGBA(255, 0, 0)))
	for _, tc := range []struct {
		name   string
		config string // gallery.toml; "" none
		ctx    func() context.Context
		dir    string // relative to the temp dir; "" the gallery
		want   string
	}{
		{name: "a missing folder", dir: "missing", want: "no such file"},
		{name: "malformed gallery.toml names the file", config: "[thresholds\nalice = 1", want: GalleryConfig},
		{name: "an unknown key in gallery.toml", config: "[thresholds]\nalice = 0.8\n[other]\nx = 1\n", want: "unknown key other"},
		{name: "a threshold out of range names the key", config: "[thresholds]\nalice = 2.5\n", want: "thresholds.alice: threshold 2.5 must be in (0, 2]"},
		{name: "a zero threshold", config: "[thresholds]\nalice = 0\n", want: "thresholds.alice: threshold 0"},
		{name: "a threshold of the wrong type", config: "[thresholds]\nalice = \"close\"\n", want: GalleryConfig},
		{name: "an invalid name in gallery.toml", config: "[thresholds]\n\".x\" = 0.5\n", want: `starts with "."`},
		{name: "a context ended", ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, want: "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "alice", "a.png"), good)
			if tc.config != "" {
				writeFile(t, filepath.Join(root, GalleryConfig), []byte(tc.config))
			}
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			_, _, err := LoadGallery(ctx, filepath.Join(root, tc.dir), &meanColour{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if tc.dir == "missing" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("err = %v, want fs.ErrNotExist", err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"Zoë Ångström", true},
		{"not", true},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"a/b", false},
		{`a\b`, false},
		{" alice", false},
		{"alice\n", false},
		{"a\x00b", false},
		{"\xff", false},
		{strings.Repeat("x", 129), false},
	} {
		if err := ValidName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestSetGalleryRefusesAnotherLength(t *testing.T) {
	id := newTestIdentifier(t, Options{})
	if _, err := id.Identify([]float32{1, 0}, nil, 0); err != nil {
		t.Fatal(err)
	}
	err := id.SetGallery(testGallery(t, map[string][][]float64{"alice": {{1, 0, 0}}}, nil, nil))
	if err == nil || !strings.Contains(err.Error(), "the clusters 2") {
		t.Errorf("err = %v, want the clusters' length named", err)
	}
	if err := id.SetGallery(nil); err != nil {
		t.Errorf("no gallery: %v", err)
	}
}
