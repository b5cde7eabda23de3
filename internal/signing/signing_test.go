package signing

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// version writes a small version directory: a graph, variables in a
// subfolder, a manifest.
func version(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range map[string]string{
		"saved_model.pb":                          "graph",
		"edgeinfer.toml":                          "task = \"classify\"\n",
		"variables/variables.index":               "index",
		"variables/variables.data-00000-of-00001": "weights",
	} {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newKey(t *testing.T, name string) PrivateKey {
	t.Helper()
	k, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func trust(t *testing.T, ks ...PrivateKey) Keys {
	t.Helper()
	var lines []string
	for _, k := range ks {
		lines = append(lines, k.Public().String())
	}
	keys, err := ParseKeys([]byte("# trusted\n\n" + strings.Join(lines, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestASignedVersionVerifiesWithTheSignersKey(t *testing.T) {
	dir := version(t)
	alice, bob := newKey(t, "alice build host"), newKey(t, "bob")
	s, err := Sign(dir, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 4 || s.Files[0].Path != "edgeinfer.toml" || s.Files[3].Path != "variables/variables.index" {
		t.Fatalf("signed %+v, want the 4 files sorted by path", s.Files)
	}
	k, err := Verify(dir, trust(t, bob, alice))
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "alice build host" || k.ID != alice.Public().ID {
		t.Errorf("verified with %+v, want alice's key", k)
	}
	// Signing again replaces the signature rather than signing it.
	if s, err := Sign(dir, bob); err != nil || len(s.Files) != 4 {
		t.Fatalf("re-sign: %v, %d files", err, len(s.Files))
	}
	if k, err := Verify(dir, trust(t, bob)); err != nil || k.Name != "bob" {
		t.Fatalf("re-signed: %v, %+v", err, k)
	}
}

func TestAVersionChangedAfterSigningFailsNamingTheFile(t *testing.T) {
	tests := []struct {
		name   string
		change func(dir string) error
		want   string
	}{
		{"one byte of the variables changed", func(dir string) error {
			p := filepath.Join(dir, "variables", "variables.data-00000-of-00001")
			b, _ := os.ReadFile(p)
			b[0] ^= 1
			return os.WriteFile(p, b, 0o644)
		}, "variables/variables.data-00000-of-00001: sha256 differs from the signed one (changed after signing)"},
		{"a file added", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "variables", "extra"), []byte("x"), 0o644)
		}, "variables/extra: not signed (added after signing)"},
		{"a file removed", func(dir string) error {
			return os.Remove(filepath.Join(dir, "edgeinfer.toml"))
		}, "edgeinfer.toml: missing, it was signed (removed after signing)"},
		{"a sha256 line of the signature edited", func(dir string) error {
			p := filepath.Join(dir, File)
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte("sha256 ")) + len("sha256 ")
			if b[i] == '0' {
				b[i] = '1'
			} else {
				b[i] = '0'
			}
			return os.WriteFile(p, b, 0o644)
		}, "edgeinfer.sig: the signature does not verify with key"},
		{"the signature removed", func(dir string) error {
			return os.Remove(filepath.Join(dir, File))
		}, "edgeinfer.sig: missing: the version is not signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := version(t)
			k := newKey(t, "alice")
			if _, err := Sign(dir, k); err != nil {
				t.Fatal(err)
			}
			if err := tt.change(dir); err != nil {
				t.Fatal(err)
			}
			_, err := Verify(dir, trust(t, k))
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, filepath.FromSlash(tt.want))) && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestAnUnsignedVersionWrapsErrUnsigned(t *testing.T) {
	if _, err := Verify(version(t), Keys{}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("err %v, want ErrUnsigned", err)
	}
}

func TestAVersionSignedByAnUnknownKeyIsRefusedNamingTheKey(t *testing.T) {
	dir := version(t)
	mallory, alice := newKey(t, "mallory"), newKey(t, "alice")
	if _, err := Sign(dir, mallory); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(dir, trust(t, alice))
	want := filepath.Join(dir, File) + ": signed by key " + mallory.Public().ID + " (mallory), which trusted_keys does not hold"
	if err == nil || err.Error() != want {
		t.Fatalf("err %v\nwant %s", err, want)
	}
	// A key that claims a trusted key's id does not verify.
	b, _ := os.ReadFile(filepath.Join(dir, File))
	forged := bytes.Replace(b, []byte(mallory.Public().ID), []byte(alice.Public().ID), 1)
	os.WriteFile(filepath.Join(dir, File), forged, 0o644)
	if _, err := Verify(dir, trust(t, alice)); err == nil || !strings.Contains(err.Error(), "does not verify with key "+alice.Public().ID) {
		t.Fatalf("forged key id: err %v", err)
	}
}

func TestAPrivateKeyFileRoundTrips(t *testing.T) {
	k := newKey(t, "ci runner 7")
	back, err := ParsePrivateKey(k.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Key.Equal(k.Key) || back.Name != "ci runner 7" {
		t.Fatalf("got %+v", back)
	}
	if _, err := GenerateKey("two\nlines"); err == nil {
		t.Error("a key name with a line break was accepted")
	}
}

func TestBadKeyFilesAreErrorsNamingTheLine(t *testing.T) {
	good := newKey(t, "a").Public().String()
	tests := []struct {
		name, text, want string
	}{
		{"wrong tag", "# c\nrsa AAAA x\n", "line 2: starts with \"rsa\""},
		{"no key", "ed25519\n", "line 1: ed25519: the key is missing"},
		{"not base64", "ed25519 !!! x\n", "line 1: ed25519: the key is not base64"},
		{"short key", "ed25519 AAAA x\n", "line 1: ed25519: the key is 3 bytes, want 32"},
		{"twice", good + "\n" + good + " again\n", "line 2: key "},
	}
	for _, tt := range tests {
		if _, err := ParseKeys([]byte(tt.text)); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
	path := filepath.Join(t.TempDir(), "trusted_keys")
	os.WriteFile(path, []byte("\ned25519 AAAA x\n"), 0o644)
	if _, err := ReadKeys(path); err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
		t.Errorf("ReadKeys: err %v, want it to start with %s:2:", err, path)
	}
	for name, text := range map[string]string{
		"empty":      "",
		"public key": good,
		"two keys":   string(newKey(t, "a").Marshal()) + string(newKey(t, "b").Marshal()),
	} {
		if _, err := ParsePrivateKey([]byte(text)); err == nil {
			t.Errorf("private key %s: accepted", name)
		}
	}
}

func TestBadSignatureFilesAreErrorsNamingTheLine(t *testing.T) {
	dir := version(t)
	if _, err := Sign(dir, newKey(t, "a")); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, File))
	lines := strings.Split(string(good), "\n")
	sig := lines[len(lines)-2]
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name, text, want string
	}{
		{"other header", "edgeinfer-signature v2\n", "line 1:"},
		{"no key line", "edgeinfer-signature v1\nsha256 x y\n", "line 2:"},
		{"bad hash", lines[0] + "\n" + lines[1] + "\nsha256 abc a\n" + sig, "line 3:"},
		{"absolute path", lines[0] + "\n" + lines[1] + "\nsha256 " + h + " /etc/passwd\n" + sig, "line 3:"},
		{"dot-dot path", lines[0] + "\n" + lines[1] + "\nsha256 " + h + " ../x\n" + sig, "line 3:"},
		{"unsorted", lines[0] + "\n" + lines[1] + "\nsha256 " + h + " b\nsha256 " + h + " a\n" + sig, "line 4:"},
		{"no signature", lines[0] + "\n" + lines[1] + "\n", "line 3: ends before"},
		{"short signature", lines[0] + "\n" + lines[1] + "\nsignature AAAA\n", "line 3:"},
		{"text after", string(good) + "sha256 " + h + " z\n", "line " + strconv.Itoa(len(lines)) + ": text after"},
	}
	for _, tt := range tests {
		if _, err := ParseSignature([]byte(tt.text)); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := ParseSignature(good); err != nil {
		t.Fatalf("the written signature does not parse: %v", err)
	}
}
