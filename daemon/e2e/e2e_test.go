package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// setup describes one daemon for a test.
type setup struct {
	broker  string // a URL, or "embedded"
	listen  string // for the embedded broker
	sensors string // [sensors.*] tables
	extra   string // pipelines and anything else; default: the digits pipeline
	repo    string // the model repository; default: $EDGEINFER_MODELS
	plugins string // plugin_dir; default: the binaries built for the tests
	models  string // more keys of [models] (settle, rescan)
}

const digitsPipeline = `
[pipelines.digits]
sensor = "inbox"
model = "lenet5"
[pipelines.digits.options]
top_k = 3
`

func (s setup) config(t *testing.T, prefix string) string {
	if s.extra == "" {
		s.extra = digitsPipeline
	}
	if s.repo == "" {
		s.repo = models(t)
	}
	if s.plugins == "" {
		s.plugins = binDir
	}
	return fmt.Sprintf(`
device = "e2e"
plugin_dir = %q
stats_interval = "500ms"

[log]
level = "debug"

[models]
repository = %q
threads = 1
%s

[mqtt]
broker = %q
listen = %q
prefix = %q
qos = 1
%s
%s`, s.plugins, s.repo, s.models, s.broker, s.listen, prefix, s.sensors, s.extra)
}

// run starts a daemon and a watcher on the same prefix.
func run(t *testing.T, s setup) (*proc, *watcher) {
	t.Helper()
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	url := s.broker
	if s.broker == "embedded" {
		url = "tcp://" + s.listen
	}
	p := start(t, s.config(t, prefix))
	// With the embedded broker the watcher retries until the daemon listens.
	return p, watch(t, url, prefix)
}

func dirSensor(path string) string {
	return fmt.Sprintf("[sensors.inbox]\nkind = \"dir\"\npath = %q\nsettle = \"50ms\"\n", path)
}

// dropDigits writes every digit into dir the way a camera or a copy would:
// into a temporary name, then renamed.
func dropDigits(t *testing.T, dir string, ds []digit) {
	t.Helper()
	for _, d := range ds {
		tmp := filepath.Join(dir, "."+d.name+".part")
		if err := os.WriteFile(tmp, d.png, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, d.name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDigitsDroppedIntoAFolderGiveOneCorrectResultEachOverMosquitto(t *testing.T) {
	broker := mosquitto.Start(t)
	inbox := t.TempDir()
	p, w := run(t, setup{broker: broker, sensors: dirSensor(inbox)})
	if vs := w.serving(t, p, "lenet5", "digits"); vs.Task != "classify" || vs.Labels != 10 || vs.LoadedAt == nil ||
		vs.Signature != "serving_default" || len(vs.InputShape) != 4 || vs.Validation == nil || vs.Validation.Samples == 0 {
		t.Fatalf("model state: %+v", vs)
	}
	if st, _ := w.model(t, "lenet5"); st.Serving != "1" {
		t.Fatalf("model state: %+v", st)
	}
	ds := digits(t)
	dropDigits(t, inbox, ds)

	waitFor(t, p, 60*time.Second, "200 results", func() bool { return len(w.all("digits/result")) >= 200 })
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	acc := checkDigits(t, w.results(t, "digits"), ds, func(r payload.Result) int { return indexOfName(r.Source) })
	t.Logf("accuracy through the daemon: %.3f", acc)
	if acc < 0.95 {
		t.Fatalf("accuracy %.3f < 0.95", acc)
	}
	waitFor(t, p, 10*time.Second, "every file in done/", func() bool {
		done, _ := filepath.Glob(filepath.Join(inbox, "done", "digit-*.png"))
		return len(done) == 200
	})
	if left, _ := filepath.Glob(filepath.Join(inbox, "*.png")); len(left) != 0 {
		t.Fatalf("files left in the inbox: %v", left)
	}
	if w.last("status") != "online" {
		t.Fatalf("status is %q, want online", w.last("status"))
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d", code)
	}
	if w.last("status") != "offline" {
		t.Fatalf("status after SIGTERM is %q, want offline", w.last("status"))
	}
	if st, _ := w.model(t, "lenet5"); st.Serving != "" || st.Versions["1"].State != payload.StateRetired || st.Versions["1"].PID != 0 {
		t.Fatalf("model state after SIGTERM: %+v", st)
	}
}

// publishDigits sends every digit to the mqtt sensor's input topic and
// checks the results, matched by arrival order (seq). ready, if set, runs
// once the model serves, before the first publish.
func publishDigits(t *testing.T, s setup, ready func()) {
	s.sensors = "[sensors.inbox]\nkind = \"mqtt\"\n"
	p, w := run(t, s)
	w.serving(t, p, "lenet5", "digits")
	if ready != nil {
		ready()
	}
	ds := digits(t)
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	for _, d := range ds {
		w.publish(t, prefix+"/in/inbox", d.png)
	}
	waitFor(t, p, 60*time.Second, "200 results", func() bool { return len(w.all("digits/result")) >= 200 })
	time.Sleep(500 * time.Millisecond)
	acc := checkDigits(t, w.results(t, "digits"), ds, func(r payload.Result) int {
		if !strings.HasPrefix(r.Source, prefix+"/in/inbox") {
			return -1
		}
		return int(r.Seq) - 1
	})
	t.Logf("accuracy through the daemon: %.3f", acc)
	if acc < 0.95 {
		t.Fatalf("accuracy %.3f < 0.95", acc)
	}
}

func TestDigitsPublishedOnTheInputTopicGiveOneCorrectResultEachOverMosquitto(t *testing.T) {
	publishDigits(t, setup{broker: mosquitto.Start(t)}, nil)
}

func TestDigitsThroughTheEmbeddedBrokerAndWatch(t *testing.T) {
	listen := mosquitto.FreeAddr(t)
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	var out syncBuffer
	watch := exec.Command(filepath.Join(binDir, "edgeinferd"), "watch", "-broker", "tcp://"+listen, "-prefix", prefix)
	watch.Stdout, watch.Stderr = &out, &out
	defer func() {
		if watch.Process != nil {
			watch.Process.Kill()
		}
	}()
	publishDigits(t, setup{broker: "embedded", listen: listen}, func() {
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, nil, 10*time.Second, "edgeinferd watch to subscribe", func() bool { return strings.Contains(out.String(), "MODEL lenet5 serving v1") })
	})
	// edgeinferd watch printed one readable line per result.
	time.Sleep(300 * time.Millisecond)
	watch.Process.Signal(syscall.SIGTERM)
	watch.Wait()
	lines := 0
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, " digits ") && strings.Contains(l, " -> ") && strings.Contains(l, "model lenet5 v1") {
			lines++
		}
	}
	if lines != 200 {
		t.Fatalf("edgeinferd watch printed %d result lines, want 200:\n%q", lines, out.String()[:min(out.Len(), 600)])
	}
}

