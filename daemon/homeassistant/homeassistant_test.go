package homeassistant

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is a Bus that keeps what was published.
type recorder struct {
	mu   sync.Mutex
	msgs []published
}

type published struct {
	topic   string
	retain  bool
	payload string
}

func (r *recorder) Publish(topic string, retain bool, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, published{topic, retain, string(payload)})
}

func (r *recorder) take() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

var opt = Options{Discovery: "homeassistant", Device: "porch cam", Version: "test",
	Topic: func(parts ...string) string { return "edgeinfer/porch/" + strings.Join(parts, "/") }}

// render renders each template on its payload with Jinja2 (testdata/render.py).
func render(t *testing.T, templates, payloads []string) []string {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	var reqs []map[string]string
	for i := range templates {
		reqs = append(reqs, map[string]string{"template": templates[i], "payload": payloads[i]})
	}
	b, _ := json.Marshal(reqs)
	in := filepath.Join(t.TempDir(), "templates.json")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, "testdata/render.py", in)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render.py: %v\n%s", err, stderr.String())
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(templates) {
		t.Fatalf("render.py gave %s (%v)", out, err)
	}
	return got
}

// The entities each task gets, and what Home Assistant shows for each when
// a result comes: the templates of the discovery configs rendered by
// Jinja2 on the state the announcer publishes for real plugin outputs.
func TestEntitiesShowWhatTheResultSaysWhenHomeAssistantRendersThem(t *testing.T) {
	cases := []struct {
		pipeline Pipeline
		output   string
		want     map[string]string // discovery topic's object -> rendered state
	}{
		{Pipeline{Name: "porch", Task: "detect", Present: []string{"person", "car"}, Snapshot: true},
			`{"detections": [{"label": "person", "class": 0, "score": 0.61, "box": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}},
			                 {"label": "dog", "class": 16, "score": 0.93, "box": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}},
			                 {"label": "person", "class": 0, "score": 0.5, "box": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}], "candidates": 41}`,
			map[string]string{"sensor/porch_objects": "3", "sensor/porch_label": "dog", "binary_sensor/porch_present_person": "ON", "binary_sensor/porch_present_car": "OFF"}},
		{Pipeline{Name: "porch", Task: "detect", Present: []string{"person"}},
			`{"detections": [], "candidates": 0}`,
			map[string]string{"sensor/porch_objects": "0", "sensor/porch_label": "", "binary_sensor/porch_present_person": "OFF"}},
		{Pipeline{Name: "yard", Task: "segment", Present: []string{"person", "grass lawn"}},
			`{"classes": [{"label": "person", "class": 1, "share": 0.3863, "pixels": 463},
			              {"label": "tree", "class": 2, "share": 0.5, "pixels": 600}], "alerts": [], "width": 40, "height": 30}`,
			map[string]string{"sensor/yard_label": "tree", "sensor/yard_share_person": "38.6", "sensor/yard_share_grass_lawn": "0",
				"binary_sensor/yard_present_person": "ON", "binary_sensor/yard_present_grass_lawn": "OFF"}},
		{Pipeline{Name: "digits", Task: "classify"},
			`{"top": [{"label": "7", "index": 7, "score": 0.98}, {"label": "9", "index": 9, "score": 0.01}]}`,
			map[string]string{"sensor/digits_label": "7"}},
		{Pipeline{Name: "door", Task: "embed", Present: []string{"alice"}},
			`{"identity": "alice", "distance": 0.3, "top": [], "dim": 128}`,
			map[string]string{"sensor/door_identity": "alice", "binary_sensor/door_present_alice": "ON"}},
		{Pipeline{Name: "door", Task: "embed", Present: []string{"alice"}},
			`{"identity": null, "distance": null, "top": [], "cluster": {"id": 3, "new": false}, "dim": 128}`,
			map[string]string{"sensor/door_identity": "unknown", "binary_sensor/door_present_alice": "OFF"}},
		{Pipeline{Name: "motion", Task: "video"},
			`{"features_computed": 24, "clip": {"label": "left", "class": 0, "score": 0.99, "top": [], "frames": [1], "length": 8}}`,
			map[string]string{"sensor/motion_label": "left"}},
	}
	var templates, payloads, keys []string
	for _, tc := range cases {
		bus := &recorder{}
		a := New(opt, bus)
		a.Announce([]Pipeline{tc.pipeline})
		configs := map[string]map[string]any{}
		for _, m := range bus.take() {
			if !m.retain {
				t.Fatalf("%s: discovery not retained", m.topic)
			}
			var c map[string]any
			if err := json.Unmarshal([]byte(m.payload), &c); err != nil {
				t.Fatalf("%s: %v", m.topic, err)
			}
			// homeassistant/<component>/edgeinfer_porch_cam/<object>/config
			parts := strings.Split(m.topic, "/")
			if len(parts) != 5 || parts[0] != "homeassistant" || parts[2] != "edgeinfer_porch_cam" || parts[4] != "config" {
				t.Fatalf("discovery topic %q", m.topic)
			}
			if c["availability_topic"] != "edgeinfer/porch/status" || c["unique_id"] != "edgeinfer_porch_cam_"+parts[3] ||
				c["default_entity_id"] != parts[1]+"."+c["unique_id"].(string) {
				t.Fatalf("%s: %v", m.topic, c)
			}
			configs[parts[1]+"/"+parts[3]] = c
		}
		wantKeys := slices.Sorted(func(yield func(string) bool) {
			for k := range tc.want {
				yield(k)
			}
			if tc.pipeline.Snapshot {
				yield("camera/porch_snapshot")
			}
		})
		gotKeys := slices.Sorted(func(yield func(string) bool) {
			for k := range configs {
				yield(k)
			}
		})
		if !slices.Equal(gotKeys, wantKeys) {
			t.Fatalf("%s (%s): entities %v, want %v", tc.pipeline.Name, tc.pipeline.Task, gotKeys, wantKeys)
		}
		if tc.pipeline.Snapshot && configs["camera/porch_snapshot"]["topic"] != "edgeinfer/porch/porch/snapshot" {
			t.Fatalf("camera: %v", configs["camera/porch_snapshot"])
		}

		if err := a.Result(tc.pipeline.Name, tc.pipeline.Task, json.RawMessage(tc.output)); err != nil {
			t.Fatal(err)
		}
		st := bus.take()
		if len(st) != 1 || st[0].topic != "edgeinfer/porch/"+tc.pipeline.Name+"/state" || !st[0].retain {
			t.Fatalf("state published: %+v", st)
		}
		for key, want := range tc.want {
			c := configs[key]
			if c["state_topic"] != st[0].topic {
				t.Fatalf("%s reads %v, the state is on %s", key, c["state_topic"], st[0].topic)
			}
			templates, payloads = append(templates, c["value_template"].(string)), append(payloads, st[0].payload)
			keys = append(keys, key+" = "+want)
		}
	}
	got := render(t, templates, payloads)
	for i, k := range keys {
		want := k[strings.Index(k, " = ")+3:]
		if got[i] != want {
			t.Errorf("%s: Home Assistant would show %q (template %s on %s)", k, got[i], templates[i], payloads[i])
		}
	}
}

