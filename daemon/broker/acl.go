package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Access is what an ACL rule grants on its topic filter.
type Access uint8

// The access words of an acl_file's topic lines.
const (
	Deny      Access = 0
	Read      Access = 1
	Write     Access = 2
	ReadWrite        = Read | Write
)

// rule is one topic line.
type rule struct {
	filter string
	access Access
}

// ACL is an access control list in Mosquitto's acl_file format:
//
//	# a comment
//	topic read edgeinfer/+/status     (before any user line: anonymous clients)
//	user camera
//	topic write edgeinfer/+/in/#
//	topic [read|write|readwrite|deny] <filter>
//
// A topic line without an access word grants readwrite. As in Mosquitto,
// what no rule grants is denied, and a deny rule wins over every grant of
// the same user. Pattern lines (%u, %c) are not supported.
type ACL struct {
	anonymous []rule
	users     map[string][]rule
}

// ReadACL reads an acl_file. An error names the file and the line.
func ReadACL(path string) (*ACL, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	acl := &ACL{users: map[string][]rule{}}
	section, anonymous := "", true // lines before any user line: anonymous clients
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		word, rest := cutSpace(line)
		switch word {
		case "user":
			if rest == "" {
				return nil, fmt.Errorf("%s:%d: user: no user name", path, n)
			}
			section, anonymous = rest, false
		case "topic":
			r, err := parseTopic(rest)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			if anonymous {
				acl.anonymous = append(acl.anonymous, r)
			} else {
				acl.users[section] = append(acl.users[section], r)
			}
		case "pattern":
			return nil, fmt.Errorf("%s:%d: pattern lines (%%u, %%c substitution) are not supported by the embedded broker: write a user section with topic lines per user", path, n)
		default:
			return nil, fmt.Errorf("%s:%d: %q: not a user or topic line", path, n, word)
		}
	}
	return acl, sc.Err()
}

func parseTopic(s string) (rule, error) {
	r := rule{filter: s, access: ReadWrite}
	if word, rest := cutSpace(s); rest != "" {
		switch word {
		case "read":
			r = rule{filter: rest, access: Read}
		case "write":
			r = rule{filter: rest, access: Write}
		case "readwrite":
			r = rule{filter: rest, access: ReadWrite}
		case "deny":
			r = rule{filter: rest, access: Deny}
		}
	}
	if r.filter == "" {
		return r, fmt.Errorf("topic: no topic filter")
	}
	if err := validFilter(r.filter); err != nil {
		return r, fmt.Errorf("topic %q: %w", r.filter, err)
	}
	return r, nil
}

// cutSpace splits s at its first run of blanks.
func cutSpace(s string) (word, rest string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// validFilter checks an MQTT topic filter: '#' only as the whole last
// level, '+' only as a whole level.
func validFilter(f string) error {
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("a wildcard must be a whole level")
		}
	}
	return nil
}

// Allowed reports whether the client called user ("" for an anonymous
// client) may read (receive) or write (publish to) topic, which has no
// wildcards.
func (a *ACL) Allowed(user, topic string, want Access) bool {
	rules := a.anonymous
	if user != "" {
		rules = a.users[user]
	}
	for _, r := range rules {
		if r.access == Deny && matches(r.filter, topic) {
			return false
		}
	}
	for _, r := range rules {
		if r.access&want == want && matches(r.filter, topic) {
			return true
		}
	}
	return false
}

// matches reports whether the topic filter matches topic, as MQTT
// subscriptions match: "a/#" matches "a" and everything under it, "+" one
// level, and a wildcard at the first level matches no "$" topic.
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) || level != "+" && level != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