func TestAVideoThroughFFmpegGivesOneResultPerFrameAtTheConfiguredRate(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", "testsrc=size=160x120:rate=25", "-t", "3", "-pix_fmt", "yuv420p", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (make test installs Debian's ffmpeg): %v\n%s", err, out)
	}
	sensor := fmt.Sprintf("[sensors.inbox]\nkind = \"ffmpeg\"\ninput = %q\nfps = 4\nwidth = 64\nheight = 48\n", clip)
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensor})
	w.serving(t, p, "lenet5", "digits")
	const want = 12 // 3 s at 4 fps
	waitFor(t, p, 60*time.Second, "12 results", func() bool { return len(w.all("digits/result")) >= want })
	time.Sleep(time.Second)
	rs := w.results(t, "digits")
	if len(rs) != want {
		t.Fatalf("%d results, want %d", len(rs), want)
	}
	for i, r := range rs {
		if r.Seq != uint64(i+1) || r.Width != 64 || r.Height != 48 || !strings.HasPrefix(r.Source, clip) {
			t.Fatalf("result %d: seq %d %dx%d source %s", i, r.Seq, r.Width, r.Height, r.Source)
		}
	}
}

func TestAKilledPluginIsRestartedAndNoImageIsLostOrDoubled(t *testing.T) {
	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox)})
	first := w.serving(t, p, "lenet5", "digits")
	ds := digits(t)
	dropDigits(t, inbox, ds)
	waitFor(t, p, 60*time.Second, "the first 40 results", func() bool { return len(w.all("digits/result")) >= 40 })
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill plugin %d: %v", first.PID, err)
	}
	waitFor(t, p, 90*time.Second, "200 results", func() bool { return len(w.all("digits/result")) >= 200 })
	time.Sleep(500 * time.Millisecond)
	acc := checkDigits(t, w.results(t, "digits"), ds, func(r payload.Result) int { return indexOfName(r.Source) })
	if acc < 0.95 {
		t.Fatalf("accuracy %.3f < 0.95", acc)
	}
	ev := w.eventsOf(t, payload.EventPluginRestarted)
	if len(ev) != 1 || !strings.Contains(ev[0].Message, strconv.Itoa(first.PID)) || ev[0].Model != "lenet5" {
		t.Fatalf("want one plugin_restarted event naming pid %d, got %+v", first.PID, ev)
	}
	st, _ := w.model(t, "lenet5")
	if vs := st.Versions[st.Serving]; vs.PID == first.PID || vs.PID == 0 || vs.Restarts != 1 || vs.State != payload.StateServing {
		t.Fatalf("version state after the restart: %+v", vs)
	}
	waitFor(t, p, 10*time.Second, "every file in done/", func() bool {
		done, _ := filepath.Glob(filepath.Join(inbox, "done", "digit-*.png"))
		return len(done) == 200
	})
}

