package computer

import "strconv"

// maxNameLen is the longest DNS label.
const maxNameLen = 63

// ValidateName reports whether name can name a computer: a DNS label
// (RFC 1123), since the name is also the computer's hostname. That means
// 1 to 63 characters from [a-z0-9-], not starting or ending with '-'.
func ValidateName(name string) error {
	if name == "" {
		return invalidf("a computer name must not be empty")
	}
	if len(name) > maxNameLen {
		return invalidf("invalid computer name %q: longer than %d characters", name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return invalidf("invalid computer name %q: only lowercase letters, digits and '-' are allowed", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return invalidf("invalid computer name %q: it must not start or end with '-'", name)
	}
	return nil
}

// scientists are the friendly names create picks from, in order.
var scientists = []string{
	"einstein", "curie", "newton", "darwin", "turing", "lovelace", "hopper",
	"galileo", "kepler", "faraday", "maxwell", "bohr", "planck", "noether",
	"feynman", "dirac", "pasteur", "mendel", "franklin", "meitner", "tesla",
	"euler", "gauss", "riemann", "hilbert", "godel", "shannon", "knuth",
	"dijkstra", "ritchie", "thompson", "hamilton", "johnson", "ramanujan",
	"hypatia", "archimedes", "euclid", "copernicus", "hubble", "sagan",
	"goodall", "carson", "mcclintock", "hodgkin", "lamport", "lamarr",
	"babbage", "boole", "leibniz", "fermi", "heisenberg", "schrodinger",
	"pauli", "born", "rutherford", "lavoisier", "mendeleev", "volta",
	"ampere", "ohm",
}

// pickName returns the first friendly name not in taken. When every name is
// taken it adds a numeric suffix: einstein-2, curie-2, ..., einstein-3, ...
func pickName(taken map[string]bool) string {
	for suffix := 1; ; suffix++ {
		for _, s := range scientists {
			name := s
			if suffix > 1 {
				name = s + "-" + strconv.Itoa(suffix)
			}
			if !taken[name] {
				return name
			}
		}
	}
}
