package signing

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// Line tags of the key files.
const (
	publicTag  = "ed25519"
	privateTag = "ed25519-private"
)

// PublicKey is one line of a trusted-keys file.
type PublicKey struct {
	ID   string // KeyID of Key
	Name string // who holds the private key; free text
	Key  ed25519.PublicKey
}

// String is the key's trusted-keys line: "ed25519 <base64 key> <name>".
func (k PublicKey) String() string {
	return strings.TrimSpace(publicTag + " " + base64.StdEncoding.EncodeToString(k.Key) + " " + k.Name)
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(k ed25519.PublicKey) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:8])
}

// PrivateKey is a signing key and its holder's name.
type PrivateKey struct {
	Name string
	Key  ed25519.PrivateKey
}

// GenerateKey makes a new key pair for name (a person or a build host;
// it may not hold a line break).
func GenerateKey(name string) (PrivateKey, error) {
	if err := checkName(name); err != nil {
		return PrivateKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey{Name: name, Key: priv}, nil
}

// Public is the key's trusted-keys entry.
func (k PrivateKey) Public() PublicKey {
	pub := k.Key.Public().(ed25519.PublicKey)
	return PublicKey{ID: KeyID(pub), Name: k.Name, Key: pub}
}

// Marshal is the private key file: one line "ed25519-private <base64
// seed> <name>".
func (k PrivateKey) Marshal() []byte {
	return []byte(strings.TrimSpace(privateTag+" "+base64.StdEncoding.EncodeToString(k.Key.Seed())+" "+k.Name) + "\n")
}

// ParsePrivateKey reads a private key file's content.
func ParsePrivateKey(b []byte) (PrivateKey, error) {
	var k PrivateKey
	n := 0
	err := eachLine(b, func(line int, fields []string, name string) error {
		n++
		if n > 1 {
			return fmt.Errorf("line %d: a private key file holds one key", line)
		}
		if fields[0] != privateTag {
			return fmt.Errorf("line %d: starts with %q, want %q", line, fields[0], privateTag)
		}
		seed, err := decodeKey(fields, ed25519.SeedSize)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		k = PrivateKey{Name: name, Key: ed25519.NewKeyFromSeed(seed)}
		return nil
	})
	if err == nil && n == 0 {
		err = fmt.Errorf("no %s line", privateTag)
	}
	return k, err
}

// ReadPrivateKey reads a private key file; its errors name the file.
func ReadPrivateKey(path string) (PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PrivateKey{}, err
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Keys is a set of trusted public keys by ID.
type Keys map[string]PublicKey

// ParseKeys reads a trusted-keys file's content: one key a line,
// "ed25519 <base64 key> <name>"; blank lines and lines starting with #
// are skipped. Its errors name the line ("line 3: ...").
func ParseKeys(b []byte) (Keys, error) {
	keys := Keys{}
	err := eachLine(b, func(line int, fields []string, name string) error {
		if fields[0] != publicTag {
			return fmt.Errorf("line %d: starts with %q, want %q", line, fields[0], publicTag)
		}
		raw, err := decodeKey(fields, ed25519.PublicKeySize)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		k := PublicKey{ID: KeyID(raw), Name: name, Key: raw}
		if prev, dup := keys[k.ID]; dup {
			return fmt.Errorf("line %d: key %s (%s) is there twice (also as %q)", line, k.ID, name, prev.Name)
		}
		keys[k.ID] = k
		return nil
	})
	return keys, err
}

// ReadKeys reads a trusted-keys file; its errors name the file and line
// ("keys.txt:3: ...").
func ReadKeys(path string) (Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s:%s", path, strings.TrimPrefix(err.Error(), "line "))
	}
	return keys, nil
}

// eachLine calls fn with the number, the fields and the name (what follows
// the second field) of each line that is not blank or a comment.
func eachLine(b []byte, fn func(line int, fields []string, name string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		name := ""
		if len(fields) > 2 {
			name = strings.Join(fields[2:], " ")
		}
		if err := fn(n, fields, name); err != nil {
			return err
		}
	}
	return sc.Err()
}

// decodeKey decodes the base64 second field of a key line, of size bytes.
func decodeKey(fields []string, size int) ([]byte, error) {
	if len(fields) < 2 {
		return nil, fmt.Errorf("%s: the key is missing", fields[0])
	}
	raw, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, fmt.Errorf("%s: the key is not base64: %w", fields[0], err)
	}
	if len(raw) != size {
		return nil, fmt.Errorf("%s: the key is %d bytes, want %d", fields[0], len(raw), size)
	}
	return raw, nil
}

func checkName(name string) error {
	if strings.ContainsAny(name, "\r\n") {
		return fmt.Errorf("key name %q: holds a line break", name)
	}
	return nil
}
