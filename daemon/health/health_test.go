package health

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

func version(state string, pipelines ...string) payload.VersionState {
	return payload.VersionState{State: state, Pipelines: pipelines}
}

func TestEachPipelineIsServingStartingOrFailedAsItsModelServesIt(t *testing.T) {
	refused := version(payload.StateServing, "a")
	refused.Refused = map[string]string{"b": "top_k is 0, must be 1..10"}
	cases := []struct {
		name  string
		st    payload.ModelState
		state string
		why   string
	}{
		{"serving it", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{"1": version(payload.StateServing, "a", "b")}},
			Serving, ""},
		{"no state yet", payload.ModelState{}, Starting, "its model is not known yet"},
		{"versions not looked up yet", payload.ModelState{Model: "m"}, Starting, "model m is being looked up in the repository"},
		{"loading", payload.ModelState{Model: "m", Target: "2", Versions: map[string]payload.VersionState{"2": version(payload.StateLoading)}},
			Starting, "model m version 2 is loading"},
		{"validating the newest, an older one failed", payload.ModelState{Model: "m", Versions: map[string]payload.VersionState{
			"9": version(payload.StateFailed), "10": version(payload.StateValidating)}}, Starting, "model m version 10 is validating"},
		{"serving others, not its options yet", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{"1": version(payload.StateServing, "a")}},
			Starting, "model m version 1 is taking its options"},
		{"its process restarting", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{"1": version(payload.StateRestarting, "b")}},
			Starting, "model m version 1 is restarting"},
		{"its options refused", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{"1": refused}},
			Failed, "model m version 1 refused its options: top_k is 0, must be 1..10"},
		{"no servable version", payload.ModelState{Model: "m", Reason: "no complete version in models/m"}, Failed, "model m: no complete version in models/m"},
		{"its only version rejected", payload.ModelState{Model: "m", Versions: map[string]payload.VersionState{
			"1": {State: payload.StateFailed, Reason: "validation: logits differ by 0.3"}}}, Failed, "model m version 1 failed: validation: logits differ by 0.3"},
		{"its process keeps dying", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{
			"1": {State: payload.StateFailed, Reason: "restart failed: exit 2; next try in 8s", Pipelines: []string{"b"}}}},
			Failed, "model m version 1 failed: restart failed: exit 2; next try in 8s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := Pipelines(map[string]string{"b": "m"}, map[string]payload.ModelState{"m": c.st})
			if len(ps) != 1 || ps[0] != (Pipeline{Name: "b", Model: "m", State: c.state, Why: c.why}) {
				t.Fatalf("got %+v, want state %s, why %q", ps, c.state, c.why)
			}
		})
	}
}

