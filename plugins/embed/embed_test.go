package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/embed/identify"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/golden"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

const testPipeline = "p"

// load loads the version in dir as model name, version 1, into a new
// embedder closed at the end of the test, and configures testPipeline
// with options.
func load(t *testing.T, dir, options string) *embedder {
	t.Helper()
	e := newEmbedder()
	t.Cleanup(func() { e.Close() })
	if _, err := e.Load(context.Background(), sdk.LoadRequest{Model: filepath.Base(filepath.Dir(dir)), Version: "1", ModelDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	configure(t, e, map[string]string{testPipeline: options})
	return e
}

// configure sets the embedder's pipelines (name -> options JSON).
func configure(t *testing.T, e *embedder, pipelines map[string]string) {
	t.Helper()
	if err := configureErr(e, pipelines); err != nil {
		t.Fatal(err)
	}
}

func configureErr(e *embedder, pipelines map[string]string) error {
	raw := map[string]json.RawMessage{}
	for name, o := range pipelines {
		raw[name] = json.RawMessage(o)
	}
	return e.Configure(context.Background(), raw)
}

// infer runs one frame and decodes the output.
func infer(t *testing.T, e *embedder, f sdk.Frame) output {
	t.Helper()
	return tfplugintest.Infer[output](t, e, f)
}

// frames are test images far apart in the tiny facenet's (random) space
// (none of one colour: those are refused for enrolment).
var frames = map[string]func(i int) byte{
	"ramp":     func(i int) byte { return byte(i % 256) },
	"checker":  func(i int) byte { return byte((i/3%64/8+i/3/64/8)%2*200 + 40) },
	"gradient": func(i int) byte { return byte(i / 192 * 4) },
}

// testFrame is frames[name] at 64x64 for testPipeline.
func testFrame(name string) sdk.Frame {
	rgb := make([]byte, 64*64*3)
	for i := range rgb {
		rgb[i] = frames[name](i)
	}
	return sdk.Frame{Pipeline: testPipeline, Width: 64, Height: 64, RGB: rgb}
}

// writePNG writes f's pixels as a PNG file (folders made).
func writePNG(t *testing.T, path string, f sdk.Frame) {
	t.Helper()
	b, err := pngOf(f.RGB, f.Width, f.Height)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// python runs the project's Python (EDGEINFER_PYTHON overrides it) in the
// repository's root with args, e.g. a module or a script.
func python(t *testing.T, args ...string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = filepath.Join(root, ".venv", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("python with TensorFlow not found (run `make deps` or set EDGEINFER_PYTHON): %v", err)
	}
	cmd := exec.Command(py, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// reference runs testdata/reference.py.
func reference(t *testing.T, args ...string) {
	t.Helper()
	python(t, append([]string{"plugins/embed/testdata/reference.py"}, args...)...)
}

// The plugin's embedding of a frame is Python TensorFlow's for the same
// frame (tf.image.resize, the manifest's normalisation, the SavedModel),
// L2-normalised, within 1e-5, at the model's size and resized to it: for a
// FaceNet and for Siamese towers (task siamese: the first tower, the pair
// input a zero image; gray, so luma), the zoo's and the trained one.
func TestEmbeddingEqualsPythonTensorFlow(t *testing.T) {
	for _, name := range []string{"facenet", "siamese", "ident_siamese"} {
		t.Run(name, func(t *testing.T) {
			dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", name)
			e := load(t, dir, `{"embedding": true}`)
			tmp := t.TempDir()
			frames := []sdk.Frame{tfplugintest.NoiseFrame(testPipeline, 64, 64, 1), tfplugintest.NoiseFrame(testPipeline, 100, 80, 2), testFrame("ramp")}
			args := []string{"embed", dir}
			for i, f := range frames {
				path := filepath.Join(tmp, strconv.Itoa(i))
				if err := os.WriteFile(path+".rgb", f.RGB, 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, path+".rgb", strconv.Itoa(f.Width), strconv.Itoa(f.Height), path+".npy")
			}
			reference(t, args...)
			for i, f := range frames {
				py, _ := tfplugintest.ReadFloats(t, filepath.Join(tmp, strconv.Itoa(i)+".npy"))
				out := infer(t, e, f)
				if out.Dim != len(py) || len(out.Embedding) != len(py) {
					t.Fatalf("%dx%d: dim %d, %d values, Python %d", f.Width, f.Height, out.Dim, len(out.Embedding), len(py))
				}
				length, pyLength := 0.0, 0.0
				for i := range py {
					length += out.Embedding[i] * out.Embedding[i]
					pyLength += float64(py[i]) * float64(py[i])
				}
				worst := 0.0
				for i := range py {
					worst = math.Max(worst, math.Abs(out.Embedding[i]-float64(py[i])/math.Sqrt(pyLength)))
				}
				t.Logf("%dx%d: max |Go - Python| = %.3g, |e| = %.9f", f.Width, f.Height, worst, math.Sqrt(length))
				if worst > 1e-5 {
					t.Errorf("%dx%d: the embedding differs from Python's by %g > 1e-5", f.Width, f.Height, worst)
				}
				if math.Abs(math.Sqrt(length)-1) > 1e-9 {
					t.Errorf("%dx%d: |e| = %v, want 1", f.Width, f.Height, math.Sqrt(length))
				}
				// No gallery: unknown, and clustered (on by default).
				if out.Identity != nil || out.Distance != nil || len(out.Top) != 0 || out.Cluster == nil || out.Gallery != nil {
					t.Errorf("%dx%d: %+v", f.Width, f.Height, out)
				}
			}
		})
	}
}

// Validate reruns the golden samples through the loaded model.
func TestValidatePassesOnTheZooModel(t *testing.T) {
	for _, name := range []string{"facenet", "siamese"} { // siamese: both inputs of its golden pairs
		e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", name), "")
		v, err := e.Validate(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if v.Samples < 1 || v.Tolerance != golden.Tolerance || v.MaxAbsDiff > v.Tolerance {
			t.Errorf("%s: validation %+v", name, v)
		}
	}
}

// Models the plugin cannot serve are refused at Load, naming why.
func TestLoadRefusesOtherModels(t *testing.T) {
	facenet := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet")
	for _, tc := range []struct{ name, dir, want string }{
		{"a classifier", tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), `task is "classify", this plugin serves embed`},
		{"another dim", tfplugintest.EditedCopy(t, facenet, "s/dim = 128/dim = 64/"), "edgeinfer.toml says float32 [batch, 64] (output.dim"},
		{"another output", tfplugintest.EditedCopy(t, facenet, `s/embedding = "embedding"/embedding = "logits"/`), `"logits"`},
		{"a batch of 2", tfplugintest.EditedCopy(t, facenet, `s/^channels.*/channels = 3\nbatch = 2/`), "input.batch is 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEmbedder()
			defer e.Close()
			if _, err := e.Load(context.Background(), sdk.LoadRequest{ModelDir: tc.dir}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Each pipeline's options are checked at Configure; a bad one names the
// pipeline and the option, and the set in force stays as it was.
func TestOptionsAreCheckedAndNamed(t *testing.T) {
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"top_k": 2}`)
	for _, tc := range []struct{ options, want string }{
		{`{"threshold": 0}`, "pipeline bad: threshold is 0, must be in (0, 2]"},
		{`{"threshold": 2.5}`, "pipeline bad: threshold is 2.5"},
		{`{"cluster_threshold": -0.1}`, "pipeline bad: cluster_threshold is -0.1, must be 0 (clustering off) or in (0, 1.4142]"},
		{`{"cluster_threshold": 1.5}`, "cluster_threshold is 1.5"},
		{`{"top_k": -1}`, "pipeline bad: top_k is -1, must be 0..100"},
		{`{"exemplars": 0}`, "pipeline bad: exemplars is 0, must be 1..1000"},
		{`{"galery": "/x"}`, `pipeline bad: options: json: unknown field "galery"`},
		{`{"embedding": "yes"}`, "embedding"},
		{`{"gallery": "/nonexistent/gallery"}`, "pipeline bad: gallery: open /nonexistent/gallery"},
		{`{"verify": "/nonexistent/me.png"}`, "pipeline bad: verify: open /nonexistent/me.png"},
		{`{"state_dir": "/proc/nope"}`, "pipeline bad: state_dir: state directory: mkdir /proc/nope"},
	} {
		err := configureErr(e, map[string]string{"good": `{}`, "bad": tc.options})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options %s: got %v, want an error containing %q", tc.options, err, tc.want)
		}
		if len(e.Pipelines()) != 1 || e.Pipelines()[testPipeline].TopK != 2 || len(e.pipes) != 1 || e.pipes[testPipeline] == nil {
			t.Errorf("options %s: the set changed to %+v", tc.options, e.Pipelines())
		}
	}
	defaults := options{Threshold: 0.7, ClusterThreshold: 0.75, TopK: 3, Exemplars: 8}
	for _, tc := range []struct {
		options string
		want    options
	}{
		{``, defaults},
		{`null`, defaults},
		{`{"cluster_threshold": 0, "top_k": 0, "embedding": true}`, options{Threshold: 0.7, Exemplars: 8, Embedding: true}},
		{`{"threshold": 2, "cluster_threshold": 1.4142, "exemplars": 1000, "top_k": 100}`, options{Threshold: 2, ClusterThreshold: 1.4142, TopK: 100, Exemplars: 1000}},
	} {
		configure(t, e, map[string]string{testPipeline: tc.options})
		if got := e.Pipelines()[testPipeline]; got != tc.want {
			t.Errorf("options %q: got %+v, want %+v", tc.options, got, tc.want)
		}
	}
}

// Two pipelines cannot share a state directory: each has its identifier.
func TestPipelinesMayNotShareAStateDir(t *testing.T) {
	dir := t.TempDir()
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), "")
	err := configureErr(e, map[string]string{
		"a": `{"state_dir": "` + dir + `"}`,
		"b": `{"state_dir": "` + dir + `/"}`,
	})
	if err == nil || !strings.Contains(err.Error(), "pipeline b: state_dir "+dir+"/ is also pipeline a's") {
		t.Errorf("got %v", err)
	}
}

func TestBadFramesAreErrBadFrame(t *testing.T) {
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), "")
	tfplugintest.CheckBadFrames(t, e, testPipeline)
	if out := infer(t, e, testFrame("ramp")); out.Dim != 128 {
		t.Errorf("after bad frames: %+v", out)
	}
}

// sample.conf's options are valid for the models it names.
func TestSampleConfOptionsAreValid(t *testing.T) {
	tfplugintest.CheckSampleConf(t, map[string]string{"facenet": tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet")}, func(raw json.RawMessage, _ manifest.Manifest) error {
		_, err := parseOptions(raw)
		return err
	})
}

// A gallery is enrolled at Configure: a gallery image is its own identity
// at distance ~0, another image is unknown and clustered; files that
// cannot be used are counted in the output (and logged).
func TestGalleryImagesAreTheirOwnIdentity(t *testing.T) {
	gallery := t.TempDir()
	writePNG(t, filepath.Join(gallery, "alice", "01.png"), testFrame("ramp"))
	writePNG(t, filepath.Join(gallery, "bob", "01.png"), testFrame("checker"))
	os.WriteFile(filepath.Join(gallery, "bob", "notes.txt"), []byte("not an image"), 0o644)
	os.WriteFile(filepath.Join(gallery, "bob", "02.png"), []byte("not a PNG"), 0o644)
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"gallery": "`+gallery+`", "threshold": 0.05, "cluster_threshold": 0.05}`)

	for _, tc := range []struct{ frame, identity string }{{"ramp", "alice"}, {"checker", "bob"}} {
		out := infer(t, e, testFrame(tc.frame))
		if out.Identity == nil || *out.Identity != tc.identity || out.Distance == nil || *out.Distance > 1e-6 {
			t.Errorf("%s: %+v, want %s at distance ~0", tc.frame, out, tc.identity)
		}
		if len(out.Top) != 2 || out.Top[0].Name != tc.identity || out.Top[0].Threshold != 0.05 || out.Top[1].Distance < 0.1 {
			t.Errorf("%s: top %+v", tc.frame, out.Top)
		}
		if out.Cluster != nil {
			t.Errorf("%s: a known face clustered: %+v", tc.frame, out.Cluster)
		}
		if out.Gallery == nil || *out.Gallery != (galleryStatus{Identities: 2, Problems: 2}) {
			t.Errorf("gallery status %+v, want 2 identities and 2 problems (notes.txt, 02.png)", out.Gallery)
		}
	}
	out := infer(t, e, testFrame("gradient"))
	if out.Identity != nil || out.Distance != nil || out.Cluster == nil || *out.Cluster != (clusterRef{ID: 1, New: true}) {
		t.Errorf("a stranger: %+v, want unknown in new cluster 1", out)
	}
}

// An empty gallery folder is not an error: every face is unknown, and the
// output says the gallery holds no identity.
// An image of one colour is no one to enrol: in the gallery folder it is a
// problem named and skipped, by command and as verify's reference it is
// refused.
func TestImagesOfOneColourAreNotEnrolled(t *testing.T) {
	gallery := t.TempDir()
	writePNG(t, filepath.Join(gallery, "alice", "01.png"), testFrame("ramp"))
	writePNG(t, filepath.Join(gallery, "alice", "02.png"), solidFrame(128, 128, 128))
	writePNG(t, filepath.Join(gallery, "blank", "01.png"), solidFrame(0, 0, 0))
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"gallery": "`+gallery+`", "state_dir": "`+t.TempDir()+`", "cluster_threshold": 0}`)
	out := infer(t, e, testFrame("ramp"))
	// alice/02.png, blank/01.png, and blank with no usable image
	if out.Gallery == nil || *out.Gallery != (galleryStatus{Identities: 1, Problems: 3}) {
		t.Errorf("gallery %+v, want alice alone and 3 problems", out.Gallery)
	}
	white := solidFrame(255, 255, 255)
	blank, err := pngOf(white.RGB, white.Width, white.Height)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Command(context.Background(), testPipeline, json.RawMessage(`{"command":"enrol","name":"bob","image":"`+base64.StdEncoding.EncodeToString(blank)+`"}`))
	if err == nil || !strings.Contains(err.Error(), "one colour") {
		t.Errorf("enrolling a blank image: %v", err)
	}
	ref := filepath.Join(t.TempDir(), "ref.png")
	writePNG(t, ref, solidFrame(10, 20, 30))
	if err := configureErr(e, map[string]string{testPipeline: `{"verify": "` + ref + `"}`}); err == nil || !strings.Contains(err.Error(), "one colour") {
		t.Errorf("a blank verify reference: %v", err)
	}
}

func TestAnEmptyGalleryIsReported(t *testing.T) {
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"gallery": "`+t.TempDir()+`", "cluster_threshold": 0}`)
	out := infer(t, e, testFrame("ramp"))
	if out.Identity != nil || out.Cluster != nil || out.Gallery == nil || *out.Gallery != (galleryStatus{Identities: 0, Problems: 1}) {
		t.Errorf("%+v, gallery %+v", out, out.Gallery)
	}
}

// A change in the gallery folder is enrolled and swapped in without a new
// Configure; a gallery.toml that breaks it keeps the gallery in use and
// says so.
func TestGalleryChangesAreSwappedIn(t *testing.T) {
	gallery := t.TempDir()
	writePNG(t, filepath.Join(gallery, "alice", "01.png"), testFrame("ramp"))
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"gallery": "`+gallery+`", "threshold": 0.05}`)
	if out := infer(t, e, testFrame("checker")); out.Identity != nil {
		t.Fatalf("checker before bob is enrolled: %+v", out)
	}
	writePNG(t, filepath.Join(gallery, "bob", "01.png"), testFrame("checker"))
	waitFor(t, e, "bob enrolled", func(out output) bool { return out.Identity != nil && *out.Identity == "bob" })

	os.WriteFile(filepath.Join(gallery, identify.GalleryConfig), []byte("[thresholds]\nbob = 3\n"), 0o644)
	out := waitFor(t, e, "the reload's error reported", func(out output) bool { return out.Gallery.Error != "" })
	if !strings.Contains(out.Gallery.Error, "thresholds.bob") || out.Gallery.Identities != 2 || out.Identity == nil || *out.Identity != "bob" {
		t.Errorf("after a bad gallery.toml: %+v, gallery %+v; want bob still known", out, out.Gallery)
	}
}

// waitFor infers the checker frame until ok says yes (the watcher settles
// 500 ms after the last change), at most 10 s.
func waitFor(t *testing.T, e *embedder, what string, ok func(output) bool) output {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := infer(t, e, testFrame("checker"))
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s: %+v, gallery %+v", what, out, out.Gallery)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The clusters and their ids survive a restart of the plugin through the
// state directory (saved at Close); the same faces then join the clusters
// they made before.
func TestClusterIdsSurviveARestart(t *testing.T) {
	state := t.TempDir()
	opts := `{"state_dir": "` + state + `", "cluster_threshold": 0.05}`
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), opts)
	for _, step := range []struct {
		frame string
		want  clusterRef
	}{{"ramp", clusterRef{1, true}}, {"checker", clusterRef{2, true}}, {"ramp", clusterRef{1, false}}, {"gradient", clusterRef{3, true}}} {
		if out := infer(t, e, testFrame(step.frame)); out.Cluster == nil || *out.Cluster != step.want {
			t.Fatalf("%s: %+v, want cluster %+v", step.frame, out.Cluster, step.want)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	again := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), opts)
	for _, step := range []struct {
		frame string
		id    int
	}{{"gradient", 3}, {"checker", 2}, {"ramp", 1}} {
		if out := infer(t, again, testFrame(step.frame)); out.Cluster == nil || *out.Cluster != (clusterRef{step.id, false}) {
			t.Errorf("after the restart, %s: %+v, want cluster %d", step.frame, out.Cluster, step.id)
		}
	}
	if n := len(again.pipes[testPipeline].id.Clusters()); n != 3 {
		t.Errorf("%d clusters after the restart, want 3", n)
	}
}

// The clusters are saved every saveEvery while frames come, not only at
// Close.
func TestStateIsSavedWhileServing(t *testing.T) {
	state := t.TempDir()
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"state_dir": "`+state+`", "cluster_threshold": 0.05}`)
	infer(t, e, testFrame("ramp"))
	deadline := time.Now().Add(saveEvery + 3*time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(state, identify.StateFile))
		if strings.Contains(string(b), `"next_cluster":2`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster 1 not saved within %v: %s", saveEvery+3*time.Second, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// During a model version swap the old version's process and the new one's
// share a state directory: the new one re-embeds the state into its space
// and owns it; the old one's saves (periodic and at Close) leave it alone.
func TestANewerVersionOwnsTheSharedState(t *testing.T) {
	state, dir := t.TempDir(), tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet")
	opts := `{"state_dir": "` + state + `", "cluster_threshold": 0.05}`
	start := func(version string) *embedder {
		e := newEmbedder()
		t.Cleanup(func() { e.Close() })
		if _, err := e.Load(context.Background(), sdk.LoadRequest{Model: "facenet", Version: version, ModelDir: dir}); err != nil {
			t.Fatal(err)
		}
		configure(t, e, map[string]string{testPipeline: opts})
		return e
	}
	old := start("1")
	infer(t, old, testFrame("ramp"))
	if err := configureErr(old, map[string]string{testPipeline: opts, "other": ""}); err != nil {
		t.Fatal(err) // a Configure flushes the state: version 2 finds cluster 1
	}
	newer := start("2")
	if out := infer(t, newer, testFrame("ramp")); out.Cluster == nil || *out.Cluster != (clusterRef{1, false}) {
		t.Errorf("version 2, ramp: %+v, want version 1's cluster 1 re-embedded", out.Cluster)
	}
	infer(t, old, testFrame("checker")) // cluster 2 in version 1 only
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(state, identify.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"space":"facenet/2"`) || !strings.Contains(string(b), `"next_cluster":2`) {
		t.Errorf("state after the old version's Close: %.200s; want version 2's, with one cluster", b)
	}
}

// verify compares every frame with a reference image: the same image is
// the same face at distance ~0, another one is different.
func TestVerifySaysSameOrDifferent(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "me.png")
	writePNG(t, ref, testFrame("ramp"))
	for _, name := range []string{"facenet", "siamese"} { // a Siamese model verifies with its tower, as the "verify" asks
		e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", name), `{"verify": "`+ref+`", "threshold": 0.05, "cluster_threshold": 0}`)
		for _, tc := range []struct {
			frame string
			same  bool
		}{{"ramp", true}, {"checker", false}} {
			out := infer(t, e, testFrame(tc.frame))
			if out.Verify == nil || out.Verify.Same != tc.same || out.Verify.Threshold != 0.05 || tc.same != (out.Verify.Distance < 1e-6) {
				t.Errorf("%s, %s: verify %+v, want same %v", name, tc.frame, out.Verify, tc.same)
			}
			if out.Gallery != nil || out.Cluster != nil || out.Embedding != nil {
				t.Errorf("%s, %s: %+v: only verify asked for", name, tc.frame, out)
			}
		}
	}
}

// solidFrame is an 8x8 frame of one colour.
func solidFrame(r, g, b byte) sdk.Frame {
	rgb := make([]byte, 0, 8*8*3)
	for range 8 * 8 {
		rgb = append(rgb, r, g, b)
	}
	return sdk.Frame{Pipeline: testPipeline, Seq: 7, Width: 8, Height: 8, RGB: rgb}
}

// texturedFrame is solidFrame with every other pixel 20 levels darker in
// the channels that are not 0: not of one colour, so it can be enrolled,
// and its channels stay in the same proportions.
func texturedFrame(r, g, b byte) sdk.Frame {
	f := solidFrame(r, g, b)
	for i := 0; i < len(f.RGB); i += 6 {
		for c := range 3 {
			if v := f.RGB[i+c]; v > 0 {
				f.RGB[i+c] = v - min(v, 20)
			}
		}
	}
	return f
}

// A model's embedding that is not usable: a zero vector says the frame has
// nothing to describe (sdk.ErrBadFrame: bad_input); NaN is a failure of
// the model, whose input is always finite (not ErrBadFrame:
// inference_failed). Both name the frame. In a gallery they are problems
// that skip the image, and an identity left with none. A finite embedding
// the model did not normalise is normalised.
func TestUnusableEmbeddingsAreClearErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bad", "1")
	reference(t, "badmodel", dir)
	gallery := t.TempDir()
	writePNG(t, filepath.Join(gallery, "alice", "white.png"), texturedFrame(255, 255, 255))
	writePNG(t, filepath.Join(gallery, "alice", "dark.png"), texturedFrame(10, 50, 10))
	writePNG(t, filepath.Join(gallery, "bob", "magenta.png"), texturedFrame(255, 0, 255))
	e := load(t, dir, `{"gallery": "`+gallery+`", "embedding": true}`)

	_, err := e.Infer(context.Background(), solidFrame(10, 50, 10))
	if !errors.Is(err, sdk.ErrBadFrame) || !strings.Contains(err.Error(), "pipeline p, frame 7 (8x8)") || !strings.Contains(err.Error(), "zero vector: no usable content") {
		t.Errorf("a dark frame: %v, want ErrBadFrame naming the frame and the zero vector", err)
	}
	_, err = e.Infer(context.Background(), solidFrame(255, 0, 255))
	if err == nil || errors.Is(err, sdk.ErrBadFrame) || !strings.Contains(err.Error(), "pipeline p, frame 7 (8x8)") ||
		!strings.Contains(err.Error(), `output "embedding": component 0 is NaN: not finite`) {
		t.Errorf("a frame without green: %v, want a model failure naming the frame and the NaN", err)
	}
	out := infer(t, e, solidFrame(255, 255, 255))
	s := 1 / math.Sqrt(3)
	if out.Identity == nil || *out.Identity != "alice" || len(out.Embedding) != 3 || math.Abs(out.Embedding[0]-s) > 1e-7 || math.Abs(out.Embedding[2]-s) > 1e-7 {
		t.Errorf("a white frame: %+v, want alice and the unit vector (1, 1, 1)/sqrt(3)", out)
	}
	if *out.Gallery != (galleryStatus{Identities: 1, Problems: 3}) {
		t.Errorf("gallery %+v, want alice, and 3 problems: dark.png, magenta.png, bob with no usable image", *out.Gallery)
	}
}

// pngFrame reads a PNG file as a frame of testPipeline.
func pngFrame(t *testing.T, path string) sdk.Frame {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	rgb, w, h := rgbOf(img)
	return sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb}
}

// The trained ident_facenet (tfmodels/zoo/train_embed.py) identifies the
// probes of tfmodels/zoo/identities.py's open-set protocol through the
// plugin: 20 held-out identities enrolled from a gallery folder (5 images
// each), 600 probes of those and of 10 identities never enrolled, in the
// protocol's order, at the thresholds train_embed chose on training
// identities. The nearest identity is right for >= 90% of the enrolled
// probes, and every decision (identity, distance, and the cluster ids of
// the unknowns, exactly) is the numpy reference's (identities.identify,
// online_clusters) on the plugin's own embeddings.
func TestTrainedFaceNetIdentifiesTheHeldOutProbes(t *testing.T) {
	dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "ident_facenet")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("ident_facenet is not in EDGEINFER_MODELS (python -m tfmodels.zoo.train_embed --out %s ident_facenet installs it): %v", filepath.Dir(filepath.Dir(dir)), err)
	}
	var metrics struct {
		Identification struct {
			Threshold float64 `json:"threshold"`
			ClosedSet float64 `json:"closed_set_accuracy"`
			OpenSet   float64 `json:"open_set_accuracy"`
		} `json:"identification"`
		Clustering struct {
			Threshold float64 `json:"threshold"`
		} `json:"clustering"`
	}
	readJSON(t, filepath.Join(dir, "golden", "ident_metrics.json"), &metrics)
	tmp := t.TempDir()
	gallery, probes := filepath.Join(tmp, "gallery"), filepath.Join(tmp, "probes")
	python(t, "-m", "tfmodels.zoo.identities", "gallery", gallery)
	python(t, "-m", "tfmodels.zoo.identities", "probes", probes)
	var labels struct {
		Files []struct{ Image, Identity string } `json:"files"`
	}
	readJSON(t, filepath.Join(probes, "labels.json"), &labels)

	thr, cthr := metrics.Identification.Threshold, metrics.Clustering.Threshold
	e := load(t, dir, "")
	configure(t, e, map[string]string{
		testPipeline: `{"gallery": "` + gallery + `", "threshold": ` + ftoa(thr) + `, "cluster_threshold": ` + ftoa(cthr) + `, "top_k": 1, "embedding": true}`,
		"plain":      `{"cluster_threshold": 0, "embedding": true}`,
	})

	// The gallery's embeddings for the reference, through the same path.
	type decisions struct {
		Gallery          [][]float64 `json:"gallery"`
		GalleryIDs       []int       `json:"gallery_ids"`
		Probes           [][]float64 `json:"probes"`
		Threshold        float64     `json:"threshold"`
		ClusterThreshold float64     `json:"cluster_threshold"`
	}
	in := decisions{Threshold: thr, ClusterThreshold: cthr}
	names, _ := os.ReadDir(gallery)
	for _, n := range names {
		files, _ := os.ReadDir(filepath.Join(gallery, n.Name()))
		for _, f := range files {
			fr := pngFrame(t, filepath.Join(gallery, n.Name(), f.Name()))
			fr.Pipeline = "plain"
			in.Gallery = append(in.Gallery, infer(t, e, fr).Embedding)
			in.GalleryIDs = append(in.GalleryIDs, identityNumber(t, n.Name()))
		}
	}

	var outs []output
	enrolled, rank1, openSet := 0, 0, 0
	for _, f := range labels.Files {
		out := infer(t, e, pngFrame(t, filepath.Join(probes, f.Image)))
		outs = append(outs, out)
		in.Probes = append(in.Probes, out.Embedding)
		isEnrolled := identityNumber(t, f.Identity) < 1020
		if isEnrolled {
			enrolled++
			if len(out.Top) == 1 && out.Top[0].Name == f.Identity {
				rank1++
			}
		}
		if isEnrolled && out.Identity != nil && *out.Identity == f.Identity || !isEnrolled && out.Identity == nil {
			openSet++
		}
	}
	closedAcc, openAcc := float64(rank1)/float64(enrolled), float64(openSet)/float64(len(outs))
	t.Logf("ident_facenet through the plugin: %d probes (%d enrolled); nearest identity right %.4f (train_embed: %.4f); open-set accuracy at distance <= %.4f: %.4f (train_embed: %.4f)",
		len(outs), enrolled, closedAcc, metrics.Identification.ClosedSet, thr, openAcc, metrics.Identification.OpenSet)
	if closedAcc < 0.9 {
		t.Errorf("nearest identity right for %.4f of the enrolled probes, want >= 0.9", closedAcc)
	}
	// train_embed measured the same protocol in Python TensorFlow: a probe
	// or two may flip at the threshold (the embeddings agree to 1e-5).
	if math.Abs(closedAcc-metrics.Identification.ClosedSet) > 0.005 || math.Abs(openAcc-metrics.Identification.OpenSet) > 0.005 {
		t.Errorf("accuracies %.4f, %.4f; train_embed's %.4f, %.4f", closedAcc, openAcc, metrics.Identification.ClosedSet, metrics.Identification.OpenSet)
	}

	inPath, outPath := filepath.Join(tmp, "in.json"), filepath.Join(tmp, "out.json")
	b, _ := json.Marshal(in)
	if err := os.WriteFile(inPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	reference(t, "decide", inPath, outPath)
	var want struct {
		IDs       []int     `json:"ids"`
		Distances []float64 `json:"distances"`
		Clusters  []int     `json:"clusters"`
	}
	readJSON(t, outPath, &want)
	var clusters []int
	for i, out := range outs {
		got := -1
		if out.Identity != nil {
			got = identityNumber(t, *out.Identity)
			if math.Abs(*out.Distance-want.Distances[i]) > 1e-12 {
				t.Errorf("probe %d: distance %v, numpy %v", i, *out.Distance, want.Distances[i])
			}
		}
		if got != want.IDs[i] {
			t.Errorf("probe %d (%s): identity %d, numpy %d", i, labels.Files[i].Identity, got, want.IDs[i])
		}
		if math.Abs(out.Top[0].Distance-want.Distances[i]) > 1e-12 {
			t.Errorf("probe %d: nearest distance %v, numpy %v", i, out.Top[0].Distance, want.Distances[i])
		}
		if out.Cluster != nil {
			clusters = append(clusters, out.Cluster.ID)
		}
	}
	if !slices.Equal(clusters, want.Clusters) {
		t.Errorf("cluster ids of the %d unknowns differ from numpy's %d:\n%v\n%v", len(clusters), len(want.Clusters), clusters, want.Clusters)
	}
	t.Logf("%d unknowns in %d clusters, the same ids as numpy's", len(clusters), len(slices.Compact(slices.Sorted(slices.Values(clusters)))))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// identityNumber is the id of identities.py's name "id1003".
func identityNumber(t *testing.T, name string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(name, "id"))
	if err != nil {
		t.Fatalf("identity %q: %v", name, err)
	}
	return n
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Commands from the daemon's command topic (with its id and pipeline
// fields) enrol an image under a name, name a cluster and forget a name;
// each changes who the next frame is. A pipeline that keeps no identities,
// or one not configured, refuses them.
func TestCommandsEnrolNameAClusterAndForget(t *testing.T) {
	state := t.TempDir()
	e := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"state_dir": "`+state+`", "cluster_threshold": 0.05, "threshold": 0.05}`)
	ramp, err := pngOf(testFrame("ramp").RGB, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	command := func(body string) (string, error) {
		return e.Command(context.Background(), testPipeline, json.RawMessage(body))
	}
	identity := func(frame string) string {
		out := infer(t, e, testFrame(frame))
		if out.Identity == nil {
			return ""
		}
		return *out.Identity
	}
	if got := identity("ramp"); got != "" {
		t.Fatalf("ramp is %q before any enrolment", got)
	}
	msg, err := command(`{"id":"1","pipeline":"` + testPipeline + `","command":"enrol","name":"alice","image":"` + base64.StdEncoding.EncodeToString(ramp) + `"}`)
	if err != nil || !strings.Contains(msg, "alice enrolled") {
		t.Fatalf("enrol: %q, %v", msg, err)
	}
	if got := identity("ramp"); got != "alice" {
		t.Fatalf("ramp after enrolling it as alice: %q", got)
	}
	out := infer(t, e, testFrame("checker"))
	if out.Identity != nil || out.Cluster == nil {
		t.Fatalf("white: %+v, want an unknown in a cluster", out)
	}
	if _, err := command(fmt.Sprintf(`{"command":"name_cluster","cluster":%d,"name":"bob"}`, out.Cluster.ID)); err != nil {
		t.Fatal(err)
	}
	if got := identity("checker"); got != "bob" {
		t.Fatalf("white after naming its cluster bob: %q", got)
	}
	if _, err := command(`{"command":"forget","name":"alice"}`); err != nil {
		t.Fatal(err)
	}
	if got := identity("ramp"); got != "" {
		t.Fatalf("ramp after forgetting alice: %q", got)
	}
	for _, tc := range []struct{ pipeline, body, err string }{
		{testPipeline, `{"command":"enrol","name":"x"}`, `field "image" is missing`},
		{testPipeline, `{"command":"explode"}`, "must be one of enrol, name_cluster, forget"},
		{"other", `{"command":"forget","name":"bob"}`, `pipeline "other" is not configured`},
	} {
		if _, err := e.Command(context.Background(), tc.pipeline, json.RawMessage(tc.body)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want an error with %q", tc.body, err, tc.err)
		}
	}
	plain := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `{"cluster_threshold": 0}`)
	if _, err := plain.Command(context.Background(), testPipeline, json.RawMessage(`{"command":"forget","name":"bob"}`)); err == nil ||
		!strings.Contains(err.Error(), "keeps no identities") {
		t.Errorf("a pipeline without gallery or state: got %v", err)
	}
}
