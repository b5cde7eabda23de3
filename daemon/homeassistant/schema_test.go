package homeassistant

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The discovery payloads checked against Home Assistant's MQTT discovery
// schema (issue 12). testdata/ha_discovery_schema.json transcribes the
// voluptuous schemas Home Assistant validates a single-component discovery
// payload with, and names the file and commit each part comes from; the
// checker below applies it the way Home Assistant does: abbreviations
// expanded first, then every key looked up in the component's schema.
// Home Assistant's DISCOVERY_SCHEMA drops keys it does not know without a
// word, so the checker rejects them: a key Home Assistant ignores is a bug
// nobody would ever see reported.

type haKind struct {
	Kind   string `json:"kind"`
	Values []any  `json:"values"` // enum
	Enum   string `json:"enum"`   // enum_or_null: a list in enums
}

type haObject struct {
	Keys     map[string]haKind `json:"keys"`
	Required []string          `json:"required"`
}

type haSchema struct {
	DiscoveryTopic string                       `json:"discovery_topic"`
	Groups         map[string]map[string]haKind `json:"groups"`
	Exclusive      [][]string                   `json:"exclusive"`
	Components     map[string]struct {
		Groups                []string          `json:"groups"`
		Keys                  map[string]haKind `json:"keys"`
		Required              []string          `json:"required"`
		EntityCategoryRefused []string          `json:"entity_category_refused"`
	} `json:"components"`
	Removed            map[string]string `json:"removed"`
	RequiredWithDevice []string          `json:"required_with_device"`
	Device             struct {
		Keys               map[string]haKind `json:"keys"`
		RequireOneOf       []string          `json:"require_one_of"`
		RequiredWhenShared []string          `json:"required_when_shared"`
	} `json:"device"`
	Origin                haObject                                           `json:"origin"`
	AvailabilityItem      haObject                                           `json:"availability_item"`
	Enums                 map[string][]string                                `json:"enums"`
	StateClassUnits       map[string][]string                                `json:"state_class_units"`
	JSONAttributesBlocked map[string]any                                     `json:"json_attributes_blocked"`
	Abbreviations         struct{ Entity, Device, Origin map[string]string } `json:"abbreviations"`
}

func loadHASchema(t *testing.T) *haSchema {
	t.Helper()
	b, err := os.ReadFile("testdata/ha_discovery_schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s haSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("ha_discovery_schema.json: %v", err)
	}
	// The schema file itself: every group and enum it names is there.
	for name, c := range s.Components {
		for _, g := range c.Groups {
			if s.Groups[g] == nil {
				t.Fatalf("schema: %s names group %q, which is not there", name, g)
			}
		}
		for k, spec := range c.Keys {
			if spec.Kind == "enum_or_null" && s.Enums[spec.Enum] == nil {
				t.Fatalf("schema: %s.%s names enum %q, which is not there", name, k, spec.Enum)
			}
		}
	}
	return &s
}

// keys returns the keys component accepts.
func (s *haSchema) keys(component string) map[string]haKind {
	c := s.Components[component]
	all := map[string]haKind{}
	for _, g := range c.Groups {
		maps.Copy(all, s.Groups[g])
	}
	maps.Copy(all, c.Keys)
	return all
}

// decodeObject decodes a JSON object keeping numbers as json.Number, so
// that an integer can be told from a string.
func decodeObject(payload []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return m, nil
}

// expand replaces abbreviations as discovery.py's _replace_abbreviations
// does; a key given both abbreviated and in full is an error (Home
// Assistant keeps one of them silently).
func expand(m map[string]any, abbr map[string]string, path string, errs *[]string) {
	for _, short := range slices.Sorted(maps.Keys(m)) {
		long, ok := abbr[short]
		if !ok || long == short {
			continue
		}
		if _, both := m[long]; both {
			*errs = append(*errs, fmt.Sprintf("%s%s: given both as %q and as %q", path, long, short, long))
		}
		m[long] = m[short]
		delete(m, short)
	}
}

