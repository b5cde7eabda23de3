package identify

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeCommand(t *testing.T) {
	img := pngBytes(t, uniform(4, colorRGBA(255, 0, 0)))
	b64 := base64.StdEncoding.EncodeToString(img)
	for _, tc := range []struct {
		name, json string
		want       Command
		wantErr    string
	}{
		{name: "enrol decodes its base64 image", json: `{"command":"enrol","name":"alice","image":"` + b64 + `"}`,
			want: Command{Command: "enrol", Name: "alice", Image: img}},
		{name: "name_cluster", json: `{"command":"name_cluster","cluster":12,"name":"bob"}`,
			want: Command{Command: "name_cluster", Name: "bob", Cluster: 12}},
		{name: "forget", json: `{"command":"forget","name":"alice"}`, want: Command{Command: "forget", Name: "alice"}},

		{name: "not an object", json: `["enrol"]`, wantErr: "command: not a JSON object"},
		{name: "not JSON", json: `{"command":`, wantErr: "command: not a JSON object"},
		{name: "no command", json: `{"name":"alice"}`, wantErr: `field "command" is missing`},
		{name: "a command that is not a string", json: `{"command":3}`, wantErr: `field "command": is 3, must be a string`},
		{name: "an unknown command", json: `{"command":"delete","name":"alice"}`, wantErr: `field "command" is "delete", must be one of enrol, name_cluster, forget`},
		{name: "a field the command does not take", json: `{"command":"forget","name":"alice","cluster":3}`, wantErr: `command forget: unknown field "cluster" (it takes name)`},
		{name: "a misspelt field", json: `{"command":"enrol","nmae":"alice","image":"` + b64 + `"}`, wantErr: `command enrol: unknown field "nmae"`},
		{name: "a missing name", json: `{"command":"forget"}`, wantErr: `command forget: field "name" is missing`},
		{name: "a name that is not a string", json: `{"command":"forget","name":7}`, wantErr: `command forget: field "name": is 7, must be a string`},
		{name: "a null name", json: `{"command":"forget","name":null}`, wantErr: `field "name": is null, must be a string`},
		{name: "an invalid name", json: `{"command":"forget","name":"../etc"}`, wantErr: `command forget: field "name": identity name "../etc" starts with "."`},
		{name: "an empty name", json: `{"command":"name_cluster","cluster":1,"name":""}`, wantErr: `command name_cluster: field "name": identity name is empty`},
		{name: "a missing image", json: `{"command":"enrol","name":"alice"}`, wantErr: `command enrol: field "image" is missing`},
		{name: "an image that is not base64", json: `{"command":"enrol","name":"alice","image":"**"}`, wantErr: `command enrol: field "image": not base64`},
		{name: "an image that is not a string", json: `{"command":"enrol","name":"alice","image":[1,2]}`, wantErr: `field "image": is [1,2], must be a base64 string`},
		{name: "an empty image", json: `{"command":"enrol","name":"alice","image":""}`, wantErr: `field "image": empty image`},
		{name: "an image that is not PNG or JPEG", json: `{"command":"enrol","name":"alice","image":"` + base64.StdEncoding.EncodeToString([]byte("GIF89a....")) + `"}`, wantErr: `field "image": not a PNG or JPEG image`},
		{name: "a missing cluster", json: `{"command":"name_cluster","name":"bob"}`, wantErr: `command name_cluster: field "cluster" is missing`},
		{name: "a cluster id of zero", json: `{"command":"name_cluster","cluster":0,"name":"bob"}`, wantErr: `field "cluster": is 0, must be a cluster id`},
		{name: "a fractional cluster id", json: `{"command":"name_cluster","cluster":1.5,"name":"bob"}`, wantErr: `field "cluster": is 1.5`},
		{name: "a cluster id as a string", json: `{"command":"name_cluster","cluster":"3","name":"bob"}`, wantErr: `field "cluster": is "3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCommand([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Command != tc.want.Command || c.Name != tc.want.Name || c.Cluster != tc.want.Cluster || string(c.Image) != string(tc.want.Image) {
				t.Errorf("%+v, want %+v", c, tc.want)
			}
		})
	}
}

func TestCommandsChangeTheIdentities(t *testing.T) {
	id := newTestIdentifier(t, Options{StateDir: t.TempDir(), Threshold: 0.3, ClusterThreshold: 0.3})
	if err := id.SetGallery(testGallery(t, map[string][][]float64{"gina": {{0, 0, 1}}}, nil, nil)); err != nil {
		t.Fatal(err)
	}
	red, green := uniform(4, colorRGBA(255, 0, 0)), uniform(4, colorRGBA(0, 255, 0))
	apply := func(js string) error {
		t.Helper()
		c, err := DecodeCommand([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		return id.Apply(c)
	}
	matches := func(img []float32, want string) {
		t.Helper()
		if m, err := id.Match(img, 1); err != nil || m.Name != want {
			t.Errorf("probe %v: %+v (%v), want %q", img, m, err, want)
		}
	}

	if err := apply(fmt.Sprintf(`{"command":"enrol","name":"alice","image":%q}`, base64.StdEncoding.EncodeToString(pngBytes(t, red)))); err != nil {
		t.Fatal(err)
	}
	matches(embedOf(t, red), "alice")

	if r := identify(t, id, green, true); r.Cluster.ID != 1 || r.Name != "" {
		t.Fatalf("green: %+v, want unknown in cluster 1", r)
	}
	matches(embedOf(t, green), "")
	if err := apply(`{"command":"name_cluster","cluster":1,"name":"bob"}`); err != nil {
		t.Fatal(err)
	}
	matches(embedOf(t, green), "bob")
	if len(id.Clusters()) != 0 {
		t.Errorf("cluster 1 still there after it was named: %+v", id.Clusters())
	}
	if err := apply(`{"command":"name_cluster","cluster":1,"name":"bob"}`); err == nil || !strings.Contains(err.Error(), "name_cluster 1: no such cluster") {
		t.Errorf("naming cluster 1 twice: %v", err)
	}

	if err := apply(`{"command":"forget","name":"alice"}`); err != nil {
		t.Fatal(err)
	}
	matches(embedOf(t, red), "")
	if err := apply(`{"command":"forget","name":"alice"}`); !errors.Is(err, ErrUnknownIdentity) || !strings.Contains(err.Error(), `forget "alice"`) {
		t.Errorf("forgetting alice twice: %v", err)
	}

	folder := filepath.Join("/gallery", "gina")
	err := apply(`{"command":"forget","name":"gina"}`)
	if !errors.Is(err, ErrInGallery) || !strings.Contains(err.Error(), "remove the folder "+folder) {
		t.Errorf("forgetting a gallery identity: %v, want ErrInGallery naming %s", err, folder)
	}
	matches([]float32{0, 0, 1}, "gina")

	// Runtime enrolments under a gallery name are forgotten; the folder
	// still has to go.
	if err := id.Enrol("gina", pngBytes(t, red)); err != nil {
		t.Fatal(err)
	}
	matches(embedOf(t, red), "gina")
	err = id.Forget("gina")
	if !errors.Is(err, ErrInGallery) || !strings.Contains(err.Error(), "its 1 runtime enrolments are forgotten") {
		t.Errorf("forgetting gina's runtime enrolment: %v", err)
	}
	matches(embedOf(t, red), "")
	matches([]float32{0, 0, 1}, "gina")
}

func TestEnrolRefusesWhatItCannotUse(t *testing.T) {
	id := newTestIdentifier(t, Options{})
	if _, err := id.Identify([]float32{1, 0, 0, 0}, nil, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, who string
		img       []byte
		want      string
	}{
		{"an invalid name", "a/b", pngBytes(t, uniform(4, colorRGBA(255, 0, 0))), "path separator"},
		{"bytes that are no image", "alice", []byte("nope"), `enrol "alice": cannot decode image`},
		{"an image the model turns into a zero vector", "alice", pngBytes(t, uniform(4, colorRGBA(0, 0, 0))), "no usable content"},
		{"an image the model refuses", "alice", pngBytes(t, uniform(1, colorRGBA(9, 9, 9))), "embedder: image too small"},
		{"an embedding of another length than the clusters'", "alice", pngBytes(t, uniform(4, colorRGBA(255, 0, 0))), "3 dimensions, the clusters 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := id.Enrol(tc.who, tc.img); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