func pngOf(t *testing.T, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBadInputsAreReportedAndTheNextGoodInputIsProcessed(t *testing.T) {
	broker := mosquitto.Start(t)
	inbox := t.TempDir()
	sensors := dirSensor(inbox) + "\n[sensors.topic]\nkind = \"mqtt\"\n"
	pipelines := digitsPipeline + "\n[pipelines.topic]\nsensor = \"topic\"\nmodel = \"lenet5\"\n"
	p, w := run(t, setup{broker: broker, sensors: sensors, extra: pipelines})
	w.serving(t, p, "lenet5", "digits")
	w.serving(t, p, "lenet5", "topic")
	ds := digits(t)

	var jpg bytes.Buffer
	rgba := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i)
	}
	rgba.Set(1, 1, color.White)
	if err := jpeg.Encode(&jpg, rgba, nil); err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"truncated.jpg", jpg.Bytes()[:jpg.Len()/2], "jpeg is truncated"},
		{"notes.jpg", []byte("this is a text file, not a picture\n"), "not a JPEG, PNG, GIF, BMP, TIFF or WebP image"},
		{"empty.png", nil, "empty (0 bytes)"},
		{"tiny.png", pngOf(t, 1, 1), "1x1 pixels is under the minimum"},
		{"huge.png", pngOf(t, 10000, 10000), "10000x10000 pixels is over the limit"},
	}
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	for i, f := range files {
		if err := os.WriteFile(filepath.Join(inbox, f.name), f.data, 0o644); err != nil {
			t.Fatal(err)
		}
		// After each bad file, a good one: it must still be processed.
		dropDigits(t, inbox, ds[i:i+1])
	}
	w.publish(t, prefix+"/in/topic", bytes.Repeat([]byte{0xff}, 50<<20))
	w.publish(t, prefix+"/in/topic", ds[10].png)
	// A file no pattern takes: reported once, even when written again, and
	// left where it is.
	for range 2 {
		if err := os.WriteFile(filepath.Join(inbox, "notes.txt"), []byte("shopping list\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, p, 60*time.Second, "7 bad_input events and 6 results", func() bool {
		return len(w.eventsOf(t, payload.EventBadInput)) >= 7 && len(w.all("digits/result")) >= 5 && len(w.all("topic/result")) >= 1
	})
	bad := w.eventsOf(t, payload.EventBadInput)
	for _, f := range files {
		found := false
		for _, e := range bad {
			if strings.HasSuffix(e.Source, f.name) && strings.Contains(e.Message, f.name) && strings.Contains(e.Message, f.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("no bad_input event naming %s with %q; events: %+v", f.name, f.reason, bad)
		}
		if _, err := os.Stat(filepath.Join(inbox, "failed", f.name)); err != nil {
			t.Errorf("%s not moved to failed/: %v", f.name, err)
		}
	}
	found := false
	for _, e := range bad {
		if e.Sensor == "topic" && strings.Contains(e.Message, "52428800 bytes") {
			found = true
		}
	}
	if !found {
		t.Errorf("no bad_input event for the 50 MB payload; events: %+v", bad)
	}
	notes := 0
	for _, e := range bad {
		if strings.HasSuffix(e.Source, "notes.txt") && strings.Contains(e.Message, "matches none of the patterns") {
			notes++
		}
	}
	if _, err := os.Stat(filepath.Join(inbox, "notes.txt")); notes != 1 || err != nil {
		t.Errorf("notes.txt: %d bad_input events, want 1; still in the inbox: %v", notes, err)
	}
	if rs := w.results(t, "topic"); len(rs) != 1 || rs[0].Seq == 0 {
		t.Fatalf("the good payload after the 50 MB one: %+v", rs)
	}
	if !p.running() {
		t.Fatal("edgeinferd exited")
	}
}

func TestALiveSourceKeepsTheNewestFrameAndCountsWhatItSkips(t *testing.T) {
	sensor := "[sensors.inbox]\nkind = \"synthetic\"\nfps = 500\nwidth = 640\nheight = 480\n"
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensor})
	w.serving(t, p, "lenet5", "digits")
	var st payload.Stats
	waitFor(t, p, 30*time.Second, "stats with skipped frames", func() bool {
		if json.Unmarshal([]byte(w.last("stats")), &st) != nil {
			return false
		}
		return st.Pipelines["digits"].Skipped > 0 && st.Sensors["inbox"].Skipped > 0 && st.Pipelines["digits"].Results > 10
	})
	ps := st.Pipelines["digits"]
	if ps.Frames+ps.Skipped > st.Sensors["inbox"].Frames+1 || ps.Frames == 0 {
		t.Fatalf("stats do not add up: %+v / %+v", ps, st.Sensors["inbox"])
	}
	// Results keep coming (the newest frame is taken), seq increases.
	rs := w.results(t, "digits")
	for i := 1; i < len(rs); i++ {
		if rs[i].Seq <= rs[i-1].Seq {
			t.Fatalf("seq went back: %d after %d", rs[i].Seq, rs[i-1].Seq)
		}
	}
}

