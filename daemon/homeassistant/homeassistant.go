// Package homeassistant makes edgeinferd's pipelines appear in Home
// Assistant by MQTT discovery, with no YAML on the Home Assistant side.
//
// Each pipeline gets a small retained state topic, <prefix>/<pipeline>/state,
// published when what it says changes (State): the last label, the object
// count, the labels present, the class shares. Home Assistant's entities
// read it with plain templates, and being retained it is there at once when
// Home Assistant starts. Per pipeline, by its model's task:
//
//	classify, video   sensor "label" (the top label; video: the last clip's)
//	detect            sensor "objects" (count), sensor "label" (the best detection's)
//	segment           sensor "label" (the largest class), sensor "<class> share" (%) per present class
//	embed, siamese    sensor "identity" ("unknown" for a stranger)
//	every task        binary_sensor "<class>" per class in [pipelines.<name>.homeassistant] present,
//	                  camera "snapshot" when the pipeline publishes snapshots
//
// Every entity belongs to one device (the edgeinferd instance) and is
// available while <prefix>/status says online. Discovery is published again
// when Home Assistant announces "online" on <discovery prefix>/status, and
// the configs of pipelines that went away are removed (empty retained
// payloads).
package homeassistant

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Bus is the part of the MQTT connection the announcer uses.
type Bus interface {
	Publish(topic string, retain bool, payload []byte)
}

// Pipeline is what discovery needs to know of one pipeline.
type Pipeline struct {
	Name     string
	Task     string   // the task of its model ("" when not known yet: a label sensor only)
	Present  []string // labels that get a binary_sensor "present"
	Snapshot bool     // it publishes <prefix>/<pipeline>/snapshot
}

// Options say where the announcer publishes.
type Options struct {
	Discovery string                 // the discovery prefix ("homeassistant")
	Device    string                 // edgeinferd's device id
	Version   string                 // edgeinferd's version, the device's sw_version
	Topic     func(...string) string // edgeinferd's topic under its prefix
}

// Message is one retained discovery message.
type Message struct {
	Topic   string
	Payload []byte // empty: remove the entity
}

// Announcer publishes discovery and the pipelines' states. It is safe for
// concurrent use.
type Announcer struct {
	opt Options
	bus Bus

	mu        sync.Mutex
	pipelines []Pipeline
	announced map[string]bool   // discovery topics published, to remove what goes away
	states    map[string]string // pipeline -> last state published (JSON)
}

// New makes an announcer; nothing is published before Announce.
func New(opt Options, bus Bus) *Announcer {
	return &Announcer{opt: opt, bus: bus, announced: map[string]bool{}, states: map[string]string{}}
}

// StatusTopic is Home Assistant's birth and will topic.
func (a *Announcer) StatusTopic() string { return a.opt.Discovery + "/status" }

// Announce publishes the discovery of pipelines (retained) and removes the
// entities of the pipelines no longer there.
func (a *Announcer) Announce(pipelines []Pipeline) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pipelines = slices.Clone(pipelines)
	a.announce()
}

// HomeAssistantStatus handles a message on StatusTopic: when Home
// Assistant comes online it has lost what it knew, so discovery and the
// states are published again.
func (a *Announcer) HomeAssistantStatus(payload []byte) {
	if strings.TrimSpace(string(payload)) == "online" {
		a.Republish()
	}
}

// Republish publishes discovery and the states again: after edgeinferd
// reconnects, in case the broker lost its retained messages.
func (a *Announcer) Republish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.announce()
	for _, p := range slices.Sorted(maps.Keys(a.states)) {
		a.bus.Publish(a.opt.Topic(p, "state"), true, []byte(a.states[p]))
	}
}

func (a *Announcer) announce() {
	now := map[string]bool{}
	for _, m := range Discovery(a.opt, a.pipelines) {
		now[m.Topic] = true
		a.bus.Publish(m.Topic, true, m.Payload)
	}
	for _, t := range slices.Sorted(maps.Keys(a.announced)) {
		if !now[t] {
			a.bus.Publish(t, true, nil)
		}
	}
	a.announced = now
}

