package computer

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"einstein", true},
		{"a", true},
		{"web-1", true},
		{"0day", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"Einstein", false},
		{"-lead", false},
		{"trail-", false},
		{"under_score", false},
		{"dot.ted", false},
		{"sp ace", false},
		{"../etc", false},
		{"ümlaut", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && ErrorCode(err) != CodeInvalid {
			t.Errorf("ValidateName(%q): code %s, want %s", tt.name, ErrorCode(err), CodeInvalid)
		}
	}
}

func TestPickName(t *testing.T) {
	all := map[string]bool{}
	for _, s := range scientists {
		all[s] = true
	}
	allAndEinstein2 := map[string]bool{"einstein-2": true}
	for s := range all {
		allAndEinstein2[s] = true
	}
	tests := []struct {
		taken map[string]bool
		want  string
	}{
		{nil, "einstein"},
		{map[string]bool{"einstein": true}, "curie"},
		{map[string]bool{"einstein": true, "curie": true, "newton": true}, "darwin"},
		{map[string]bool{"curie": true}, "einstein"},
		{all, "einstein-2"},
		{allAndEinstein2, "curie-2"},
	}
	for _, tt := range tests {
		if got := pickName(tt.taken); got != tt.want {
			t.Errorf("pickName(%d taken) = %q, want %q", len(tt.taken), got, tt.want)
		}
	}
	seen := map[string]bool{}
	for _, s := range scientists {
		if seen[s] {
			t.Errorf("scientist %q listed twice", s)
		}
		seen[s] = true
		if err := ValidateName(s); err != nil {
			t.Errorf("scientist name: %v", err)
		}
	}
}