// check returns what Home Assistant's discovery schema for component finds
// wrong with payload, and the payload with its abbreviations expanded.
func (s *haSchema) check(component string, payload []byte) (map[string]any, []string) {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if _, ok := s.Components[component]; !ok {
		bad("component %q is not in the schema", component)
		return nil, errs
	}
	cfg, err := decodeObject(payload)
	if err != nil {
		bad("payload: %v", err)
		return nil, errs
	}
	// discovery.py: the top level, then origin, device and each
	// availability item.
	expand(cfg, s.Abbreviations.Entity, "", &errs)
	if o, ok := cfg["origin"].(map[string]any); ok {
		expand(o, s.Abbreviations.Origin, "origin.", &errs)
	}
	if d, ok := cfg["device"].(map[string]any); ok {
		expand(d, s.Abbreviations.Device, "device.", &errs)
	}
	av, ok := cfg["availability"].([]any)
	if !ok && cfg["availability"] != nil {
		av = []any{cfg["availability"]} // cv.ensure_list
	}
	for i, a := range av {
		if a, ok := a.(map[string]any); ok {
			expand(a, s.Abbreviations.Entity, fmt.Sprintf("availability[%d].", i), &errs)
		}
	}

	accepted := s.keys(component)
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		spec, ok := accepted[k]
		switch {
		case !ok && s.Removed[k] != "":
			bad("%s: %s", k, s.Removed[k])
		case !ok:
			bad("%s: not a key Home Assistant's %s discovery schema accepts (it would drop it)", k, component)
		default:
			errs = append(errs, s.checkValue(component, k, spec, cfg[k])...)
		}
	}
	c := s.Components[component]
	for _, k := range c.Required {
		if _, ok := cfg[k]; !ok {
			bad("%s: required by Home Assistant's %s discovery schema, missing", k, component)
		}
	}
	for _, ex := range s.Exclusive {
		var given []string
		for _, k := range ex {
			if _, ok := cfg[k]; ok {
				given = append(given, k)
			}
		}
		if len(given) > 1 {
			bad("%s: only one of them may be given", strings.Join(given, ", "))
		}
	}
	if cat, ok := cfg["entity_category"].(string); ok && slices.Contains(c.EntityCategoryRefused, cat) {
		bad("entity_category: a %s with entity category %q is refused when Home Assistant adds it", component, cat)
	}
	if _, ok := cfg["device"]; ok {
		for _, k := range s.RequiredWithDevice {
			if _, ok := cfg[k]; !ok {
				bad("%s: missing, and without it the entity is not tied to its device", k)
			}
		}
	}
	if component == "sensor" {
		errs = append(errs, s.checkSensor(cfg)...)
	}
	return cfg, errs
}

// checkSensor is sensor.py's validate_sensor_state_and_device_class_config.
func (s *haSchema) checkSensor(cfg map[string]any) []string {
	var errs []string
	stateClass, _ := cfg["state_class"].(string)
	unit, hasUnit := cfg["unit_of_measurement"].(string)
	if _, ok := cfg["last_reset_value_template"]; ok && stateClass != "total" {
		errs = append(errs, fmt.Sprintf("last_reset_value_template: only with state_class total, not %q", stateClass))
	}
	if _, ok := cfg["options"]; ok {
		if stateClass != "" || hasUnit {
			errs = append(errs, "options: not with state_class or unit_of_measurement")
		}
		if cfg["device_class"] != "enum" {
			errs = append(errs, "options: only with device_class enum")
		}
	}
	if units, ok := s.StateClassUnits[stateClass]; ok && !slices.Contains(units, unit) {
		errs = append(errs, fmt.Sprintf("unit_of_measurement: %q does not go with state_class %s (%v)", unit, stateClass, units))
	}
	return errs
}

