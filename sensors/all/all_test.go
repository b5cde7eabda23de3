package all

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/sensors"
)

func TestEveryKindIsRegisteredWithASampleConfig(t *testing.T) {
	want := []string{"dir", "ffmpeg", "file", "mqtt", "synthetic"}
	if got := sensors.Kinds(); !slices.Equal(got, want) {
		t.Fatalf("Kinds() = %v, want %v", got, want)
	}
	for _, name := range want {
		k, _ := sensors.Lookup(name)
		if k.New == nil || !strings.Contains(k.SampleConfig, `kind = "`+name+`"`) {
			t.Errorf("kind %s: New set %v, sample config %q", name, k.New != nil, k.SampleConfig)
		}
	}
}
