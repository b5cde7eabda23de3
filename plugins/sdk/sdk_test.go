package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as a plugin: started with EDGEINFER_SDK_TEST=1 it
// serves echoTask instead of running the tests.
func TestMain(m *testing.M) {
	if os.Getenv("EDGEINFER_SDK_TEST") == "1" {
		Serve(&echoTask{})
		return
	}
	os.Exit(m.Run())
}

// echoTask returns a digest of the pixels it saw, refuses frames with a
// zero width and dies on seq 999.
type echoTask struct{ model string }

func (e *echoTask) Load(_ context.Context, req LoadRequest) (ModelInfo, error) {
	if req.Model == "broken" {
		return ModelInfo{}, fmt.Errorf("model %s: cannot load", req.ModelDir)
	}
	e.model = req.Model
	return ModelInfo{Task: "echo", Signature: "serving_default", InputShape: []int64{-1, 4, 4, 3}, Labels: 2}, nil
}

func (e *echoTask) Infer(_ context.Context, f Frame) (Result, error) {
	if f.Seq == 999 {
		os.Exit(3)
	}
	if f.Width == 0 || len(f.RGB) != f.Width*f.Height*3 {
		return Result{}, fmt.Errorf("%w: %dx%d with %d bytes", ErrBadFrame, f.Width, f.Height, len(f.RGB))
	}
	sum := sha256.Sum256(f.RGB)
	out, _ := json.Marshal(map[string]any{"model": e.model, "seq": f.Seq, "sha256": hex.EncodeToString(sum[:])})
	return Result{Output: out, Timings: Timings{Inference: 1234}}, nil
}

func startEcho(t *testing.T, copyPixels bool) *Plugin {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Options{Path: exe, Env: []string{"EDGEINFER_SDK_TEST=1"}, CopyPixels: copyPixels, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if _, err := p.Load(context.Background(), LoadRequest{Model: "m", ModelDir: "/models/m/1"}); err != nil {
		t.Fatal(err)
	}
	return p
}

func frame(seq uint64, w, h int) Frame {
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(i*7 + int(seq))
	}
	return Frame{Seq: seq, Width: w, Height: h, RGB: rgb}
}

func TestPixelsReachThePluginIntactThroughSharedMemoryAndInline(t *testing.T) {
	for _, copyPixels := range []bool{false, true} {
		t.Run(fmt.Sprintf("copy=%v", copyPixels), func(t *testing.T) {
			p := startEcho(t, copyPixels)
			// Growing sizes make the shared buffer grow and the plugin re-map it.
			for i, size := range [][2]int{{4, 4}, {640, 480}, {32, 32}, {1920, 1080}, {640, 480}} {
				f := frame(uint64(i+1), size[0], size[1])
				res, err := p.Infer(context.Background(), f)
				if err != nil {
					t.Fatal(err)
				}
				var out struct {
					Model  string
					Seq    uint64
					SHA256 string
				}
				if err := json.Unmarshal(res.Output, &out); err != nil {
					t.Fatal(err)
				}
				want := sha256.Sum256(f.RGB)
				if out.SHA256 != hex.EncodeToString(want[:]) || out.Seq != f.Seq || out.Model != "m" {
					t.Fatalf("frame %d (%dx%d): plugin saw %+v", i, size[0], size[1], out)
				}
				if res.Timings.Inference != 1234 {
					t.Fatalf("timings did not travel: %+v", res.Timings)
				}
			}
		})
	}
}

func TestErrorsKeepTheirKind(t *testing.T) {
	p := startEcho(t, false)
	_, err := p.Infer(context.Background(), Frame{Seq: 1, Width: 0, Height: 5, RGB: []byte{1, 2, 3}})
	if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), "0x5 with 3 bytes") {
		t.Fatalf("bad frame: got %v", err)
	}
	if _, err := p.Load(context.Background(), LoadRequest{Model: "broken", ModelDir: "/models/broken/1"}); err == nil || !strings.Contains(err.Error(), "/models/broken/1: cannot load") {
		t.Fatalf("load error: got %v", err)
	}
	if p.Exited() {
		t.Fatal("the plugin died on an ordinary error")
	}
	// The plugin still serves after both errors.
	if _, err := p.Infer(context.Background(), frame(2, 8, 8)); err != nil {
		t.Fatal(err)
	}
}

func TestADeadPluginIsReportedAsExited(t *testing.T) {
	for name, kill := range map[string]func(p *Plugin){
		"crash":   func(p *Plugin) { p.Infer(context.Background(), frame(999, 4, 4)) },
		"sigkill": func(p *Plugin) { syscall.Kill(p.Pid(), syscall.SIGKILL) },
	} {
		t.Run(name, func(t *testing.T) {
			p := startEcho(t, false)
			if p.Pid() <= 0 {
				t.Fatalf("pid %d", p.Pid())
			}
			kill(p)
			_, err := p.Infer(context.Background(), frame(5, 4, 4))
			if !errors.Is(err, ErrPluginExited) {
				t.Fatalf("got %v, want ErrPluginExited", err)
			}
			if !p.Exited() {
				t.Fatal("Exited() is false")
			}
		})
	}
}

func TestKillRemovesTheSharedBuffer(t *testing.T) {
	p := startEcho(t, false)
	if _, err := p.Infer(context.Background(), frame(1, 64, 64)); err != nil {
		t.Fatal(err)
	}
	path := p.shm.path
	if _, err := os.Stat(path); err != nil || filepath.Dir(path) != shmDir() {
		t.Fatalf("shared buffer %q: %v", path, err)
	}
	p.Kill()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("shared buffer %s left behind: %v", path, err)
	}
}

func TestAPluginWithAnotherProtocolVersionIsRefused(t *testing.T) {
	exe, _ := os.Executable()
	old := Handshake.ProtocolVersion
	Handshake.ProtocolVersion = old + 1
	defer func() { Handshake.ProtocolVersion = old }()
	p, err := Start(Options{Path: exe, Env: []string{"EDGEINFER_SDK_TEST=1"}})
	if err == nil {
		p.Kill()
		t.Fatal("a plugin speaking another protocol version was accepted")
	}
	if !strings.Contains(err.Error(), "version") {
		t.Fatalf("error does not say why: %v", err)
	}
}
