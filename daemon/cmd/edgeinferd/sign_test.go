package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenSignAndVerifyWorkTogether(t *testing.T) {
	dir := t.TempDir()
	key, keys := filepath.Join(dir, "release.key"), filepath.Join(dir, "trusted_keys")
	var out, errs bytes.Buffer
	if rc := keygen([]string{"-out", key, "release host"}, &out, &errs); rc != 0 {
		t.Fatalf("keygen: %d, %s", rc, errs.String())
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, mode %v; want 0600", err, st.Mode())
	}
	if !strings.HasPrefix(out.String(), "ed25519 ") || !strings.HasSuffix(out.String(), " release host\n") {
		t.Fatalf("printed %q, want the trusted_keys line", out.String())
	}
	if err := os.WriteFile(keys, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if rc := keygen([]string{"-out", key, "again"}, &out, &errs); rc != 1 || !strings.Contains(errs.String(), "never overwritten") {
		t.Fatalf("keygen over an existing key: %d, %s", rc, errs.String())
	}

	version := filepath.Join(dir, "1")
	if err := os.MkdirAll(filepath.Join(version, "variables"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"saved_model.pb", "variables/variables.index"} {
		os.WriteFile(filepath.Join(version, f), []byte(f), 0o644)
	}
	out.Reset()
	if rc := sign([]string{"-key", key, version}, &out, &errs); rc != 0 || !strings.Contains(out.String(), "2 files signed") {
		t.Fatalf("sign: %d, %s %s", rc, out.String(), errs.String())
	}
	out.Reset()
	if rc := verify([]string{"-keys", keys, version}, &out, &errs); rc != 0 || !strings.HasPrefix(out.String(), "ok ") {
		t.Fatalf("verify: %d, %s", rc, out.String())
	}
	os.WriteFile(filepath.Join(version, "variables", "variables.index"), []byte("changed"), 0o644)
	out.Reset()
	if rc := verify([]string{"-keys", keys, version}, &out, &errs); rc != 1 || !strings.Contains(out.String(), "variables.index: sha256 differs") {
		t.Fatalf("verify a changed version: %d, %s", rc, out.String())
	}
	if rc := sign([]string{version}, &out, &errs); rc != 2 {
		t.Errorf("sign without -key: %d, want 2 (usage)", rc)
	}
}
