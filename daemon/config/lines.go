package config

import (
	"bufio"
	"strings"
)

// keyLines maps each key of a TOML document ("pipelines.digits.sensor") to
// the line it is written on, so that errors found after decoding (an unknown
// key, a dangling reference) can name the line. It understands what a
// config file needs: [table] and [[array]] headers, dotted and quoted keys;
// keys inside inline tables and arrays of tables map to their parent's line.
func keyLines(src string) map[string]int {
	lines := map[string]int{}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#':
		case strings.HasPrefix(line, "[["):
			end := strings.Index(line, "]]")
			if end > 0 {
				table = joinKey(splitKey(line[2:end]))
				setLine(lines, table, n)
			}
		case line[0] == '[':
			end := strings.Index(line, "]")
			if end > 0 {
				table = joinKey(splitKey(line[1:end]))
				setLine(lines, table, n)
			}
		default:
			eq := strings.Index(line, "=")
			if eq <= 0 {
				continue
			}
			// A dotted key (a.b.c = 1) also defines its tables a and a.b.
			parts := splitKey(line[:eq])
			for i := range parts {
				key := joinKey(parts[:i+1])
				if table != "" {
					key = table + "." + key
				}
				setLine(lines, key, n)
			}
		}
	}
	return lines
}

func setLine(lines map[string]int, key string, n int) {
	if _, ok := lines[key]; !ok {
		lines[key] = n
	}
}

// splitKey splits a dotted TOML key, honouring quotes.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

func joinKey(parts []string) string { return strings.Join(parts, ".") }

// lineOf returns the line of key, or of its nearest parent that has one.
// The decoder matches table and key names to fields regardless of case
// ([Sensors.cam] fills sensors.cam), so a key written in other case is
// found too: the first line of those that differ from it only in case.
func lineOf(lines map[string]int, key string) int {
	for key != "" {
		if n, ok := lines[key]; ok {
			return n
		}
		first := 0
		for k, n := range lines {
			if strings.EqualFold(k, key) && (first == 0 || n < first) {
				first = n
			}
		}
		if first > 0 {
			return first
		}
		i := strings.LastIndex(key, ".")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}