// checkObject checks a nested mapping: device, origin, an availability item.
func (s *haSchema) checkObject(component, path string, keys map[string]haKind, required []string, v any) (map[string]any, []string) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, []string{fmt.Sprintf("%s: %v is not a mapping", path, v)}
	}
	var errs []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		spec, ok := keys[k]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s.%s: not a key Home Assistant accepts there", path, k))
			continue
		}
		errs = append(errs, s.checkValue(component, path+"."+k, spec, m[k])...)
	}
	for _, k := range required {
		if _, ok := m[k]; !ok {
			errs = append(errs, fmt.Sprintf("%s.%s: required, missing", path, k))
		}
	}
	return m, errs
}

var (
	hasAlnum = regexp.MustCompile(`[a-z0-9]`)
	isInt    = regexp.MustCompile(`^[0-9]+$`)
)

func (s *haSchema) checkValue(component, path string, spec haKind, v any) []string {
	str, isStr := v.(string)
	fail := func(format string, a ...any) []string { return []string{path + ": " + fmt.Sprintf(format, a...)} }
	switch spec.Kind {
	case "string":
		if !isStr {
			return fail("%v is not a string", v)
		}
	case "string_or_null":
		if v != nil && !isStr {
			return fail("%v is neither a string nor null", v)
		}
	case "template":
		// cv.template takes a string and compiles it: the Jinja2 test
		// below compiles every template of the payloads.
		if !isStr || strings.TrimSpace(str) == "" {
			return fail("%v is not a template string", v)
		}
	case "subscribe_topic":
		if !isStr {
			return fail("%v is not a topic string", v)
		}
		if err := validTopicName(str); err != nil {
			return fail("%q: %v", str, err)
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			return fail("%v is not a boolean", v)
		}
	case "positive_int":
		if n, ok := v.(json.Number); !ok || !isInt.MatchString(n.String()) {
			return fail("%v is not an integer >= 0", v)
		}
	case "enum":
		for _, want := range spec.Values {
			if sameScalar(want, v) {
				return nil
			}
		}
		return fail("%v is not one of %v", v, spec.Values)
	case "enum_or_null":
		if v == nil || isStr && slices.Contains(s.Enums[spec.Enum], str) {
			return nil
		}
		return fail("%v is not a valid %s", v, spec.Enum)
	case "icon":
		if !isStr || !strings.Contains(str, ":") {
			return fail("%v is not an icon of the form prefix:name", v)
		}
	case "url", "configuration_url":
		schemes := []string{"http", "https"}
		if spec.Kind == "configuration_url" {
			schemes = append(schemes, "homeassistant")
		}
		u, err := url.Parse(str)
		if !isStr || err != nil || !slices.Contains(schemes, u.Scheme) {
			return fail("%v is not a %v URL", v, schemes)
		}
	case "list":
		if v == nil {
			return fail("null is not a list")
		}
	case "list_of_strings": // cv.ensure_list, then [cv.string]
		if isStr {
			return nil
		}
		l, ok := v.([]any)
		if !ok {
			return fail("%v is neither a string nor a list of strings", v)
		}
		for i, e := range l {
			if _, ok := e.(string); !ok {
				return fail("[%d] %v is not a string", i, e)
			}
		}
	case "connections":
		l, ok := v.([]any)
		if !ok {
			return fail("%v is not a list of [type, id] pairs", v)
		}
		for i, e := range l {
			p, ok := e.([]any)
			if !ok || len(p) != 2 {
				return fail("[%d] %v is not a [type, id] pair", i, e)
			}
			for _, x := range p {
				if _, ok := x.(string); !ok {
					return fail("[%d] %v is not a pair of strings", i, e)
				}
			}
		}
	case "entity_id":
		// entity.py keeps what follows the first '.', slugified, as the
		// object id of <component>.<object id>.
		domain, object, ok := strings.Cut(str, ".")
		if !isStr || !ok {
			return fail("%v is not <domain>.<object id>", v)
		}
		if domain != component {
			return fail("%q names domain %q on a %s", str, domain, component)
		}
		if !hasAlnum.MatchString(strings.ToLower(object)) {
			return fail("%q has an object id that slugifies to nothing", str)
		}
	case "device":
		d, errs := s.checkObject(component, path, s.Device.Keys, s.Device.RequiredWhenShared, v)
		if d == nil {
			return errs
		}
		if !slices.ContainsFunc(s.Device.RequireOneOf, func(k string) bool { return nonEmpty(d[k]) }) {
			errs = append(errs, fmt.Sprintf("%s: needs at least one of %v", path, s.Device.RequireOneOf))
		}
		return errs
	case "origin":
		_, errs := s.checkObject(component, path, s.Origin.Keys, s.Origin.Required, v)
		return errs
	case "availability_list":
		l, ok := v.([]any)
		if !ok {
			l = []any{v} // cv.ensure_list
		}
		var errs []string
		for i, a := range l {
			_, e := s.checkObject(component, fmt.Sprintf("%s[%d]", path, i), s.AvailabilityItem.Keys, s.AvailabilityItem.Required, a)
			errs = append(errs, e...)
		}
		return errs
	default:
		return fail("the schema names kind %q, which the checker does not know", spec.Kind)
	}
	return nil
}

