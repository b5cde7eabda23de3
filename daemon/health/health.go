// Package health works out what edgeinferd tells systemd, from the
// daemon's own state: whether start-up is over (READY=1), whether the
// daemon still makes progress (WATCHDOG=1), and a status line for people
// (STATUS=, shown by systemctl status). It is pure logic over model states,
// frame counters and dispatch times, so it is tested alone; the daemon
// gathers the state and sends the notifications (internal/sdnotify).
//
//   - A pipeline is serving when the version its model serves has taken
//     its options; starting while its model is still being looked up,
//     settling (its files were copied less than models.settle ago), loaded,
//     warmed up, validated or restarted; failed when its model
//     cannot serve it and is no longer trying (no servable version, every
//     version rejected, its options refused). Start-up is over when no
//     pipeline is starting: a failed model does not hold the daemon's start
//     up (restarting the daemon would not mend its files), it is named in
//     the status line instead.
//   - A pipeline is stuck when one frame has been in its plugin longer than
//     the pipeline's bound. A pipeline without frames is idle, not stuck,
//     and so is one whose frames wait for their model to serve.
package health

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// Pipeline states.
const (
	Serving  = "serving"  // its model serves it
	Starting = "starting" // its model is on the way (looked up, loading, validating, restarting)
	Failed   = "failed"   // its model cannot serve it and has stopped trying
)

// Pipeline is how a pipeline's model serves it.
type Pipeline struct {
	Name  string
	Model string
	State string // Serving, Starting or Failed
	// Why says what a Starting pipeline waits for or why a Failed one
	// cannot serve.
	Why string
}

// Pipelines says, for each pipeline (name -> model name), how its model
// serves it according to the model states (model name -> its state, as
// published on <prefix>/models/<model>); sorted by name.
func Pipelines(models map[string]string, states map[string]payload.ModelState) []Pipeline {
	return PipelinesSettling(models, states, nil)
}

// PipelinesSettling is Pipelines knowing also the versions whose files
// are still settling in the repository (model name -> versions, as
// repo.Update has them): a model with no version to serve but one settling
// is starting, not failed.
func PipelinesSettling(models map[string]string, states map[string]payload.ModelState, settling map[string][]string) []Pipeline {
	var out []Pipeline
	for _, name := range slices.Sorted(maps.Keys(models)) {
		model := models[name]
		p := Pipeline{Name: name, Model: model}
		p.State, p.Why = pipelineState(name, states[model], settling[model])
		out = append(out, p)
	}
	return out
}

// inProgress are the version states that are still on their way to serve.
var inProgress = []string{payload.StateLoading, payload.StateValidating, payload.StateRestarting}

func pipelineState(pipeline string, st payload.ModelState, settling []string) (state, why string) {
	model := "model " + st.Model
	if st.Model == "" {
		return Starting, "its model is not known yet"
	}
	if st.Serving != "" {
		v := st.Versions[st.Serving]
		if r, ok := v.Refused[pipeline]; ok {
			return Failed, fmt.Sprintf("%s version %s refused its options: %s", model, st.Serving, r)
		}
		if v.State == payload.StateServing && slices.Contains(v.Pipelines, pipeline) {
			return Serving, ""
		}
		if v.State == payload.StateServing {
			return Starting, fmt.Sprintf("%s version %s is taking its options", model, st.Serving)
		}
		if v.State == payload.StateRestarting {
			return Starting, fmt.Sprintf("%s version %s is restarting", model, st.Serving)
		}
	}
	// The newest version on its way, if any.
	var newest string
	for _, version := range slices.SortedFunc(maps.Keys(st.Versions), byNumber) {
		if slices.Contains(inProgress, st.Versions[version].State) {
			newest = version
		}
	}
	if newest != "" {
		return Starting, fmt.Sprintf("%s version %s is %s", model, newest, st.Versions[newest].State)
	}
	if len(st.Versions) == 0 && st.Reason == "" {
		return Starting, model + " is being looked up in the repository"
	}
	if len(settling) > 0 {
		return Starting, fmt.Sprintf("%s version %s: its files are settling (models.settle)", model, settling[0])
	}
	if st.Reason != "" {
		return Failed, model + ": " + st.Reason
	}
	for _, version := range slices.Backward(slices.SortedFunc(maps.Keys(st.Versions), byNumber)) {
		if v := st.Versions[version]; v.State == payload.StateFailed {
			return Failed, fmt.Sprintf("%s version %s failed: %s", model, version, v.Reason)
		}
	}
	return Failed, model + " serves no version"
}