func TestSIGTERMFinishesTheFramesTakenAndLeavesTheRestForNextTime(t *testing.T) {
	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox)})
	w.serving(t, p, "lenet5", "digits")
	ds := digits(t)
	dropDigits(t, inbox, ds)
	waitFor(t, p, 60*time.Second, "the first result", func() bool { return len(w.all("digits/result")) >= 1 })
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d", code)
	}
	time.Sleep(300 * time.Millisecond) // the last publishes reach the watcher
	// Every file is either done with exactly one result, or still in the
	// inbox untouched: none is lost, none is half processed.
	results := map[string]int{}
	for _, r := range w.results(t, "digits") {
		results[filepath.Base(r.Source)]++
	}
	done, _ := filepath.Glob(filepath.Join(inbox, "done", "*.png"))
	left, _ := filepath.Glob(filepath.Join(inbox, "*.png"))
	if len(done)+len(left) != len(ds) {
		t.Fatalf("%d done + %d left != %d dropped", len(done), len(left), len(ds))
	}
	for _, f := range done {
		if results[filepath.Base(f)] != 1 {
			t.Fatalf("%s is done with %d results", f, results[filepath.Base(f)])
		}
	}
	if len(results) != len(done) {
		t.Fatalf("%d results but %d files done", len(results), len(done))
	}
	t.Logf("at SIGTERM: %d done, %d left for the next start", len(done), len(left))
	if w.last("status") != "offline" {
		t.Fatalf("status after SIGTERM is %q", w.last("status"))
	}
}

func TestCheckLoadsEachPipelinesModelInItsPluginWithoutStarting(t *testing.T) {
	dir := t.TempDir()
	// A repository whose lenet5 has random bytes as saved_model.pb.
	corrupt := t.TempDir()
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(corrupt, "lenet5", "1"), nil)
	random := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(random)
	if err := os.WriteFile(filepath.Join(corrupt, "lenet5", "1", "saved_model.pb"), random, 0o644); err != nil {
		t.Fatal(err)
	}
	// The broker address is unreachable: -check must not connect.
	base := setup{broker: "tcp://127.0.0.1:1", sensors: dirSensor(t.TempDir())}
	good := base.config(t, "e2e/check")
	withRepo := base
	withRepo.repo = corrupt
	for _, tc := range []struct {
		name, config string
		args         []string
		code         int
		want         []string
	}{
		{"good", good, nil, 0, []string{"pipeline digits: sensor inbox -> model lenet5 version 1 (classify): loaded, warm-up",
			"golden samples reproduced (max abs diff", ": ok"}},
		{"config only", good, []string{"-config-only"}, 0, []string{"pipeline digits: sensor inbox -> model lenet5 version 1 (classify)\n"}},
		{"unknown model", strings.Replace(good, `model = "lenet5"`, `model = "lenet6"`, 1), nil, 2,
			[]string{`pipelines.digits.model: model "lenet6" is not in the repository`}},
		{"bad option", strings.Replace(good, "top_k = 3", "top_k = 0", 1), nil, 1,
			[]string{"pipelines.digits: model lenet5: version 1: options: pipeline digits: top_k is 0, must be 1..10"}},
		{"corrupt model", withRepo.config(t, "e2e/check"), nil, 1,
			[]string{"pipelines.digits: model lenet5: ", "saved_model.pb"}},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
		if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(binDir, "edgeinferd"), append([]string{"-check", "-config", path}, tc.args...)...)
		out, _ := cmd.CombinedOutput()
		if got := cmd.ProcessState.ExitCode(); got != tc.code {
			t.Fatalf("%s: exit code %d, want %d; output %q", tc.name, got, tc.code, out)
		}
		for _, want := range tc.want {
			if !strings.Contains(string(out), want) {
				t.Fatalf("%s: output %q lacks %q", tc.name, out, want)
			}
		}
		if tc.code != 0 && !strings.HasPrefix(string(out), path+":") {
			t.Fatalf("%s: the message does not start with the file: %q", tc.name, out)
		}
	}
}

