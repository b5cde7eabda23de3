package config

import (
	"slices"
	"testing"
)

// [models] confine is "auto" unless set; another value is refused naming
// its line and the values it may take; a change needs a restart.
func TestModelsConfineDefaultsToAutoAndTakesThreeValues(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	base := valid(repo, plugins, inbox)
	c, err := Parse("config.toml", base)
	if err != nil || c.Models.Confine != ConfineAuto {
		t.Fatalf("default: %q, %v", c.Models.Confine, err)
	}
	for _, mode := range []string{ConfineAuto, ConfineRequired, ConfineOff} {
		c, err := Parse("config.toml", after("[models]", `confine = "`+mode+`"`)(base))
		if err != nil || c.Models.Confine != mode {
			t.Errorf("%s: got %q, %v", mode, c.Models.Confine, err)
		}
	}
	refuses(t, base, []invalid{{"another value", after("[models]", `confine = "yes"`),
		`5: models.confine: "yes" must be "auto", "required" or "off"`}})
	off, err := Parse("config.toml", after("[models]", `confine = "off"`)(base))
	if err != nil {
		t.Fatal(err)
	}
	if ch := Diff(c, off); !slices.Equal(ch.Restart, []string{"models.confine"}) {
		t.Errorf("changing it: %+v, want a restart", ch)
	}
}