func sameScalar(want, got any) bool {
	switch want.(type) {
	case float64: // a number in the schema file
		n, ok := got.(json.Number)
		return ok && n.String() == fmt.Sprint(want)
	default:
		return want == got
	}
}

func nonEmpty(v any) bool {
	switch v := v.(type) {
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	}
	return false
}

// validTopicName is util.py's valid_topic, and stricter than
// valid_subscribe_topic: no wildcard at all, since edgeinferd publishes
// to every topic it announces.
func validTopicName(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("empty")
	case len(t) > 65535:
		return fmt.Errorf("longer than 65535 bytes")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("has a wildcard")
	}
	for _, r := range t {
		switch {
		case r <= 0x1f || 0x7f <= r && r <= 0x9f:
			return fmt.Errorf("has a control character")
		case 0xfdd0 <= r && r <= 0xfdef || r&0xffff >= 0xfffe:
			return fmt.Errorf("has a non-character")
		}
	}
	return nil
}

// schemaPipelines are pipelines of every task, on one device.
var schemaPipelines = []Pipeline{
	{Name: "digits", Task: "classify"},
	{Name: "porch", Task: "detect", Present: []string{"person", "car"}, Snapshot: true},
	{Name: "yolo", Task: "detect_yolo", Present: []string{"dog"}},
	{Name: "rcnn", Task: "detect_rcnn"},
	{Name: "rows", Task: "detect_rows"},
	{Name: "anchorfree", Task: "detect_anchorfree"},
	{Name: "yard", Task: "segment", Present: []string{"person", "grass lawn"}, Snapshot: true},
	{Name: "door", Task: "embed", Present: []string{"alice", "bob"}},
	{Name: "gate", Task: "siamese"},
	{Name: "motion", Task: "video", Snapshot: true},
	{Name: "new", Task: ""},                                             // its model's task not known yet
	{Name: "odd", Task: "nonsense"},                                     // a task the announcer does not know: the label sensor
	{Name: "Front Door-2", Task: "detect", Present: []string{"Person"}}, // names that need id()
}

type announced struct {
	topic, component string
	payload          []byte
	cfg              map[string]any // abbreviations expanded
}

