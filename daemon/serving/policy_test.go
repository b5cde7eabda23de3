package serving

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/repo"
)

func TestChoosePicksTheVersionThePolicyWants(t *testing.T) {
	broken := ver(4, "a")
	broken.Err = errors.New("variables still being copied")
	all := []repo.Version{broken, ver(3, "a"), ver(2, "a"), ver(1, "a")}
	tests := []struct {
		name     string
		versions []repo.Version
		want     string
		rejected map[string]string
		serve    string // "" when none fits
		why      string // part of why, when none fits
	}{
		{"latest is the highest servable version", all, Latest, nil, "3", ""},
		{"latest skips rejected versions", all, Latest, map[string]string{"3#a": "validation failed"}, "2", ""},
		{"a rejected version whose files changed is servable again", all, Latest, map[string]string{"3#b": "validation failed"}, "3", ""},
		{"latest with nothing servable says why", []repo.Version{broken}, Latest, nil, "", "version 4 cannot be served: variables still being copied"},
		{"latest with every version rejected says why", []repo.Version{ver(1, "a")}, Latest, map[string]string{"1#a": "bad"}, "", "version 1 was rejected: bad"},
		{"latest with no version", nil, Latest, nil, "", "no version in the repository (a version is taken once its files have not changed for models.settle)"},
		{"a pinned version serves though higher ones exist", all, "2", nil, "2", ""},
		{"a pinned version that is not servable is not replaced by another", all, "4", nil, "", "pinned version 4 cannot be served"},
		{"a pinned version that was rejected is not replaced by another", all, "2", map[string]string{"2#a": "bad"}, "", "pinned version 2 was rejected: bad"},
		{"a pinned version missing from the repository", all, "9", nil, "", "pinned version 9 is not in the repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok, why := choose(tt.versions, tt.want, tt.rejected)
			if ok != (tt.serve != "") || (ok && v.Version != tt.serve) {
				t.Fatalf("choose = %s, %v (%s); want %q", v.Version, ok, why, tt.serve)
			}
			if !strings.Contains(why, tt.why) || (tt.why == "" && why != "") {
				t.Errorf("why = %q, want %q", why, tt.why)
			}
		})
	}
}

func TestBelowIsTheNextLowerServableVersion(t *testing.T) {
	broken := ver(2, "a")
	broken.Err = errors.New("incomplete")
	all := []repo.Version{ver(4, "a"), ver(3, "a"), broken, ver(1, "a")}
	tests := []struct {
		name     string
		from     string
		rejected map[string]string
		want     string // "" when none
	}{
		{"the next lower version", "4", nil, "3"},
		{"skips a version that cannot be served", "3", nil, "1"},
		{"skips a rejected version", "4", map[string]string{"3#a": "bad"}, "1"},
		{"none below the lowest", "1", nil, ""},
		{"from a version that is no number", "x", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := below(all, tt.from, tt.rejected)
			if ok != (tt.want != "") || v.Version != tt.want {
				t.Errorf("below(%s) = %q, %v; want %q", tt.from, v.Version, ok, tt.want)
			}
		})
	}
}