// byNumber orders version names as numbers ("9" before "10").
func byNumber(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// Ready reports whether start-up is over: no pipeline is still starting.
func Ready(ps []Pipeline) bool {
	return !slices.ContainsFunc(ps, func(p Pipeline) bool { return p.State == Starting })
}

// Dispatch is a pipeline's frame in its plugin, if it has one.
type Dispatch struct {
	Pipeline string
	Since    time.Time     // when the frame was sent to the plugin; zero: no frame is there
	Bound    time.Duration // longer than this, the pipeline is stuck
}

// Stuck is a pipeline whose frame has been in its plugin too long.
type Stuck struct {
	Pipeline string
	For      time.Duration // how long the frame has been there
	Bound    time.Duration
}

// StuckPipelines returns the pipelines whose frame has been in its plugin
// longer than its bound at now, in the order given.
func StuckPipelines(now time.Time, ds []Dispatch) []Stuck {
	var out []Stuck
	for _, d := range ds {
		if d.Since.IsZero() {
			continue
		}
		if held := now.Sub(d.Since); held > d.Bound {
			out = append(out, Stuck{Pipeline: d.Pipeline, For: held, Bound: d.Bound})
		}
	}
	return out
}

// Rate turns ever-growing frame counters into frames per second.
type Rate struct {
	at   time.Time
	last map[string]uint64
}

// Update takes the counters (pipeline -> frames since it started) at now
// and returns the frames per second since the last Update: 0 the first
// time. A pipeline that is new, or started again (its counter went back),
// counts from 0.
func (r *Rate) Update(now time.Time, counts map[string]uint64) float64 {
	defer func() { r.at, r.last = now, maps.Clone(counts) }()
	if r.last == nil || !now.After(r.at) {
		return 0
	}
	var frames uint64
	for name, n := range counts {
		if before, ok := r.last[name]; ok && n >= before {
			frames += n - before
		} else {
			frames += n
		}
	}
	return float64(frames) / now.Sub(r.at).Seconds()
}

// Status is the STATUS= line: how many pipelines serve and the frames per
// second; while starting, what the daemon waits for; what failed or is
// stuck. ready says whether start-up is over (READY=1 was sent).
func Status(ps []Pipeline, fps float64, stuck []Stuck, ready bool) string {
	serving := 0
	var starting, failed []Pipeline
	for _, p := range ps {
		switch p.State {
		case Serving:
			serving++
		case Starting:
			starting = append(starting, p)
		default:
			failed = append(failed, p)
		}
	}
	var b strings.Builder
	for _, s := range stuck {
		fmt.Fprintf(&b, "STUCK: pipeline %s has had a frame in its plugin for %s (more than %s); ", s.Pipeline, round(s.For), s.Bound)
	}
	if !ready {
		b.WriteString("starting: ")
	}
	if serving == len(ps) {
		fmt.Fprintf(&b, "%d %s serving", serving, plural(serving, "pipeline"))
	} else {
		fmt.Fprintf(&b, "%d of %d pipelines serving", serving, len(ps))
	}
	if ready {
		fmt.Fprintf(&b, ", %s frames/s", perSecond(fps))
	}
	for _, p := range starting {
		fmt.Fprintf(&b, "; %s waits: %s", p.Name, short(p.Why))
	}
	for _, p := range failed {
		fmt.Fprintf(&b, "; %s cannot serve: %s", p.Name, short(p.Why))
	}
	return b.String()
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func perSecond(fps float64) string {
	if fps >= 10 {
		return fmt.Sprintf("%.0f", fps)
	}
	return fmt.Sprintf("%.1f", fps)
}

func round(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// short keeps a reason to one line of at most 160 characters, so that the
// status line stays readable in systemctl status.
func short(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 160 {
		return string(r[:159]) + "…"
	}
	return s
}