func TestEveryDiscoveryPayloadIsOneHomeAssistantsSchemaAccepts(t *testing.T) {
	s := loadHASchema(t)
	topicRE := regexp.MustCompile(s.DiscoveryTopic)
	msgs := Discovery(opt, schemaPipelines)
	var all []announced
	for _, m := range msgs {
		rest, ok := strings.CutPrefix(m.Topic, opt.Discovery+"/")
		match := topicRE.FindStringSubmatch(rest)
		if !ok || match == nil {
			t.Fatalf("%s: not <discovery prefix>/<component>/[<node_id>/]<object_id>/config", m.Topic)
		}
		component := match[topicRE.SubexpIndex("component")]
		cfg, errs := s.check(component, m.Payload)
		for _, e := range errs {
			t.Errorf("%s: %s", m.Topic, e)
		}
		all = append(all, announced{m.Topic, component, m.Payload, cfg})
	}
	if t.Failed() {
		t.FailNow()
	}

	seen := map[string]int{}
	for _, a := range all {
		seen[a.component]++
	}
	for c := range s.Components {
		if seen[c] == 0 {
			t.Errorf("no %s was announced: its schema went unchecked", c)
		}
	}

	// What edgeinferd means by the payloads, beyond what Home Assistant
	// checks: every entity of the one device, available while edgeinferd's
	// status says online, told apart by unique_id, default_entity_id and
	// discovery topic.
	first := all[0].cfg
	ids := map[string]string{}
	for _, a := range all {
		c := a.cfg
		for _, k := range []string{"unique_id", "default_entity_id"} {
			v := c[k].(string)
			if other, dup := ids[k+" "+v]; dup {
				t.Errorf("%s and %s share %s %q", other, a.topic, k, v)
			}
			ids[k+" "+v] = a.topic
		}
		if !reflect.DeepEqual(c["device"], first["device"]) || !reflect.DeepEqual(c["origin"], first["origin"]) {
			t.Errorf("%s: device %v origin %v, the first payload's are %v %v", a.topic, c["device"], c["origin"], first["device"], first["origin"])
		}
		if c["availability_topic"] != opt.Topic("status") || c["payload_available"] != "online" || c["payload_not_available"] != "offline" {
			t.Errorf("%s: availability %v %v/%v, edgeinferd publishes online/offline (retained, and as its will) on %s",
				a.topic, c["availability_topic"], c["payload_available"], c["payload_not_available"], opt.Topic("status"))
		}
		if c["default_entity_id"] != a.component+"."+c["unique_id"].(string) {
			t.Errorf("%s: default_entity_id %v, unique_id %v", a.topic, c["default_entity_id"], c["unique_id"])
		}
		if dc, ok := c["device_class"]; ok && a.component == "binary_sensor" && dc != "occupancy" {
			t.Errorf("%s: device_class %v", a.topic, dc)
		}
	}
	topics := map[string]bool{}
	for _, m := range msgs {
		if topics[m.Topic] {
			t.Errorf("%s: announced twice, the second config replaces the first", m.Topic)
		}
		topics[m.Topic] = true
	}

	// The state is every entity's json_attributes_topic: none of its keys
	// may be one Home Assistant drops from the attributes.
	blocked := map[string][]string{}
	for k, v := range s.JSONAttributesBlocked {
		if l, ok := v.([]any); ok {
			for _, e := range l {
				blocked[k] = append(blocked[k], e.(string))
			}
		}
	}
	score := 0.5
	b, _ := json.Marshal(State{Task: "segment", Label: "x", Score: &score, Count: 1, Present: []string{"x"}, Share: map[string]float64{"x": 1}})
	state, _ := decodeObject(b)
	for _, a := range all {
		if _, ok := a.cfg["json_attributes_topic"]; !ok {
			continue
		}
		for k := range state {
			if slices.Contains(blocked["all"], k) || slices.Contains(blocked[a.component], k) {
				t.Errorf("%s: the state's %q would not become an attribute", a.topic, k)
			}
		}
	}
}