func TestAModelThatCannotLoadLeavesTheOtherPipelinesUntouched(t *testing.T) {
	// A repository with LeNet-5 and a "broken" model whose SavedModel is
	// garbage.
	repo := t.TempDir()
	if err := os.Symlink(filepath.Join(models(t), "lenet5"), filepath.Join(repo, "lenet5")); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(repo, "broken", "1")
	os.MkdirAll(filepath.Join(broken, "variables"), 0o755)
	manifest, err := os.ReadFile(filepath.Join(models(t), "lenet5", "1", "edgeinfer.toml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(broken, "edgeinfer.toml"), manifest, 0o644)
	os.WriteFile(filepath.Join(broken, "saved_model.pb"), []byte("not a protobuf"), 0o644)

	inbox, other := t.TempDir(), t.TempDir()
	sensors := dirSensor(inbox) + fmt.Sprintf("[sensors.other]\nkind = \"dir\"\npath = %q\n", other)
	pipelines := digitsPipeline + "\n[pipelines.bad]\nsensor = \"other\"\nmodel = \"broken\"\n"
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors, extra: pipelines, repo: repo})
	w.serving(t, p, "lenet5", "digits")
	waitFor(t, p, 30*time.Second, "the broken model's failed state", func() bool {
		st, _ := w.model(t, "broken")
		vs := st.Versions["1"]
		return st.Serving == "" && vs.State == payload.StateFailed && strings.Contains(vs.Reason, broken)
	})
	if ev := w.eventsOf(t, payload.EventVersionRejected); len(ev) != 1 || ev[0].Model != "broken" || ev[0].Version != "1" {
		t.Fatalf("version_rejected events: %+v", ev)
	}
	// A frame for the broken pipeline waits (lossless); digits flow as usual.
	ds := digits(t)
	dropDigits(t, other, ds[:1])
	dropDigits(t, inbox, ds[:50])
	waitFor(t, p, 60*time.Second, "50 results", func() bool { return len(w.all("digits/result")) >= 50 })
	if n := len(w.all("bad/result")); n != 0 {
		t.Fatalf("%d results from the broken model", n)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d", code)
	}
	if _, err := os.Stat(filepath.Join(other, ds[0].name)); err != nil {
		t.Fatalf("the waiting frame's file left its folder: %v", err)
	}
}

func TestPluginsDoNotOutliveADaemonKilledWithSIGKILL(t *testing.T) {
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(t.TempDir())})
	plugin := w.serving(t, p, "lenet5", "digits").PID
	p.cmd.Process.Kill()
	<-p.done
	waitFor(t, nil, 10*time.Second, fmt.Sprintf("plugin %d to end with the daemon", plugin), func() bool {
		// Signal 0 only checks that the process exists; a zombie is gone
		// too, for our purpose, so look at its state.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", plugin))
		return err != nil || strings.Contains(string(stat), ") Z ")
	})
	// The broker published the daemon's last will.
	waitFor(t, nil, 10*time.Second, "the last will", func() bool { return w.last("status") == "offline" })
}

func TestAnIdlePluginThatDiesIsRestartedWithoutWaitingForAFrame(t *testing.T) {
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(t.TempDir())})
	first := w.serving(t, p, "lenet5", "digits").PID
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, 30*time.Second, "a new plugin serving", func() bool {
		st, _ := w.model(t, "lenet5")
		vs := st.Versions[st.Serving]
		return vs.State == payload.StateServing && vs.PID != first && vs.PID != 0 && vs.Restarts == 1
	})
	ev := w.eventsOf(t, payload.EventPluginRestarted)
	if len(ev) != 1 || !strings.Contains(ev[0].Message, fmt.Sprintf("plugin process %d died", first)) {
		t.Fatalf("plugin_restarted events: %+v", ev)
	}
}