// A model with no version yet whose files are still settling is on its
// way, not failed: a version copied in just before the start must not let
// start-up end without it. Once a version serves, a newer one settling
// changes nothing.
func TestAModelWhoseVersionIsSettlingIsStarting(t *testing.T) {
	none := payload.ModelState{Model: "m", Reason: "no version in the repository (a version is taken once its files have not changed for models.settle)"}
	serving := payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{"1": version(payload.StateServing, "b")}}
	for _, c := range []struct {
		name     string
		st       payload.ModelState
		settling []string
		want     Pipeline
	}{
		{"no version, none settling", none, nil, Pipeline{Name: "b", Model: "m", State: Failed, Why: "model m: " + none.Reason}},
		{"no version, two settling", none, []string{"2", "1"}, Pipeline{Name: "b", Model: "m", State: Starting,
			Why: "model m version 2: its files are settling (models.settle)"}},
		{"serving, a newer one settling", serving, []string{"2"}, Pipeline{Name: "b", Model: "m", State: Serving}},
	} {
		got := PipelinesSettling(map[string]string{"b": "m"}, map[string]payload.ModelState{"m": c.st}, map[string][]string{"m": c.settling})
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestStartUpIsOverWhenNoPipelineIsStillStarting(t *testing.T) {
	for _, c := range []struct {
		states []string
		ready  bool
	}{
		{nil, true},
		{[]string{Serving, Serving}, true},
		{[]string{Serving, Failed}, true},
		{[]string{Serving, Starting}, false},
		{[]string{Failed, Starting}, false},
	} {
		var ps []Pipeline
		for _, s := range c.states {
			ps = append(ps, Pipeline{State: s})
		}
		if got := Ready(ps); got != c.ready {
			t.Errorf("%v: ready %v, want %v", c.states, got, c.ready)
		}
	}
}

func TestAPipelineIsStuckOnlyWhenAFrameOutstaysItsBoundInThePlugin(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	got := StuckPipelines(now, []Dispatch{
		{Pipeline: "idle", Bound: time.Second},
		{Pipeline: "busy", Since: now.Add(-time.Second), Bound: time.Second},
		{Pipeline: "stuck", Since: now.Add(-61 * time.Second), Bound: time.Minute},
		{Pipeline: "slow", Since: now.Add(-59 * time.Second), Bound: time.Minute},
	})
	if len(got) != 1 || got[0] != (Stuck{Pipeline: "stuck", For: 61 * time.Second, Bound: time.Minute}) {
		t.Fatalf("got %+v, want only stuck (61s of 1m)", got)
	}
}

func TestRateIsFramesPerSecondBetweenUpdates(t *testing.T) {
	var r Rate
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		at     time.Duration
		counts map[string]uint64
		want   float64
	}{
		{0, map[string]uint64{"a": 100, "b": 5}, 0},                      // the first: nothing to compare with
		{10 * time.Second, map[string]uint64{"a": 1300, "b": 5}, 120},    // 1200 frames in 10 s
		{20 * time.Second, map[string]uint64{"a": 1400, "c": 50}, 15},    // c is new: its 50 count; b went away
		{30 * time.Second, map[string]uint64{"a": 10, "c": 50}, 1},       // a started again: its 10 count
		{30 * time.Second, map[string]uint64{"a": 20, "c": 50}, 0},       // no time passed
		{40 * time.Second, map[string]uint64{"a": 20, "c": 50}, 0},       // nothing processed
		{42 * time.Second, map[string]uint64{"a": 21, "c": 50}, 0.5},     // one frame in two seconds
		{45 * time.Second, map[string]uint64{"a": 21, "c": 51}, 1.0 / 3}, // one in three
	}
	for i, s := range steps {
		if got := r.Update(t0.Add(s.at), s.counts); got != s.want {
			t.Errorf("step %d (%s): %v frames/s, want %v", i, s.at, got, s.want)
		}
	}
}

func TestTheStatusLineSaysWhatServesHowFastAndWhatIsWrong(t *testing.T) {
	serving := Pipeline{Name: "digits", Model: "lenet5", State: Serving}
	cases := []struct {
		name  string
		ps    []Pipeline
		fps   float64
		stuck []Stuck
		ready bool
		want  string
	}{
		{"all serving", []Pipeline{serving, serving, serving}, 120.4, nil, true, "3 pipelines serving, 120 frames/s"},
		{"one, slow", []Pipeline{serving}, 0.25, nil, true, "1 pipeline serving, 0.2 frames/s"},
		{"starting", []Pipeline{serving, {Name: "faces", State: Starting, Why: "model facenet version 2 is validating"}}, 0, nil, false,
			"starting: 1 of 2 pipelines serving; faces waits: model facenet version 2 is validating"},
		{"degraded", []Pipeline{serving, {Name: "faces", State: Failed, Why: "model facenet: no complete\nversion"}}, 8, nil, true,
			"1 of 2 pipelines serving, 8.0 frames/s; faces cannot serve: model facenet: no complete version"},
		{"stuck", []Pipeline{serving}, 0, []Stuck{{Pipeline: "digits", For: 95*time.Second + 300*time.Millisecond, Bound: time.Minute}}, true,
			"STUCK: pipeline digits has had a frame in its plugin for 1m35s (more than 1m0s); 1 pipeline serving, 0.0 frames/s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Status(c.ps, c.fps, c.stuck, c.ready); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
	long := Status([]Pipeline{{Name: "x", State: Failed, Why: strings.Repeat("why ", 100)}}, 0, nil, true)
	if len([]rune(long)) > 220 {
		t.Fatalf("a long reason is kept whole: %d characters", len([]rune(long)))
	}
}