// The checker rejects what Home Assistant would reject or drop: each case
// mutates a real payload.
func TestTheSchemaCheckRejectsAPayloadHomeAssistantWouldNotTakeAsIs(t *testing.T) {
	s := loadHASchema(t)
	payloads := map[string][]byte{}
	for _, m := range Discovery(opt, []Pipeline{{Name: "porch", Task: "detect", Present: []string{"person"}, Snapshot: true}}) {
		payloads[strings.Split(m.Topic, "/")[1]] = m.Payload
	}
	cases := []struct {
		name      string
		component string
		mutate    func(map[string]any)
		want      string // in an error; "" means accepted
	}{
		{"as announced", "sensor", func(map[string]any) {}, ""},
		{"an unknown key", "sensor", func(c map[string]any) { c["state_topik"] = c["state_topic"] }, "state_topik: not a key"},
		{"a key of another component", "sensor", func(c map[string]any) { c["payload_on"] = "ON" }, "payload_on: not a key"},
		{"no state_topic", "sensor", func(c map[string]any) { delete(c, "state_topic") }, "state_topic: required"},
		{"a camera without topic", "camera", func(c map[string]any) { delete(c, "topic") }, "topic: required"},
		{"a camera with a state_topic", "camera", func(c map[string]any) { c["state_topic"] = "a/b" }, "state_topic: not a key"},
		{"abbreviated keys", "sensor", func(c map[string]any) {
			c["stat_t"], c["uniq_id"], c["dev"] = c["state_topic"], c["unique_id"], c["device"]
			delete(c, "state_topic")
			delete(c, "unique_id")
			delete(c, "device")
		}, ""},
		{"a key both abbreviated and not", "sensor", func(c map[string]any) { c["stat_t"] = "other/state" }, "given both"},
		{"object_id", "sensor", func(c map[string]any) { c["obj_id"] = "x" }, "object_id: deprecated"},
		{"an unknown binary_sensor device_class", "binary_sensor", func(c map[string]any) { c["device_class"] = "occupied" }, "not a valid binary_sensor_device_class"},
		{"another binary_sensor device_class", "binary_sensor", func(c map[string]any) { c["device_class"] = "presence" }, ""},
		{"an unknown state_class", "sensor", func(c map[string]any) { c["state_class"] = "measurements" }, "not a valid sensor_state_class"},
		{"measurement_angle in objects", "sensor", func(c map[string]any) { c["state_class"] = "measurement_angle" }, "does not go with state_class"},
		{"a numeric unit", "sensor", func(c map[string]any) { c["unit_of_measurement"] = 5 }, "unit_of_measurement: 5 is neither"},
		{"a template that is no string", "sensor", func(c map[string]any) { c["value_template"] = []any{"x"} }, "not a template string"},
		{"a wildcard state topic", "sensor", func(c map[string]any) { c["state_topic"] = "edgeinfer/+/state" }, "has a wildcard"},
		{"an empty topic", "camera", func(c map[string]any) { c["topic"] = "" }, "empty"},
		{"availability twice", "sensor", func(c map[string]any) { c["availability"] = []any{map[string]any{"t": "x/status"}} }, "only one of them"},
		{"an availability list", "sensor", func(c map[string]any) {
			c["availability"] = []any{map[string]any{"t": c["availability_topic"], "pl_avail": "online"}}
			delete(c, "availability_topic")
		}, ""},
		{"an availability item without topic", "sensor", func(c map[string]any) {
			c["availability"] = map[string]any{"payload_available": "up"}
			delete(c, "availability_topic")
		}, "availability[0].topic: required"},
		{"origin without name", "sensor", func(c map[string]any) { c["origin"] = map[string]any{"sw": "1"} }, "origin.name: required"},
		{"origin with a device key", "sensor", func(c map[string]any) { c["origin"].(map[string]any)["model"] = "x" }, "origin.model: not a key"},
		{"origin in full", "sensor", func(c map[string]any) {
			c["o"] = map[string]any{"name": "edgeinfer", "sw_version": "1", "url": "https://example.com/help"}
			delete(c, "origin")
		}, ""},
		{"a device without identifiers", "sensor", func(c map[string]any) { delete(c["device"].(map[string]any), "identifiers") }, "needs at least one of"},
		{"a device identified by connections", "sensor", func(c map[string]any) {
			d := c["device"].(map[string]any)
			delete(d, "identifiers")
			d["cns"] = []any{[]any{"mac", "02:00:00:00:00:01"}}
		}, ""},
		{"a device without name", "sensor", func(c map[string]any) { delete(c["device"].(map[string]any), "name") }, "device.name: required"},
		{"a device connection that is no pair", "sensor", func(c map[string]any) { c["device"].(map[string]any)["connections"] = []any{[]any{"mac"}} }, "not a [type, id] pair"},
		{"a device without unique_id", "sensor", func(c map[string]any) { delete(c, "unique_id") }, "unique_id: missing"},
		{"default_entity_id of another domain", "sensor", func(c map[string]any) { c["default_entity_id"] = "binary_sensor.x" }, `names domain "binary_sensor"`},
		{"default_entity_id without domain", "sensor", func(c map[string]any) { c["default_entity_id"] = "x" }, "not <domain>.<object id>"},
		{"an icon without prefix", "sensor", func(c map[string]any) { c["icon"] = "target" }, "prefix:name"},
		{"a config entity_category", "binary_sensor", func(c map[string]any) { c["entity_category"] = "config" }, "refused when Home Assistant adds it"},
		{"a diagnostic entity_category", "binary_sensor", func(c map[string]any) { c["entity_category"] = "diagnostic" }, ""},
		{"a string qos (HA would coerce it, the check wants the kind exact)", "sensor", func(c map[string]any) { c["qos"] = "1" }, "qos: 1 is not one of"},
		{"a qos", "sensor", func(c map[string]any) { c["qos"] = 1 }, ""},
		{"options on a measurement", "sensor", func(c map[string]any) { c["options"] = []any{"a"} }, "options: not with state_class"},
		{"a list payload", "sensor", nil, "payload:"},
	}
	for _, tc := range cases {
		var payload []byte
		if tc.mutate == nil {
			payload = []byte(`["not", "an", "object"]`)
		} else {
			cfg, err := decodeObject(payloads[tc.component])
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(cfg)
			payload, _ = json.Marshal(cfg)
		}
		_, errs := s.check(tc.component, payload)
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: rejected: %v", tc.name, errs)
		case tc.want != "" && !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }):
			t.Errorf("%s: errors %q, want one saying %q", tc.name, errs, tc.want)
		}
	}
}

