// Package glob matches names against the `*` and `?` patterns used across the
// config: namespace tool filters, access rules, allowed stdio commands.
package glob

import "unicode/utf8"

// Match reports whether name matches pattern, where `*` matches any run of
// characters (including none) and `?` exactly one character. Every other
// character matches itself; '/' is not special.
func Match(pattern, name string) bool {
	// Iterative matching with one backtrack point: linear in practice, never
	// exponential, unlike the recursive form.
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				starP, starN = p, n
				p++
				continue
			case '?':
				_, size := utf8.DecodeRuneInString(name[n:])
				p++
				n += size
				continue
			default:
				// Byte comparison: equal runes have equal encodings.
				if pattern[p] == name[n] {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' swallow one more character and retry.
		_, size := utf8.DecodeRuneInString(name[starN:])
		starN += size
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// IsLiteral reports whether pattern has no wildcard: it matches only itself.
func IsLiteral(pattern string) bool {
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '*' || pattern[i] == '?' {
			return false
		}
	}
	return true
}
