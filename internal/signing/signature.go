package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File is the signature's name inside a version directory.
const File = "edgeinfer.sig"

const (
	header       = "edgeinfer-signature v1"
	maxDepth     = 8 // folders nested in a version, as the repository watch allows
	signatureTag = "signature"
)

// Entry is one signed file.
type Entry struct {
	Path   string // relative to the version directory, with forward slashes
	SHA256 [sha256.Size]byte
}

// Signature is the content of edgeinfer.sig:
//
//	edgeinfer-signature v1
//	key <key id> <key name>
//	sha256 <hex> <relative path>      one line a file, sorted by path
//	signature <base64 ed25519 signature of every line above, newlines included>
type Signature struct {
	KeyID   string
	KeyName string
	Files   []Entry
	Sig     []byte
	signed  []byte // the bytes Sig signs
}

// body writes the lines the signature signs.
func body(keyID, keyName string, files []Entry) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", header)
	fmt.Fprintf(&b, "%s\n", strings.TrimSpace("key "+keyID+" "+keyName))
	for _, f := range files {
		fmt.Fprintf(&b, "sha256 %s %s\n", hex.EncodeToString(f.SHA256[:]), f.Path)
	}
	return b.Bytes()
}

// ParseSignature reads a signature file's content. Its errors name the
// line.
func ParseSignature(b []byte) (*Signature, error) {
	s := &Signature{}
	rest := b
	for n := 1; ; n++ {
		if len(rest) == 0 {
			return nil, fmt.Errorf("line %d: ends before its %q line", n, signatureTag)
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			i = len(rest)
		}
		line := string(rest[:i])
		next := rest[min(i+1, len(rest)):]
		tag, value, _ := strings.Cut(line, " ")
		switch {
		case n == 1:
			if line != header {
				return nil, fmt.Errorf("line 1: %q, want %q", line, header)
			}
		case n == 2:
			if tag != "key" || value == "" {
				return nil, fmt.Errorf("line 2: want \"key <key id> <name>\", got %q", line)
			}
			s.KeyID, s.KeyName, _ = strings.Cut(value, " ")
		case tag == "sha256":
			sum, path, _ := strings.Cut(value, " ")
			raw, err := hex.DecodeString(sum)
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("line %d: %q is not a SHA-256 in hex", n, sum)
			}
			if err := checkPath(path); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if k := len(s.Files); k > 0 && s.Files[k-1].Path >= path {
				return nil, fmt.Errorf("line %d: %s: paths must be sorted and listed once", n, path)
			}
			e := Entry{Path: path}
			copy(e.SHA256[:], raw)
			s.Files = append(s.Files, e)
		case tag == signatureTag:
			sig, err := base64.StdEncoding.DecodeString(value)
			if err != nil || len(sig) != ed25519.SignatureSize {
				return nil, fmt.Errorf("line %d: the signature is not %d bytes of base64", n, ed25519.SignatureSize)
			}
			if len(bytes.TrimSpace(next)) > 0 {
				return nil, fmt.Errorf("line %d: text after the %s line", n+1, signatureTag)
			}
			s.Sig, s.signed = sig, b[:len(b)-len(rest)]
			return s, nil
		default:
			return nil, fmt.Errorf("line %d: %q is neither a sha256 nor a %s line", n, tag, signatureTag)
		}
		rest = next
	}
}

// checkPath refuses what a version's files cannot be named: absolute
// paths, "..", empty parts, the signature itself.
func checkPath(p string) error {
	if p == "" || p == File || !fs.ValidPath(p) || strings.ContainsAny(p, "\\\r\n") {
		return fmt.Errorf("%q is not a file of a version", p)
	}
	return nil
}