// Home Assistant compiles every template of a discovery payload (cv.template)
// and rejects the payload when one does not compile.
func TestEveryTemplateOfTheDiscoveryPayloadsCompiles(t *testing.T) {
	s := loadHASchema(t)
	var templates, where []string
	for _, m := range Discovery(opt, schemaPipelines) {
		component := strings.Split(m.Topic, "/")[1]
		cfg, _ := s.check(component, m.Payload)
		keys := s.keys(component)
		for _, k := range slices.Sorted(maps.Keys(cfg)) {
			if keys[k].Kind == "template" {
				templates, where = append(templates, cfg[k].(string)), append(where, m.Topic+" "+k)
			}
		}
	}
	broken := "{{ value_json.label "
	templates, where = append(templates, broken), append(where, "a broken template")
	errs := compileTemplates(t, templates)
	for i, e := range errs[:len(errs)-1] {
		if e != "" {
			t.Errorf("%s: %q does not compile: %s", where[i], templates[i], e)
		}
	}
	if errs[len(errs)-1] == "" {
		t.Errorf("%q compiled: the check checks nothing", broken)
	}
}

// compileTemplates compiles each template with Jinja2 (testdata/compile_templates.py).
func compileTemplates(t *testing.T, templates []string) []string {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	b, _ := json.Marshal(templates)
	in := filepath.Join(t.TempDir(), "templates.json")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, "testdata/compile_templates.py", in)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("compile_templates.py: %v\n%s", err, stderr.String())
	}
	var errs []string
	if err := json.Unmarshal(out, &errs); err != nil || len(errs) != len(templates) {
		t.Fatalf("compile_templates.py gave %s (%v)", out, err)
	}
	return errs
}
