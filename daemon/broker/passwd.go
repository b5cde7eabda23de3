package broker

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Users are the entries of a password file in Mosquitto's format, one
// "user:hash" a line, as mosquitto_passwd writes them. Two hashes are
// understood:
//
//	$7$<iterations>$<base64 salt>$<base64 key>  PBKDF2-HMAC-SHA512 (mosquitto_passwd's default)
//	$6$<base64 salt>$<base64 key>               SHA-512 of password+salt (Mosquitto 1.x)
//
// The file never holds a password, only its hash.
type Users map[string]hash

// hash is one user's password hash.
type hash struct {
	iterations int // 0: $6$
	salt, key  []byte
}

// DefaultIterations is the PBKDF2 iteration count HashPassword uses: the
// one mosquitto_passwd writes, so that both tools make the same entries.
const DefaultIterations = 101

// saltLen and keyLen are the sizes mosquitto_passwd uses.
const (
	saltLen = 12
	keyLen  = 64
)

// ReadUsers reads a password file. An error names the file and the line.
func ReadUsers(path string) (Users, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	users := Users{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, encoded, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: not user:hash", path, n)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%s:%d: user %q is listed twice", path, n, name)
		}
		h, err := parseHash(encoded)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: %w", path, n, name, err)
		}
		users[name] = h
	}
	return users, sc.Err()
}

func parseHash(s string) (hash, error) {
	parts := strings.Split(s, "$")
	var h hash
	var salt, key string
	switch {
	case len(parts) == 5 && parts[0] == "" && parts[1] == "7":
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 {
			return h, fmt.Errorf("iterations %q are not a positive number", parts[2])
		}
		h.iterations, salt, key = n, parts[3], parts[4]
	case len(parts) == 4 && parts[0] == "" && parts[1] == "6":
		salt, key = parts[2], parts[3]
	default:
		return h, errors.New("the hash is neither $7$<iterations>$<salt>$<hash> nor $6$<salt>$<hash> (make the file with mosquitto_passwd or edgeinferd passwd; it never holds a plain password)")
	}
	var err error
	if h.salt, err = base64.StdEncoding.DecodeString(salt); err != nil {
		return h, fmt.Errorf("salt: %w", err)
	}
	if h.key, err = base64.StdEncoding.DecodeString(key); err != nil || len(h.key) != keyLen {
		return h, fmt.Errorf("hash: not %d bytes of base64", keyLen)
	}
	return h, nil
}

func (h hash) derive(password string) []byte {
	if h.iterations == 0 {
		sum := sha512.Sum512(append([]byte(password), h.salt...))
		return sum[:]
	}
	key, err := pbkdf2.Key(sha512.New, password, h.salt, h.iterations, keyLen)
	if err != nil {
		return nil // keyLen is in range: cannot happen
	}
	return key
}

func (h hash) String() string {
	salt, key := base64.StdEncoding.EncodeToString(h.salt), base64.StdEncoding.EncodeToString(h.key)
	if h.iterations == 0 {
		return "$6$" + salt + "$" + key
	}
	return fmt.Sprintf("$7$%d$%s$%s", h.iterations, salt, key)
}

// Check reports whether password is user's.
func (u Users) Check(user, password string) bool {
	h, ok := u[user]
	if !ok {
		return false
	}
	return subtle.ConstantTimeCompare(h.derive(password), h.key) == 1
}

// HashPassword returns the password file entry hash of password, as
// mosquitto_passwd makes it: $7$, PBKDF2-HMAC-SHA512, a random salt.
func HashPassword(password string) string {
	h := hash{iterations: DefaultIterations, salt: make([]byte, saltLen)}
	rand.Read(h.salt)
	h.key = h.derive(password)
	return h.String()
}

// SetPassword sets user's password in the password file at path: the
// user's line is replaced, or added at the end; the file is made (mode
// 0600) when it does not exist. Other lines are kept as they are. The file
// is replaced by a rename, so a reader never sees half of it.
func SetPassword(path, user, password string) error {
	if user == "" || strings.ContainsAny(user, ":\n\r") {
		return fmt.Errorf("user name %q: must be non-empty, without ':' or line breaks", user)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	entry := user + ":" + HashPassword(password)
	var lines []string
	found := false
	for l := range strings.Lines(string(old)) {
		l = strings.TrimRight(l, "\r\n")
		if name, _, _ := strings.Cut(l, ":"); name == user {
			l, found = entry, true
		}
		lines = append(lines, l)
	}
	if !found {
		lines = append(lines, entry)
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
