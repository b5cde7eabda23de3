package signing

import (
	"bytes"
	"testing"
)

// FuzzParseSignature: any bytes either fail to parse or give a signature
// whose signed text is a prefix of the input and whose paths are valid.
func FuzzParseSignature(f *testing.F) {
	f.Add([]byte("edgeinfer-signature v1\nkey 0011223344556677 a\nsha256 " + string(bytes.Repeat([]byte("ab"), 32)) + " saved_model.pb\nsignature " + string(bytes.Repeat([]byte("A"), 88)) + "\n"))
	f.Add([]byte("edgeinfer-signature v1\nkey x\nsignature \n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignature(b)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, s.signed) || len(s.Sig) != 64 {
			t.Fatalf("signed text not a prefix of the input, or a %d-byte signature", len(s.Sig))
		}
		for _, e := range s.Files {
			if checkPath(e.Path) != nil {
				t.Fatalf("accepted path %q", e.Path)
			}
		}
	})
}

// FuzzParseKeys: any bytes either fail to parse or give keys whose ids
// match their keys and whose lines parse back to the same keys.
func FuzzParseKeys(f *testing.F) {
	f.Add([]byte("# trusted\ned25519 " + string(bytes.Repeat([]byte("A"), 43)) + "= alice\n"))
	f.Add([]byte("ed25519 AAAA\n\n#"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseKeys(b)
		if err != nil {
			return
		}
		for id, k := range keys {
			if KeyID(k.Key) != id || k.ID != id {
				t.Fatalf("key %s has id %s", KeyID(k.Key), id)
			}
			back, err := ParseKeys([]byte(k.String()))
			if err != nil || !back[id].Key.Equal(k.Key) || back[id].Name != k.Name {
				t.Fatalf("line %q does not round-trip: %v", k.String(), err)
			}
		}
	})
}