// Result publishes pipeline's state from a result's output when it changed.
func (a *Announcer) Result(pipeline, task string, output json.RawMessage) error {
	st, ok, err := StateOf(task, output)
	if err != nil || !ok {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.states[pipeline] == string(b) {
		return nil
	}
	a.states[pipeline] = string(b)
	a.bus.Publish(a.opt.Topic(pipeline, "state"), true, b)
	return nil
}

// Forget drops a removed pipeline's state and clears its retained topic.
func (a *Announcer) Forget(pipeline string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.states[pipeline]; ok {
		delete(a.states, pipeline)
		a.bus.Publish(a.opt.Topic(pipeline, "state"), true, nil)
	}
}

// State is what <prefix>/<pipeline>/state holds.
type State struct {
	Task    string             `json:"task"`
	Label   string             `json:"label"`           // see the package comment; "" when there is none
	Score   *float64           `json:"score,omitempty"` // the label's score (classify, video, detect)
	Count   int                `json:"count"`           // detect: objects; segment: classes with pixels; others: 1 with a label
	Present []string           `json:"present"`         // the labels seen in the result, sorted
	Share   map[string]float64 `json:"share,omitempty"` // segment: each class's share of the frame
}

// StateOf reads a result's output. ok is false when the result says
// nothing new: a video frame that closed no clip.
func StateOf(task string, output json.RawMessage) (st State, ok bool, err error) {
	st = State{Task: task, Present: []string{}}
	type scored struct {
		Label string  `json:"label"`
		Score float64 `json:"score"`
	}
	switch manifest.Plugin(task) {
	case "classify":
		var o struct{ Top []scored }
		if err := json.Unmarshal(output, &o); err != nil {
			return st, false, fmt.Errorf("classify output: %w", err)
		}
		if len(o.Top) > 0 {
			st.Label, st.Score, st.Count, st.Present = o.Top[0].Label, &o.Top[0].Score, 1, []string{o.Top[0].Label}
		}
	case "video":
		var o struct{ Clip *scored }
		if err := json.Unmarshal(output, &o); err != nil {
			return st, false, fmt.Errorf("video output: %w", err)
		}
		if o.Clip == nil {
			return st, false, nil
		}
		st.Label, st.Score, st.Count, st.Present = o.Clip.Label, &o.Clip.Score, 1, []string{o.Clip.Label}
	case "detect":
		st.Task = "detect"
		var o struct{ Detections []scored }
		if err := json.Unmarshal(output, &o); err != nil {
			return st, false, fmt.Errorf("detect output: %w", err)
		}
		st.Count = len(o.Detections)
		for _, d := range o.Detections {
			if st.Score == nil || d.Score > *st.Score {
				st.Label, st.Score = d.Label, &d.Score
			}
			st.Present = append(st.Present, d.Label)
		}
	case "segment":
		var o struct {
			Classes []struct {
				Label string  `json:"label"`
				Share float64 `json:"share"`
			}
		}
		if err := json.Unmarshal(output, &o); err != nil {
			return st, false, fmt.Errorf("segment output: %w", err)
		}
		st.Count, st.Share = len(o.Classes), map[string]float64{}
		best := -1.0
		for _, c := range o.Classes {
			st.Share[c.Label] = c.Share
			st.Present = append(st.Present, c.Label)
			if c.Share > best {
				st.Label, best = c.Label, c.Share
			}
		}
	case "embed", "siamese":
		st.Task = "embed"
		var o struct{ Identity *string }
		if err := json.Unmarshal(output, &o); err != nil {
			return st, false, fmt.Errorf("embed output: %w", err)
		}
		st.Label, st.Count = "unknown", 1
		if o.Identity != nil {
			st.Label = *o.Identity
			st.Present = []string{*o.Identity}
		}
	default:
		return st, false, fmt.Errorf("task %q has no Home Assistant state", task)
	}
	slices.Sort(st.Present)
	st.Present = slices.Compact(st.Present)
	return st, true, nil
}

// Discovery returns the discovery messages of pipelines, in topic order.
func Discovery(o Options, pipelines []Pipeline) []Message {
	device := map[string]any{
		"identifiers":  []string{"edgeinfer_" + id(o.Device)},
		"name":         "edgeinfer " + o.Device,
		"manufacturer": "edgeinfer",
		"model":        "edgeinferd",
		"sw_version":   o.Version,
	}
	var out []Message
	add := func(component, pipeline, object string, fields map[string]any) {
		uid := fmt.Sprintf("edgeinfer_%s_%s_%s", id(o.Device), id(pipeline), id(object))
		cfg := map[string]any{
			"unique_id":             uid,
			"default_entity_id":     component + "." + uid,
			"device":                device,
			"availability_topic":    o.Topic("status"),
			"payload_available":     "online",
			"payload_not_available": "offline",
			"origin":                map[string]string{"name": "edgeinfer", "sw": o.Version},
		}
		maps.Copy(cfg, fields)
		b, _ := json.Marshal(cfg) // maps of strings and numbers always encode
		out = append(out, Message{Topic: fmt.Sprintf("%s/%s/edgeinfer_%s/%s_%s/config", o.Discovery, component, id(o.Device), id(pipeline), id(object)), Payload: b})
	}
	for _, p := range pipelines {
		state := o.Topic(p.Name, "state")
		sensor := func(object, name, template string, extra map[string]any) {
			f := map[string]any{"name": p.Name + " " + name, "state_topic": state, "value_template": template,
				"json_attributes_topic": state}
			maps.Copy(f, extra)
			add("sensor", p.Name, object, f)
		}
		switch manifest.Plugin(p.Task) {
		case "detect":
			sensor("objects", "objects", "{{ value_json.count }}", map[string]any{"state_class": "measurement", "unit_of_measurement": "objects", "icon": "mdi:target"})
			sensor("label", "label", "{{ value_json.label }}", map[string]any{"icon": "mdi:label"})
		case "segment":
			sensor("label", "label", "{{ value_json.label }}", map[string]any{"icon": "mdi:label"})
			for _, c := range p.Present {
				sensor("share_"+c, c+" share", fmt.Sprintf("{{ ((value_json.share[%s] | default(0)) * 100) | round(1) }}", quote(c)),
					map[string]any{"state_class": "measurement", "unit_of_measurement": "%", "icon": "mdi:chart-pie"})
			}
		case "embed", "siamese":
			sensor("identity", "identity", "{{ value_json.label }}", map[string]any{"icon": "mdi:face-recognition"})
		default: // classify, video, or not known yet
			sensor("label", "label", "{{ value_json.label }}", map[string]any{"icon": "mdi:label"})
		}
		for _, c := range p.Present {
			add("binary_sensor", p.Name, "present_"+c, map[string]any{
				"name": p.Name + " " + c, "state_topic": state, "json_attributes_topic": state,
				"value_template": fmt.Sprintf("{{ 'ON' if %s in value_json.present else 'OFF' }}", quote(c)),
				"device_class":   "occupancy",
			})
		}
		if p.Snapshot {
			add("camera", p.Name, "snapshot", map[string]any{"name": p.Name + " snapshot", "topic": o.Topic(p.Name, "snapshot")})
		}
	}
	slices.SortFunc(out, func(a, b Message) int { return strings.Compare(a.Topic, b.Topic) })
	return out
}

var notID = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// id turns a name into what discovery topics and unique ids allow.
func id(s string) string { return notID.ReplaceAllString(s, "_") }

// quote writes s as a Jinja string literal.
func quote(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a valid Jinja string literal
	return string(b)
}