func TestTheStateIsPublishedOnlyWhenItChangesAndAVideoFrameWithoutAClipChangesNothing(t *testing.T) {
	bus := &recorder{}
	a := New(opt, bus)
	det := func(labels ...string) json.RawMessage {
		var ds []map[string]any
		for _, l := range labels {
			ds = append(ds, map[string]any{"label": l, "score": 0.9})
		}
		b, _ := json.Marshal(map[string]any{"detections": ds})
		return b
	}
	for _, o := range []json.RawMessage{det("person"), det("person"), det("person", "car"), det("person", "car"), det()} {
		if err := a.Result("porch", "detect_yolo", o); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(bus.take()); n != 3 {
		t.Fatalf("%d states published for 3 changes", n)
	}
	if err := a.Result("motion", "video", json.RawMessage(`{"features_computed": 3, "buffered": 3}`)); err != nil {
		t.Fatal(err)
	}
	if n := len(bus.take()); n != 0 {
		t.Fatalf("a frame without a clip published %d states", n)
	}
	if err := a.Result("porch", "detect", json.RawMessage(`{"detections": 3}`)); err == nil {
		t.Fatal("a malformed output gave no error")
	}
	if err := a.Result("porch", "nonsense", json.RawMessage(`{}`)); err == nil || !strings.Contains(err.Error(), `"nonsense"`) {
		t.Fatalf("an unknown task: %v", err)
	}
}

func TestHomeAssistantComingOnlineGetsEverythingAgainAndRemovedPipelinesAreCleared(t *testing.T) {
	bus := &recorder{}
	a := New(opt, bus)
	a.Announce([]Pipeline{{Name: "porch", Task: "detect", Present: []string{"person"}}, {Name: "digits", Task: "classify"}})
	first := bus.take()
	if err := a.Result("digits", "classify", json.RawMessage(`{"top": [{"label": "7", "score": 0.9}]}`)); err != nil {
		t.Fatal(err)
	}
	bus.take()

	a.HomeAssistantStatus([]byte("offline"))
	if n := len(bus.take()); n != 0 {
		t.Fatalf("Home Assistant going offline made %d messages", n)
	}
	a.HomeAssistantStatus([]byte("online"))
	again := bus.take()
	if len(again) != len(first)+1 || !slices.Equal(again[:len(first)], first) || again[len(first)].topic != "edgeinfer/porch/digits/state" {
		t.Fatalf("after online: %d messages, want the %d discovery configs again and the state", len(again), len(first))
	}

	a.Announce([]Pipeline{{Name: "digits", Task: "classify"}})
	var removed []string
	for _, m := range bus.take() {
		if m.payload == "" {
			removed = append(removed, m.topic)
		}
	}
	if want := []string{
		"homeassistant/binary_sensor/edgeinfer_porch_cam/porch_present_person/config",
		"homeassistant/sensor/edgeinfer_porch_cam/porch_label/config",
		"homeassistant/sensor/edgeinfer_porch_cam/porch_objects/config",
	}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	a.Forget("digits")
	if m := bus.take(); len(m) != 1 || m[0].topic != "edgeinfer/porch/digits/state" || m[0].payload != "" || !m[0].retain {
		t.Fatalf("forgetting a pipeline: %+v", m)
	}
}
