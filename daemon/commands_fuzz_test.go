package daemon

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzCommand feeds arbitrary bytes to the <prefix>/cmd handler of a
// daemon serving a model through fake plugin processes: every message gets
// a reply that is either done or refused with a reason, echoes the id of a
// command that is JSON, and never panics.
func FuzzCommand(f *testing.F) {
	for _, body := range []string{
		`{"id":"a","command":"pin","model":"m","version":"1"}`,
		`{"id":"b","command":"unpin","model":"m"}`,
		`{"id":"c","command":"rollback","model":"m"}`,
		`{"id":"d","command":"reload"}`,
		`{"id":"e","command":"enrol","pipeline":"p","say":"alice"}`,
		`{"id":"f","command":"pin","model":"m","version":"9"}`,
		`{"id":1,"command":["pin"]}`,
		`not json`,
	} {
		f.Add([]byte(body))
	}
	d, md := commandDaemon(f, true, sayTask{})
	servingVersion(f, md, "3")
	f.Fuzz(func(t *testing.T, body []byte) {
		r := d.command(body)
		if r.OK == (r.Error != "") {
			t.Fatalf("reply ok=%v with error %q", r.OK, r.Error)
		}
		var c struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &c); err != nil {
			if r.OK || !strings.HasPrefix(r.Error, "the command is not JSON") {
				t.Fatalf("%q is not JSON; reply %+v", body, r)
			}
			return
		}
		if r.ID != c.ID {
			t.Fatalf("reply id %q to command id %q", r.ID, c.ID)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("the reply does not encode: %v", err)
		}
	})
}
