package serving

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// byBinary lists the processes started from the binary with content.
func (h *harness) byBinary(content string) []*proc {
	var out []*proc
	for _, p := range h.allProcs() {
		if p.task.content == content {
			out = append(out, p)
		}
	}
	return out
}

func TestNewPluginBinaryIsSwappedInForTheSameVersion(t *testing.T) {
	for _, policy := range []string{Availability, Resource} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t)
			md := h.model("p")
			md.SetSettings(Settings{Policy: policy})
			old := h.serveFirst(md)

			h.writePlugin("bin-2")
			e := h.waitEvent(md, payload.EventPluginSwapped, "1", 1)
			nw := h.servingProc(md)
			if nw == old || nw.task.binary != h.cachePath("bin-2") {
				t.Fatalf("serving from %s, want %s", nw.task.binary, h.cachePath("bin-2"))
			}
			if v, _ := nw.task.loaded(); v != "1" {
				t.Errorf("the new binary loaded version %s, want 1", v)
			}
			if !strings.Contains(e.Message, "edgeinfer-classify@") {
				t.Errorf("event %q does not name the binary", e.Message)
			}
			if a := mustInfer(t, md, "p", "1"); a.Binary != "bin-2" {
				t.Errorf("answered by binary %s", a.Binary)
			}
			if vs := md.State().Versions["1"]; vs.Plugin != h.label("bin-2") {
				t.Errorf("plugin %s", vs.Plugin)
			}
			h.onlyAlive(md, nw)
		})
	}
}

func TestPluginBinaryThatFailsIsRejectedAndTheOldOneKeepsServing(t *testing.T) {
	tests := []struct {
		name   string
		script script
		reason string
	}{
		{"it does not start", script{startErr: errors.New("exec format error")}, "exec format error"},
		{"it cannot load the version", script{loadErr: errors.New("unknown op FusedConv")}, "unknown op FusedConv"},
		{"it does not reproduce the golden samples", script{validateErr: errors.New("max abs diff 0.2")}, "max abs diff 0.2"},
	}
	for _, policy := range []string{Availability, Resource} {
		for _, tt := range tests {
			t.Run(policy+"/"+tt.name, func(t *testing.T) {
				h := newHarness(t)
				h.setBinary("bin-2", tt.script)
				md := h.model("p")
				md.SetSettings(Settings{Policy: policy})
				old := h.serveFirst(md)

				h.writePlugin("bin-2")
				e := h.waitEvent(md, payload.EventPluginRejected, "1", 1)
				if !strings.Contains(e.Message, "plugin") || !strings.Contains(e.Message, tt.reason) {
					t.Errorf("rejection %q does not blame the binary", e.Message)
				}
				st := h.serving(md, "1")
				if st.Versions["1"].State != payload.StateServing {
					t.Errorf("version 1 is %s", st.Versions["1"].State)
				}
				cur := h.servingProc(md)
				if cur.task.binary != h.cachePath("bin-1") {
					t.Errorf("serving from %s, want the old binary", cur.task.binary)
				}
				if policy == Availability && cur != old {
					t.Error("the old process was replaced")
				}
				if a := mustInfer(t, md, "p", "1"); a.Binary != "bin-1" {
					t.Errorf("answered by binary %s", a.Binary)
				}

				cur.Crash()
				if p := h.restarted(md, cur); p.task.binary != h.cachePath("bin-1") {
					t.Errorf("restarted from %s, want the old binary's copy %s", p.task.binary, h.cachePath("bin-1"))
				}
				if a := mustInfer(t, md, "p", "1"); a.Binary != "bin-1" {
					t.Errorf("answered by binary %s after the restart", a.Binary)
				}
				if n := len(h.byBinary("bin-2")); n > 1 {
					t.Errorf("the rejected binary was started %d times", n)
				}
				h.onlyAlive(md, h.servingProc(md))

				h.setBinary("bin-3", script{})
				h.writePlugin("bin-3")
				h.waitEvent(md, payload.EventPluginSwapped, "1", 1)
				if a := mustInfer(t, md, "p", "1"); a.Binary != "bin-3" {
					t.Errorf("answered by binary %s after a good binary came", a.Binary)
				}
			})
		}
	}
}

// writeBinary writes dir/edgeinfer-classify with content and mtime.
func writeBinary(t *testing.T, dir, content string, mtime time.Time) {
	t.Helper()
	path := filepath.Join(dir, "edgeinfer-classify")
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestChangedPluginBinaryIsTakenOnlyOnceItHasSettled(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now()
	writeBinary(t, dir, "one", t0)
	b := newBinaries(dir, t.TempDir(), time.Second)
	first, err := b.forTask("classify")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at      time.Duration
		write   string // rewritten just before the poll
		changed bool
	}{
		{0, "", false},
		{100 * time.Millisecond, "two", false},    // seen changing
		{900 * time.Millisecond, "", false},       // not settled yet
		{1000 * time.Millisecond, "three", false}, // changed again: settles anew
		{1900 * time.Millisecond, "", false},
		{2000 * time.Millisecond, "", true},
		{3000 * time.Millisecond, "", false},
	}
	for i, s := range steps {
		if s.write != "" {
			writeBinary(t, dir, s.write, t0.Add(time.Duration(i+1)*time.Minute))
		}
		changed, errs := b.poll(t0.Add(s.at))
		if len(errs) > 0 || (len(changed) > 0) != s.changed {
			t.Fatalf("poll at %s: changed %v, errors %v; want changed %v", s.at, changed, errs, s.changed)
		}
	}
	cur, err := b.forTask("classify")
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []struct {
		b       binary
		content string
	}{{first, "one"}, {cur, "three"}} {
		data, err := os.ReadFile(bin.b.path)
		if err != nil || string(data) != bin.content {
			t.Errorf("cached copy %s: %q, %v; want %q", bin.b.path, data, err, bin.content)
		}
		if st, err := os.Stat(bin.b.path); err != nil || st.Mode().Perm()&0o100 == 0 {
			t.Errorf("cached copy %s is not executable: %v", bin.b.path, err)
		}
	}
}

func TestRejectedPluginBinaryFallsBackToTheOneThatServedLast(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now()
	writeBinary(t, dir, "good", t0)
	b := newBinaries(dir, t.TempDir(), 0)
	good, err := b.forTask("classify")
	if err != nil {
		t.Fatal(err)
	}
	b.served(good)
	writeBinary(t, dir, "bad", t0.Add(time.Minute))
	b.poll(t0)
	if changed, _ := b.poll(t0.Add(time.Second)); len(changed) != 1 {
		t.Fatalf("the new binary was not taken")
	}
	bad, _ := b.forTask("classify")
	b.reject(bad, "exec format error")
	if got, err := b.forTask("classify"); err != nil || got.fp != good.fp {
		t.Errorf("forTask after a rejection = %s, %v; want the good one", got.label(), err)
	}

	fresh := newBinaries(dir, t.TempDir(), 0)
	bad, _ = fresh.forTask("classify")
	fresh.reject(bad, "exec format error")
	if _, err := fresh.forTask("classify"); err == nil || !strings.Contains(err.Error(), "rejected: exec format error") {
		t.Errorf("forTask with only a rejected binary: %v", err)
	}
	if _, err := fresh.forTask("detect"); err == nil || !strings.Contains(err.Error(), `no plugin for task "detect"`) {
		t.Errorf("forTask without a binary: %v", err)
	}
}
