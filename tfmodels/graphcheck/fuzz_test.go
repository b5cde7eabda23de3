package graphcheck

import (
	"errors"
	"testing"
)

// FuzzCheck: any bytes either are refused as malformed or give a report
// whose denied nodes are all counted among the ops.
func FuzzCheck(f *testing.F) {
	nodes, functions := tf2Saver()
	f.Add(savedModel(nodes, functions, "StatefulPartitionedCall_1:0", "StatefulPartitionedCall_2"))
	f.Add(savedModel([][]byte{nodeDef("r", "ReadFile", []string{"^x"}, map[string]string{"f": "g"})}, nil, "", ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Check(b, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		for _, u := range r.Denied {
			if r.Ops[u.Op] == 0 {
				t.Fatalf("denied %+v not counted in Ops", u)
			}
			if _, ok := Denied(u.Op); !ok {
				t.Fatalf("denied %s, which the list does not hold", u.Op)
			}
		}
	})
}
