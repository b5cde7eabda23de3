package dir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

// start runs a dir sensor on folder with the given extra options until the
// test ends. sink.OnFrame decides what happens to each frame.
func start(t *testing.T, folder, options string, sink *sensortest.Sink) (stop func() error) {
	t.Helper()
	s, err := New(sensortest.Env("inbox"), sensortest.Decoder(fmt.Sprintf("path = %q\n%s", folder, options)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return stop
}

// finishWith returns an OnFrame that finishes each frame with err from
// another goroutine, as the daemon's router does.
func finishWith(err error) func(*sensors.Frame) {
	return func(f *sensors.Frame) { go f.Finish(err) }
}

// files lists the names of the regular files in dir, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // not made yet
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadOptionsNamingThem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.png")
	write(t, file, nil)
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		body, want string
	}{
		{`settle = "1s"`, "path: required"},
		{fmt.Sprintf("path = %q", missing), fmt.Sprintf("path %q does not exist", missing)},
		{fmt.Sprintf("path = %q", file), fmt.Sprintf("path %q is not a directory", file)},
		{fmt.Sprintf("path = %q\npatterns = []", dir), "patterns: must not be empty"},
		{fmt.Sprintf("path = %q\npatterns = [\"[a\"]", dir), `patterns: "[a" is not a file name pattern`},
		{fmt.Sprintf("path = %q\npatterns = [\"x/*.png\"]", dir), `patterns: "x/*.png" is not a file name pattern`},
		{fmt.Sprintf("path = %q\ndone_dir = %q", dir, dir+"/"), "done_dir must not be path itself"},
		{fmt.Sprintf("path = %q\nfailed_dir = %q", dir, dir), "failed_dir must not be path itself"},
		{fmt.Sprintf("path = %q\nsettle = \"soon\"", dir), `settle: invalid duration "soon"`},
		{fmt.Sprintf("path = %q\nsettle = \"0s\"", dir), "settle must be > 0, got 0s"},
		{fmt.Sprintf("path = %q\nrecursive = true", dir), `unknown option "recursive"`},
	}
	for _, tt := range tests {
		_, err := New(sensortest.Env("inbox"), sensortest.Decoder(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want an error containing %q", tt.body, err, tt.want)
		}
	}
}

func TestSampleConfDecodes(t *testing.T) {
	_, decode := sensortest.Sample(t, "dir", sampleConf)
	var cfg config
	if err := decode(&cfg); err != nil {
		t.Fatalf("sample.conf: %v", err)
	}
	var defaults []string
	for _, ext := range sensors.Extensions {
		defaults = append(defaults, "*"+ext)
	}
	if cfg.Path != "/var/lib/edgeinfer/inbox" || !slices.Equal(cfg.Patterns, defaults) || cfg.Settle != "200ms" {
		t.Errorf("sample.conf decodes to %+v", cfg)
	}
	if k, ok := sensors.Lookup("dir"); !ok || k.SampleConfig != sampleConf {
		t.Fatalf("kind dir is not registered with its sample.conf")
	}
}

func TestWantedSkipsHiddenAndTemporaryFiles(t *testing.T) {
	s := &sensor{patterns: []string{"*.jpg", "*.jpeg", "*.png"}}
	for name, want := range map[string]bool{
		"a.png": true, "B.JPG": true, "c.Jpeg": true,
		".a.png": false, "a.png.tmp": false, "a.png.part": false, "a.PART": false,
		"a.gif": false, "png": false,
	} {
		if got := s.wanted(name); got != want {
			t.Errorf("wanted(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestEveryFileIsDeliveredOnceAndMovedToDone(t *testing.T) {
	inbox := t.TempDir()
	want := map[string][]byte{} // path → pixels
	newImage := func(name string) []byte {
		data, rgb := sensortest.PNG(t, 16+len(want), 12, len(want))
		want[filepath.Join(inbox, name)] = rgb
		return data
	}

	// 10 files before the sensor starts, one with a known modification time.
	var before []string
	for i := range 10 {
		name := fmt.Sprintf("before-%02d.png", 9-i) // written in reverse name order
		write(t, filepath.Join(inbox, name), newImage(name))
		before = append(before, filepath.Join(inbox, name))
	}
	slices.Sort(before)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(before[0], mtime, mtime); err != nil {
		t.Fatal(err)
	}

	sink := &sensortest.Sink{OnFrame: finishWith(nil)}
	start(t, inbox, `settle = "100ms"`, sink)
	// Files written before Run has listed the folder would count as there
	// before the start: wait for those to come through first.
	sensortest.WaitFor(t, 5*time.Second, "the first 10 frames", func() bool { return len(sink.Frames()) >= 10 })

	// Then 14 files written at once, 5 in 4 slow chunks, 1 renamed into place.
	for i := range 14 {
		name := fmt.Sprintf("after-%02d.PNG", i)
		write(t, filepath.Join(inbox, name), newImage(name))
	}
	slow := make(chan error)
	for i := range 5 {
		name := fmt.Sprintf("slow-%d.png", i)
		data := newImage(name)
		go func() { slow <- writeSlowly(filepath.Join(inbox, name), data, 4, 30*time.Millisecond) }()
	}
	tmp := filepath.Join(inbox, "renamed.png.tmp")
	write(t, tmp, newImage("renamed.png"))
	if err := os.Rename(tmp, filepath.Join(inbox, "renamed.png")); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
	}

	done := filepath.Join(inbox, "done")
	sensortest.WaitFor(t, 10*time.Second, "30 files in done/", func() bool { return len(files(t, done)) == 30 })
	time.Sleep(300 * time.Millisecond) // time enough for a second delivery

	frames := sink.Frames()
	if len(frames) != 30 {
		t.Fatalf("got %d frames for 30 files", len(frames))
	}
	seen := map[string]bool{}
	for i, f := range frames {
		if seen[f.Source] {
			t.Errorf("%s was delivered twice", f.Source)
		}
		seen[f.Source] = true
		if f.Seq != uint64(i+1) || f.Sensor != "inbox" {
			t.Errorf("frame %d: sensor %q seq %d", i, f.Sensor, f.Seq)
		}
		if rgb, ok := want[f.Source]; !ok || !bytes.Equal(f.RGB, rgb) || f.Width*f.Height*3 != len(rgb) {
			t.Errorf("frame %d from %s does not hold that file's pixels", i, f.Source)
		}
	}
	var first []string
	for _, f := range frames[:10] {
		first = append(first, f.Source)
	}
	if !slices.Equal(first, before) {
		t.Errorf("the files there before the start came as\n%v\nwant them first, in name order:\n%v", first, before)
	}
	if !frames[0].Time.Equal(mtime) {
		t.Errorf("frame time = %v, want the file's modification time %v", frames[0].Time, mtime)
	}
	if left := files(t, inbox); len(left) != 0 {
		t.Errorf("files left in the inbox: %v", left)
	}
	if bad := sink.BadInputs(); len(bad) != 0 {
		t.Errorf("bad inputs: %v", bad)
	}
}

// writeSlowly writes data to path in n chunks with a pause between them.
func writeSlowly(path string, data []byte, n int, pause time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	chunk := (len(data) + n - 1) / n
	for len(data) > 0 {
		k := min(chunk, len(data))
		if _, err := f.Write(data[:k]); err != nil {
			f.Close()
			return err
		}
		data = data[k:]
		time.Sleep(pause)
	}
	return f.Close()
}

func TestBadFilesGoToFailedUnmatchedOnesAreReportedOnceAndOthersAreIgnored(t *testing.T) {
	inbox := t.TempDir()
	sink := &sensortest.Sink{OnFrame: finishWith(nil)}
	good, _ := sensortest.PNG(t, 16, 16, 1)
	write(t, filepath.Join(inbox, "there-before.txt"), good) // found by the first listing
	start(t, inbox, `settle = "50ms"`, sink)

	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, image.NewGray(image.Rect(0, 0, 64, 64)), nil); err != nil {
		t.Fatal(err)
	}
	var gifData bytes.Buffer
	if err := gif.Encode(&gifData, image.NewGray(image.Rect(0, 0, 16, 16)), nil); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"x.jpg":         []byte("this is text, not a picture"),
		"empty.png":     nil,
		"truncated.jpg": jpg.Bytes()[:jpg.Len()/2],
	}
	for name, data := range bad {
		write(t, filepath.Join(inbox, name), data)
	}
	write(t, filepath.Join(inbox, "still.GIF"), gifData.Bytes()) // a default pattern, any case
	ignored := []string{".hidden.png", "photo.png.part", "photo.png.tmp"}
	for _, name := range ignored {
		write(t, filepath.Join(inbox, name), good)
	}
	unmatched := []string{"notes.txt", "there-before.txt"}
	write(t, filepath.Join(inbox, "notes.txt"), good)
	write(t, filepath.Join(inbox, "notes.txt"), good) // written again: still one report
	if err := os.Mkdir(filepath.Join(inbox, "folder.png"), 0o755); err != nil {
		t.Fatal(err)
	}

	failed := filepath.Join(inbox, "failed")
	sensortest.WaitFor(t, 5*time.Second, "3 files in failed/ and the GIF in done/", func() bool {
		return len(files(t, failed)) == 3 && len(files(t, filepath.Join(inbox, "done"))) == 1
	})
	time.Sleep(200 * time.Millisecond) // time enough to (wrongly) take or report the others

	if got, want := files(t, failed), []string{"empty.png", "truncated.jpg", "x.jpg"}; !slices.Equal(got, want) {
		t.Errorf("failed/ holds %v, want %v", got, want)
	}
	if got := files(t, filepath.Join(inbox, "done")); !slices.Equal(got, []string{"still.GIF"}) || len(sink.Frames()) != 1 {
		t.Errorf("done/ holds %v and %d frames came, want the GIF's", got, len(sink.Frames()))
	}
	reports := map[string][]error{}
	for _, b := range sink.BadInputs() {
		reports[b.Source] = append(reports[b.Source], b.Err)
	}
	for name := range bad {
		if errs := reports[filepath.Join(inbox, name)]; len(errs) != 1 || !errors.Is(errs[0], sensors.ErrBadImage) {
			t.Errorf("BadInput for %s = %v, want one bad image error", name, errs)
		}
	}
	for _, name := range unmatched {
		errs := reports[filepath.Join(inbox, name)]
		if len(errs) != 1 || !errors.Is(errs[0], errUnmatched) || !strings.Contains(errs[0].Error(), "*.webp") {
			t.Errorf("BadInput for %s = %v, want one report naming the patterns", name, errs)
		}
	}
	if len(reports) != len(bad)+len(unmatched) {
		t.Errorf("bad inputs reported for %d files, want %d: %v", len(reports), len(bad)+len(unmatched), reports)
	}
	want := append(slices.Clone(ignored), unmatched...)
	slices.Sort(want)
	if got := files(t, inbox); !slices.Equal(got, want) {
		t.Errorf("inbox holds %v, want the ignored and unmatched files %v untouched", got, want)
	}

	// Removed and dropped again, an unmatched file is a new one: reported again.
	if err := os.Remove(filepath.Join(inbox, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	write(t, filepath.Join(inbox, "notes.txt"), good)
	sensortest.WaitFor(t, 5*time.Second, "notes.txt reported again", func() bool {
		return len(sink.BadInputs()) == len(bad)+len(unmatched)+1
	})
}

func TestFileIsMovedToFailedWhenAPipelineFails(t *testing.T) {
	inbox := t.TempDir()
	failed := filepath.Join(t.TempDir(), "elsewhere")
	sink := &sensortest.Sink{OnFrame: finishWith(errors.New("model crashed"))}
	start(t, inbox, fmt.Sprintf("settle = \"50ms\"\nfailed_dir = %q", failed), sink)
	data, _ := sensortest.PNG(t, 16, 16, 1)
	write(t, filepath.Join(inbox, "a.png"), data)
	sensortest.WaitFor(t, 5*time.Second, "a.png in failed_dir", func() bool { return slices.Equal(files(t, failed), []string{"a.png"}) })
	if len(sink.Frames()) != 1 || len(sink.BadInputs()) != 0 {
		t.Errorf("got %d frames and %d bad inputs, want 1 and 0", len(sink.Frames()), len(sink.BadInputs()))
	}
}

func TestAFileNotProcessedBecauseTheDaemonStoppedStaysInPlace(t *testing.T) {
	inbox := t.TempDir()
	sink := &sensortest.Sink{OnFrame: finishWith(fmt.Errorf("stopping: %w", sensors.ErrUnfinished))}
	start(t, inbox, `settle = "50ms"`, sink)
	data, _ := sensortest.PNG(t, 16, 16, 1)
	write(t, filepath.Join(inbox, "a.png"), data)
	sensortest.WaitFor(t, 5*time.Second, "a.png delivered", func() bool { return len(sink.Frames()) == 1 })
	time.Sleep(200 * time.Millisecond) // time enough to (wrongly) move it
	if _, err := os.Stat(filepath.Join(inbox, "a.png")); err != nil {
		t.Fatalf("a.png left the inbox: %v", err)
	}
	if len(files(t, filepath.Join(inbox, "failed"))) != 0 || len(files(t, filepath.Join(inbox, "done"))) != 0 {
		t.Fatal("a.png was moved")
	}
}

func TestReusedNamesAreNewFilesAndNeverOverwriteDone(t *testing.T) {
	inbox := t.TempDir()
	done := filepath.Join(inbox, "done")
	if err := os.Mkdir(done, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(done, "a.png"), []byte("from yesterday"))
	sink := &sensortest.Sink{OnFrame: finishWith(nil)}
	start(t, inbox, `settle = "50ms"`, sink)

	var pixels [][]byte
	for i := range 2 {
		data, rgb := sensortest.PNG(t, 16, 16, i)
		pixels = append(pixels, rgb)
		write(t, filepath.Join(inbox, "a.png"), data)
		sensortest.WaitFor(t, 5*time.Second, "a.png moved out", func() bool { return len(files(t, done)) == 2+i })
	}
	if got, want := files(t, done), []string{"a-1.png", "a-2.png", "a.png"}; !slices.Equal(got, want) {
		t.Errorf("done/ holds %v, want %v", got, want)
	}
	if old, _ := os.ReadFile(filepath.Join(done, "a.png")); string(old) != "from yesterday" {
		t.Errorf("done/a.png was overwritten")
	}
	frames := sink.Frames()
	if len(frames) != 2 || !bytes.Equal(frames[0].RGB, pixels[0]) || !bytes.Equal(frames[1].RGB, pixels[1]) {
		t.Errorf("got %d frames, want the two files' pixels in order", len(frames))
	}
}

func TestFileInFlightIsNotProcessedAgain(t *testing.T) {
	inbox := t.TempDir()
	sink := &sensortest.Sink{} // holds frames without finishing them
	start(t, inbox, `settle = "30ms"`, sink)
	data, _ := sensortest.PNG(t, 16, 16, 1)
	path := filepath.Join(inbox, "a.png")
	write(t, path, data)
	sensortest.WaitFor(t, 5*time.Second, "a frame", func() bool { return len(sink.Frames()) == 1 })

	write(t, path, data) // written again while the pipelines hold it
	time.Sleep(200 * time.Millisecond)
	if n := len(sink.Frames()); n != 1 {
		t.Fatalf("a file in flight was delivered %d times", n)
	}
	sink.Frames()[0].Finish(nil)
	done := filepath.Join(inbox, "done")
	sensortest.WaitFor(t, 5*time.Second, "a.png in done/", func() bool { return slices.Equal(files(t, done), []string{"a.png"}) })
	time.Sleep(100 * time.Millisecond)
	if n := len(sink.Frames()); n != 1 {
		t.Fatalf("got %d frames after the file moved out, want 1", n)
	}
}

func TestOnDoneMovesTheFileAfterRunReturned(t *testing.T) {
	inbox := t.TempDir()
	sink := &sensortest.Sink{}
	stop := start(t, inbox, `settle = "30ms"`, sink)
	data, _ := sensortest.PNG(t, 16, 16, 1)
	write(t, filepath.Join(inbox, "a.png"), data)
	sensortest.WaitFor(t, 5*time.Second, "a frame", func() bool { return len(sink.Frames()) == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	sink.Frames()[0].Finish(nil)
	if got := files(t, filepath.Join(inbox, "done")); !slices.Equal(got, []string{"a.png"}) {
		t.Errorf("done/ holds %v after a late Finish, want a.png", got)
	}
}

func TestRunFailsWhenTheFolderIsRemoved(t *testing.T) {
	inbox := filepath.Join(t.TempDir(), "inbox")
	if err := os.Mkdir(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := New(sensortest.Env("inbox"), sensortest.Decoder(fmt.Sprintf("path = %q", inbox)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	sink := &sensortest.Sink{}
	go func() { done <- s.Run(t.Context(), sink) }()
	sensortest.WaitFor(t, 5*time.Second, "done/", func() bool {
		_, err := os.Stat(filepath.Join(inbox, "done"))
		return err == nil
	})
	time.Sleep(50 * time.Millisecond) // let Run start watching
	if err := os.RemoveAll(inbox); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), inbox) {
			t.Fatalf("Run = %v, want an error naming the folder", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on after its folder was removed")
	}
}
