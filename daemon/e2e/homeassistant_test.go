package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// The trained shapes detector served by edgeinferd with [homeassistant]
// discovery on, a [homeassistant] present list and a snapshot table, over
// Mosquitto. Home Assistant would find one device with the pipeline's
// entities, all available while edgeinferd is online; once the held-out
// images are through, each entity's template, rendered by Jinja2 on the
// retained state, shows what the last result says (its object count, its
// best label, each class present or not); annotated JPEG snapshots of the
// frames come on the snapshot topic; and when Home Assistant announces
// itself online, discovery is published again.
func TestHomeAssistantFindsThePipelinesEntitiesAndTheyFollowTheResults(t *testing.T) {
	const n = 12
	_, pngs := heldOutShapes(t, 128, n)
	inbox := t.TempDir()
	prefix := prefixOf(t)
	classes := []string{"circle", "square", "triangle"}
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: models(t), extra: fmt.Sprintf(`
[homeassistant]
discovery = true
prefix = "%s/ha"
[pipelines.shapes]
sensor = "inbox"
model = "shapes_faster_rcnn"
[pipelines.shapes.options]
score_threshold = 0.5
[pipelines.shapes.homeassistant]
present = ["circle", "square", "triangle"]
[pipelines.shapes.snapshot]
interval = "1ms"
quality = 90
`, prefix)})
	w.serving(t, proc, "shapes_faster_rcnn", "shapes")

	configs := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		w.mu.Lock()
		msgs := slices.Clone(w.msgs)
		w.mu.Unlock()
		for _, m := range msgs {
			if !strings.HasPrefix(m.topic, "ha/") || !strings.HasSuffix(m.topic, "/config") {
				continue
			}
			var c map[string]any
			if err := json.Unmarshal(m.payload, &c); err != nil {
				t.Fatalf("%s: %v", m.topic, err)
			}
			out[m.topic] = c
		}
		return out
	}
	entity := func(component, object string) string {
		return fmt.Sprintf("ha/%s/edgeinfer_e2e/shapes_%s/config", component, object)
	}
	want := []string{entity("sensor", "objects"), entity("sensor", "label"), entity("camera", "snapshot")}
	for _, c := range classes {
		want = append(want, entity("binary_sensor", "present_"+c))
	}
	slices.Sort(want)
	waitFor(t, proc, 20*time.Second, "the discovery configs", func() bool { return len(configs()) == len(want) })
	cs := configs()
	for _, topic := range want {
		c := cs[topic]
		dev, _ := c["device"].(map[string]any)
		if c == nil || c["availability_topic"] != prefix+"/status" || dev == nil || dev["name"] != "edgeinfer e2e" {
			t.Fatalf("%s: %v", topic, c)
		}
	}
	if w.last("status") != "online" {
		t.Fatalf("status %q: the entities would be unavailable", w.last("status"))
	}

	dropImages(t, inbox, "shape-%02d.png", pngs)
	waitFor(t, proc, 60*time.Second, "a result per image", func() bool { return len(w.all("shapes/result")) == n })
	rs := w.results(t, "shapes")
	var last struct {
		Detections []struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
		} `json:"detections"`
	}
	if err := json.Unmarshal(rs[len(rs)-1].Output, &last); err != nil {
		t.Fatal(err)
	}
	expect := map[string]string{entity("sensor", "objects"): fmt.Sprint(len(last.Detections)), entity("sensor", "label"): ""}
	best := -1.0
	for _, d := range last.Detections {
		if d.Score > best {
			best, expect[entity("sensor", "label")] = d.Score, d.Label
		}
	}
	for _, c := range classes {
		on := "OFF"
		for _, d := range last.Detections {
			if d.Label == c {
				on = "ON"
			}
		}
		expect[entity("binary_sensor", "present_"+c)] = on
	}
	// The state follows the results in order: once the last result is out,
	// the last state is the one it set (states are only sent on a change).
	time.Sleep(200 * time.Millisecond)
	states := w.all("shapes/state")
	if len(states) == 0 || len(states) > n {
		t.Fatalf("%d states for %d results", len(states), n)
	}
	state := string(states[len(states)-1].payload)
	var templates, payloads, topics []string
	for _, topic := range slices.Sorted(func(yield func(string) bool) {
		for k := range expect {
			yield(k)
		}
	}) {
		c := cs[topic]
		if c["state_topic"] != prefix+"/shapes/state" {
			t.Fatalf("%s reads %v", topic, c["state_topic"])
		}
		templates, payloads, topics = append(templates, c["value_template"].(string)), append(payloads, state), append(topics, topic)
	}
	shown := renderTemplates(t, templates, payloads)
	for i, topic := range topics {
		t.Logf("%s shows %q", strings.TrimSuffix(strings.TrimPrefix(topic, "ha/"), "/config"), shown[i])
		if shown[i] != expect[topic] {
			t.Errorf("%s: Home Assistant would show %q, the last result says %q", topic, shown[i], expect[topic])
		}
	}

	snaps := w.all("shapes/snapshot")
	if len(snaps) == 0 || len(snaps) > n {
		t.Fatalf("%d snapshots for %d results", len(snaps), n)
	}
	for _, s := range snaps {
		img, err := jpeg.Decode(bytes.NewReader(s.payload))
		if err != nil || img.Bounds().Dx() != 128 || img.Bounds().Dy() != 128 {
			t.Fatalf("snapshot: %v", err)
		}
	}
	t.Logf("%d results, %d state changes, %d snapshots", n, len(states), len(snaps))

	before := len(w.all(want[0]))
	w.publish(t, prefix+"/ha/status", []byte("online"))
	waitFor(t, proc, 10*time.Second, "discovery published again", func() bool { return len(w.all(want[0])) > before })
}

// renderTemplates renders Home Assistant value templates with Jinja2, as
// daemon/homeassistant's tests do (its testdata/render.py).
func renderTemplates(t *testing.T, templates, payloads []string) []string {
	t.Helper()
	var reqs []map[string]string
	for i := range templates {
		reqs = append(reqs, map[string]string{"template": templates[i], "payload": payloads[i]})
	}
	var out []string
	if err := json.Unmarshal(script(t, "../../homeassistant/testdata/render.py", jsonFile(t, "templates.json", reqs)), &out); err != nil || len(out) != len(templates) {
		t.Fatalf("render.py: %v: %v", out, err)
	}
	return out
}