// Sign hashes every file under dir (but edgeinfer.sig) and writes
// dir/edgeinfer.sig signed with k. It returns the signature written.
func Sign(dir string, k PrivateKey) (*Signature, error) {
	files, err := hashTree(dir)
	if err != nil {
		return nil, err
	}
	pub := k.Public()
	signed := body(pub.ID, pub.Name, files)
	s := &Signature{KeyID: pub.ID, KeyName: pub.Name, Files: files, Sig: ed25519.Sign(k.Key, signed), signed: signed}
	out := append(slices.Clone(signed), signatureTag+" "+base64.StdEncoding.EncodeToString(s.Sig)+"\n"...)
	tmp := filepath.Join(dir, "."+File+".tmp")
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, File)); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return s, nil
}

// ErrUnsigned is wrapped by Verify's error when the version has no
// signature file.
var ErrUnsigned = errors.New("not signed")

// Verify checks dir/edgeinfer.sig: it must be signed by one of keys, and
// every file under dir (but the signature) must be exactly one it lists,
// with the same SHA-256. It returns the key that signed. Its errors name
// the file at fault:
//
//	<dir>/edgeinfer.sig: signed by key 3fa2..., which trusted_keys does not hold
//	<dir>/variables/variables.data-00000-of-00001: sha256 differs from the signed one (changed after signing)
func Verify(dir string, keys Keys) (PublicKey, error) {
	path := filepath.Join(dir, File)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return PublicKey{}, fmt.Errorf("%s: missing: the version is %w", path, ErrUnsigned)
	}
	if err != nil {
		return PublicKey{}, err
	}
	s, err := ParseSignature(b)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%s: %w", path, err)
	}
	k, ok := keys[s.KeyID]
	if !ok {
		return PublicKey{}, fmt.Errorf("%s: signed by key %s (%s), which trusted_keys does not hold", path, s.KeyID, s.KeyName)
	}
	if !ed25519.Verify(k.Key, s.signed, s.Sig) {
		return PublicKey{}, fmt.Errorf("%s: the signature does not verify with key %s (%s): the file was changed or not signed by that key", path, k.ID, k.Name)
	}
	files, err := hashTree(dir)
	if err != nil {
		return PublicKey{}, err
	}
	signed := map[string][sha256.Size]byte{}
	for _, f := range s.Files {
		signed[f.Path] = f.SHA256
	}
	var errs []error
	for _, f := range files {
		sum, ok := signed[f.Path]
		delete(signed, f.Path)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s: not signed (added after signing)", filepath.Join(dir, f.Path)))
		case sum != f.SHA256:
			errs = append(errs, fmt.Errorf("%s: sha256 differs from the signed one (changed after signing)", filepath.Join(dir, f.Path)))
		}
	}
	for _, p := range sortedKeys(signed) {
		errs = append(errs, fmt.Errorf("%s: missing, it was signed (removed after signing)", filepath.Join(dir, p)))
	}
	if len(errs) > 0 {
		return PublicKey{}, errors.Join(errs...)
	}
	return k, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// hashTree hashes every file under dir but the signature and its
// temporary file, sorted by path. Symbolic links are followed.
func hashTree(dir string) ([]Entry, error) {
	var out []Entry
	var walk func(rel string, depth int) error
	walk = func(rel string, depth int) error {
		entries, err := os.ReadDir(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := e.Name()
			if rel != "" {
				p = rel + "/" + p
			}
			if p == File || p == "."+File+".tmp" {
				continue
			}
			full := filepath.Join(dir, filepath.FromSlash(p))
			st, err := os.Stat(full)
			if err != nil {
				return err
			}
			if st.IsDir() {
				if depth >= maxDepth {
					return fmt.Errorf("%s: folders nested deeper than %d", full, maxDepth)
				}
				if err := walk(p, depth+1); err != nil {
					return err
				}
				continue
			}
			if err := checkPath(p); err != nil {
				return fmt.Errorf("%s: %w", full, err)
			}
			sum, err := hashFile(full)
			if err != nil {
				return err
			}
			out = append(out, Entry{Path: p, SHA256: sum})
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
