package serving

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// A process is started with the access it needs if it is confined: its
// version's folder, and the paths its pipelines' options name (read-only
// or, for a state_dir, read-write).
func TestAProcessIsGrantedItsVersionAndThePathsItsPipelinesName(t *testing.T) {
	h := newHarness(t)
	md := h.mgr.Model("m")
	md.SetPipelines(map[string]json.RawMessage{
		"door": json.RawMessage(`{"gallery":"/srv/staff","state_dir":"/var/lib/edgeinfer/door"}`),
		"gate": json.RawMessage(`{}`),
	})
	p := h.serveFirst(md)
	want := sdk.Access{Read: []string{"/models/m/1", "/srv/staff"}, Write: []string{"/var/lib/edgeinfer/door"}}
	if !slices.Equal(p.access.Read, want.Read) || !slices.Equal(p.access.Write, want.Write) {
		t.Errorf("access %+v, want %+v", p.access, want)
	}
}

// A version whose process cannot be confined as required is rejected with
// the reason in its state, no plugin_rejected event (the binary is not to
// blame), and the version before it keeps serving.
func TestAVersionThatCannotBeConfinedIsRejectedWithTheReason(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	h.serveFirst(md)
	h.setBinary("bin-1", script{startErr: fmt.Errorf("start plugin edgeinfer-classify: %w: the kernel has no Landlock", sdk.ErrCannotConfine)})
	md.SetVersions(vers(1, 2))
	vs := h.versionState(md, "2", payload.StateFailed)
	if !strings.Contains(vs.Reason, sdk.ErrCannotConfine.Error()) || !strings.Contains(vs.Reason, "the kernel has no Landlock") {
		t.Errorf("reason %q", vs.Reason)
	}
	if e := h.eventsOf(payload.EventPluginRejected, ""); len(e) != 0 {
		t.Errorf("the binary was rejected: %v", e)
	}
	h.waitEvent(md, payload.EventVersionRejected, "2", 1)
	mustInfer(t, md, "p", "1")
	if st := md.State(); st.Serving != "1" {
		t.Errorf("serving %q, want 1", st.Serving)
	}
}