func TestImagesOnTheInputTopicSurviveADaemonKilledWithSIGKILL(t *testing.T) {
	broker := mosquitto.Start(t)
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	s := setup{broker: broker, sensors: fmt.Sprintf("[sensors.inbox]\nkind = \"mqtt\"\ntopic = %q\n", prefix+"/in/inbox/+")}
	config := s.config(t, prefix)
	first := start(t, config)
	w := watch(t, broker, prefix)
	w.serving(t, first, "lenet5", "digits")
	ds := digits(t)
	for _, d := range ds {
		w.publish(t, prefix+"/in/inbox/"+d.name, d.png) // the broker has each one now
	}
	waitFor(t, first, 60*time.Second, "40 results", func() bool { return len(w.all("digits/result")) >= 40 })
	first.cmd.Process.Kill()
	<-first.done
	time.Sleep(200 * time.Millisecond) // results already at the broker arrive
	before := len(w.all("digits/result"))

	// The same daemon (same client id) starts again: the broker hands it
	// every image whose result the first one had not published.
	second := start(t, config)
	results := func() map[int][]payload.Result {
		byDigit := map[int][]payload.Result{}
		for _, r := range w.results(t, "digits") {
			topic, _, _ := strings.Cut(r.Source, "#")
			byDigit[indexOfName(topic)] = append(byDigit[indexOfName(topic)], r)
		}
		return byDigit
	}
	waitFor(t, second, 90*time.Second, "a result for every image", func() bool { return len(results()) == len(ds) })
	time.Sleep(500 * time.Millisecond)
	byDigit := results()
	var firsts []payload.Result
	again := 0
	for i := range ds {
		rs := byDigit[i]
		if len(rs) == 0 {
			t.Fatalf("%s: no result", ds[i].name)
		}
		if len(rs) > 2 {
			t.Fatalf("%s: %d results; each daemon may answer it once at most", ds[i].name, len(rs))
		}
		again += len(rs) - 1
		firsts = append(firsts, rs[0])
	}
	total := len(w.all("digits/result"))
	t.Logf("%d results before the SIGKILL, %d in all; %d images processed twice (answered, not yet acknowledged at the kill)", before, total, again)
	if again > before || total != len(ds)+again {
		t.Fatalf("%d images answered twice, %d results before the kill, %d in all", again, before, total)
	}
	acc := checkDigits(t, firsts, ds, func(r payload.Result) int { topic, _, _ := strings.Cut(r.Source, "#"); return indexOfName(topic) })
	if acc < 0.95 {
		t.Fatalf("accuracy %.3f", acc)
	}
}

func TestFilesSurviveADaemonKilledWithSIGKILL(t *testing.T) {
	broker := mosquitto.Start(t)
	prefix := "e2e/" + strings.ReplaceAll(t.Name(), "/", "_")
	inbox := t.TempDir()
	config := setup{broker: broker, sensors: dirSensor(inbox)}.config(t, prefix)
	first := start(t, config)
	w := watch(t, broker, prefix)
	w.serving(t, first, "lenet5", "digits")
	ds := digits(t)
	dropDigits(t, inbox, ds)
	waitFor(t, first, 60*time.Second, "40 results", func() bool { return len(w.all("digits/result")) >= 40 })
	first.cmd.Process.Kill()
	<-first.done

	second := start(t, config) // takes the files still in the inbox
	waitFor(t, second, 90*time.Second, "every file in done/", func() bool {
		done, _ := filepath.Glob(filepath.Join(inbox, "done", "digit-*.png"))
		return len(done) == len(ds)
	})
	time.Sleep(500 * time.Millisecond)
	seen := map[int]int{}
	for _, r := range w.results(t, "digits") {
		seen[indexOfName(r.Source)]++
	}
	again := 0
	for i := range ds {
		if seen[i] == 0 {
			t.Fatalf("%s: in done/ without a result", ds[i].name)
		}
		again += seen[i] - 1
	}
	t.Logf("%d images processed twice (in flight at the kill)", again)
	if again > 20 {
		t.Fatalf("%d images processed twice: more than were in flight", again)
	}
}
