package metrics

import (
	"fmt"
	"regexp"
	"strings"
)

// promqlMetrics returns the metric names a PromQL expression (with
// Grafana's $variables) selects, in order of first use: the identifiers
// that are not functions, aggregations, keywords, label names (in {...},
// by (...), on (...) and the like), durations or numbers, and the
// __name__ of a bare {__name__="..."} selector. Unbalanced brackets and
// unterminated strings are errors. It is a lexer, not a parser: enough to
// check a dashboard against the registry.
func promqlMetrics(expr string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	depth := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, names, err := skipMatchers(expr, i)
			if err != nil {
				return nil, err
			}
			for _, n := range names {
				add(n)
			}
			i = end
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			i += end + 1
		case c == '$': // $var, ${var}, ${var:fmt}
			i++
			if i < len(expr) && expr[i] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unclosed ${ at %d", i)
				}
				i += end + 1
			} else {
				for i < len(expr) && isIdent(expr[i]) {
					i++
				}
			}
		case isDigit(c) || c == '.' && i+1 < len(expr) && isDigit(expr[i+1]):
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			id := expr[start:i]
			next := i
			for next < len(expr) && strings.ContainsRune(" \t\n\r", rune(expr[next])) {
				next++
			}
			call := next < len(expr) && expr[next] == '('
			switch {
			case labelLists[id]:
				if call { // a list of label names
					end := strings.IndexByte(expr[next:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unclosed ( after %s", id)
					}
					i = next + end + 1
				}
			case keywords[id], call: // a keyword, a function or an aggregation
			default:
				add(id)
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			i++
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %c at %d", c, i)
		default: // operators, commas
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("%d unclosed (", depth)
	}
	return out, nil
}

var (
	labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	keywords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true,
		// aggregations, which may be followed by by (...) before their (
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}
	nameMatcher = regexp.MustCompile(`__name__\s*=\s*"([^"]*)"`)
)

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}
func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }

// skipString returns the index after the string literal that starts at i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// skipMatchers returns the index after the {...} that starts at i, and the
// metric names its __name__ matchers give.
func skipMatchers(s string, i int) (int, []string, error) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := skipString(s, j)
			if err != nil {
				return 0, nil, err
			}
			j = end - 1
		case '}':
			var names []string
			for _, m := range nameMatcher.FindAllStringSubmatch(s[i:j], -1) {
				names = append(names, m[1])
			}
			return j + 1, names, nil
		}
	}
	return 0, nil, fmt.Errorf("unclosed { at %d", i)
}
