package identify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"maps"
	"slices"
	"strings"
)

// Command is one command to the identifier, as the plugin receives it in
// JSON:
//
//	{"command": "enrol", "name": "alice", "image": "<base64 PNG or JPEG>"}
//	{"command": "name_cluster", "cluster": 12, "name": "bob"}
//	{"command": "forget", "name": "alice"}
type Command struct {
	Command string // enrol, name_cluster, forget
	Name    string
	Image   []byte // enrol
	Cluster int    // name_cluster
}

// The commands and the fields each takes besides "command".
var commandFields = map[string][]string{
	"enrol":        {"name", "image"},
	"name_cluster": {"cluster", "name"},
	"forget":       {"name"},
}

// envelope are the fields of the daemon's command topic that route a
// command (payload.Command: its id, the pipeline it is for); a command
// published there reaches the plugin whole, so they are allowed and
// ignored.
var envelope = map[string]bool{"id": true, "pipeline": true}

// DecodeCommand decodes and checks one command. Its errors name the field:
// a field missing, unknown to the command, of the wrong type, an invalid
// name, an image that is not base64 or not a PNG or JPEG, a cluster id
// that is not a whole number >= 1.
func DecodeCommand(data []byte) (Command, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return Command{}, fmt.Errorf("command: not a JSON object: %w", err)
	}
	var c Command
	raw, ok := fields["command"]
	if !ok {
		return Command{}, fmt.Errorf("command: field \"command\" is missing (enrol, name_cluster or forget)")
	}
	if err := decodeString(raw, &c.Command); err != nil {
		return Command{}, fmt.Errorf("command: field \"command\": %w", err)
	}
	want, ok := commandFields[c.Command]
	if !ok {
		return Command{}, fmt.Errorf("command: field \"command\" is %q, must be one of enrol, name_cluster, forget", c.Command)
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if k != "command" && !envelope[k] && !slices.Contains(want, k) {
			return Command{}, fmt.Errorf("command %s: unknown field %q (it takes %s)", c.Command, k, strings.Join(want, ", "))
		}
	}
	for _, k := range want {
		if _, ok := fields[k]; !ok {
			return Command{}, fmt.Errorf("command %s: field %q is missing", c.Command, k)
		}
		var err error
		switch k {
		case "name":
			if err = decodeString(fields[k], &c.Name); err == nil {
				err = ValidName(c.Name)
			}
		case "image":
			err = decodeImageField(fields[k], &c.Image)
		case "cluster":
			err = decodeClusterID(fields[k], &c.Cluster)
		}
		if err != nil {
			return Command{}, fmt.Errorf("command %s: field %q: %w", c.Command, k, err)
		}
	}
	return c, nil
}

// Apply runs c.
func (id *Identifier) Apply(c Command) error {
	switch c.Command {
	case "enrol":
		return id.Enrol(c.Name, c.Image)
	case "name_cluster":
		return id.NameCluster(c.Cluster, c.Name)
	case "forget":
		return id.Forget(c.Name)
	}
	return fmt.Errorf("command %q: unknown, must be one of enrol, name_cluster, forget", c.Command)
}

func decodeString(raw json.RawMessage, dst *string) error {
	if err := json.Unmarshal(raw, dst); err != nil || string(raw) == "null" {
		return fmt.Errorf("is %.40s, must be a string", raw)
	}
	return nil
}

func decodeImageField(raw json.RawMessage, dst *[]byte) error {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
		return fmt.Errorf("is %.20s, must be a base64 string", raw)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	if len(b) == 0 {
		return fmt.Errorf("empty image")
	}
	if _, _, err := image.DecodeConfig(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("not a PNG or JPEG image: %w", err)
	}
	*dst = b
	return nil
}

func decodeClusterID(raw json.RawMessage, dst *int) error {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || string(raw) == "null" {
		return fmt.Errorf("is %s, must be a cluster id (a whole number >= 1)", raw)
	}
	if f != float64(int(f)) || f < 1 || f > 1<<53 {
		return fmt.Errorf("is %s, must be a cluster id (a whole number >= 1)", raw)
	}
	*dst = int(f)
	return nil
}
