package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgeinfer/edgeinfer/internal/signing"
)

// trustedKeysFile writes a trusted-keys file with one new key.
func trustedKeysFile(t *testing.T, dir string) (string, signing.PublicKey) {
	t.Helper()
	k, err := signing.GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "trusted_keys")
	if err := os.WriteFile(path, []byte(k.Public().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, k.Public()
}

func TestTrustedKeysAndAllowOpsAreReadAndChecked(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	base := valid(repo, plugins, inbox)
	keys, pub := trustedKeysFile(t, filepath.Dir(repo))
	c, err := Parse("config.toml", after("[models]", `trusted_keys = "`+keys+`"`)(base)+
		"[serving.lenet5]\nallow_ops = [\"ReadFile\", \"PrintV2\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := c.TrustedKeys()[pub.ID]; !ok || !k.Key.Equal(pub.Key) {
		t.Errorf("TrustedKeys() = %v, want the key of the file", c.TrustedKeys())
	}
	if got := c.AllowOps("lenet5"); !slices.Equal(got, []string{"PrintV2", "ReadFile"}) {
		t.Errorf("AllowOps = %v", got)
	}
	if d, err := Parse("config.toml", base); err != nil || d.TrustedKeys() != nil || d.AllowOps("lenet5") != nil {
		t.Errorf("defaults: keys %v, allow_ops %v, err %v; want none", d.TrustedKeys(), d.AllowOps("lenet5"), err)
	}

	bad := filepath.Join(filepath.Dir(repo), "bad_keys")
	os.WriteFile(bad, []byte("# ok\ned25519 AAAA x\n"), 0o644)
	empty := filepath.Join(filepath.Dir(repo), "empty_keys")
	os.WriteFile(empty, []byte("# nobody yet\n"), 0o644)
	refuses(t, base, []invalid{
		{"unknown op in allow_ops", appended("[serving.lenet5]\nallow_ops = [\"ReadFiles\"]\n"),
			`21: serving.lenet5.allow_ops: "ReadFiles" is not an op the deny-list holds`},
		{"trusted_keys missing", after("[models]", `trusted_keys = "/nonexistent/keys"`),
			`5: models.trusted_keys: open /nonexistent/keys: no such file or directory`},
		{"trusted_keys malformed", after("[models]", `trusted_keys = "`+bad+`"`),
			`5: models.trusted_keys: ` + bad + `:2: ed25519: the key is 3 bytes, want 32`},
		{"trusted_keys empty", after("[models]", `trusted_keys = "`+empty+`"`),
			`5: models.trusted_keys: ` + empty + ` holds no key`},
	})
}

func TestDiffSeesTrustedKeysAndAllowOpsChange(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	base := valid(repo, plugins, inbox)
	keys, _ := trustedKeysFile(t, filepath.Dir(repo))
	load := func(text string) *Config {
		c, err := Parse("config.toml", text)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	plain := load(base)
	signed := load(after("[models]", `trusted_keys = "`+keys+`"`)(base))
	if ch := Diff(plain, signed); !slices.Equal(ch.Other, []string{"models.trusted_keys"}) || len(ch.Restart) > 0 {
		t.Errorf("adding trusted_keys: %+v", ch)
	}
	// The same path, another key in the file.
	trustedKeysFile(t, filepath.Dir(repo))
	if ch := Diff(signed, load(after("[models]", `trusted_keys = "`+keys+`"`)(base))); !slices.Equal(ch.Other, []string{"models.trusted_keys"}) {
		t.Errorf("a key changed in the file: %+v", ch)
	}
	allowed := load(base + "[serving.lenet5]\nallow_ops = [\"ReadFile\"]\n")
	if ch := Diff(plain, allowed); !slices.Equal(ch.Serving, []string{"lenet5"}) {
		t.Errorf("allow_ops added: %+v", ch)
	}
	if ch := Diff(allowed, load(base+"[serving.lenet5]\nallow_ops = [\"WriteFile\"]\n")); !slices.Equal(ch.Serving, []string{"lenet5"}) {
		t.Errorf("allow_ops changed: %+v", ch)
	}
}
