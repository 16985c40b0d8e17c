package units

import (
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"1K", 1 << 10, true},
		{"1k", 1 << 10, true},
		{"64M", 64 << 20, true},
		{"64MiB", 64 << 20, true},
		{"64MB", 64 << 20, true},
		{"500G", 500 << 30, true},
		{"10 GB", 10 << 30, true},
		{"1T", 1 << 40, true},
		{"1P", 1 << 50, true},
		{"1.5T", 3 << 39, true},
		{"0.5K", 512, true},
		{"15E", 15 << 60, true},
		{" 2g ", 2 << 30, true},
		{"18446744073709551615", math.MaxUint64, true},
		{"16E", 0, false},
		{"18446744073709551616", 0, false},
		{"99999999999999P", 0, false},
		{"", 0, false},
		{"G", 0, false},
		{"-1", 0, false},
		{"-1G", 0, false},
		{"+1G", 0, false},
		{"1.5", 0, false},
		{"1.2.3G", 0, false},
		{"1X", 0, false},
		{"1GG", 0, false},
		{"ten", 0, false},
		{"1 0G", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0B"},
		{1023, "1023B"},
		{1024, "1.0K"},
		{1536, "1.5K"},
		{1025, "1.1K"},
		{10 << 10, "10K"},
		{10<<10 + 1, "11K"},
		{512 << 20, "512M"},
		{10 << 30, "10G"},
		{1<<30 - 1, "1.0G"},
		{1 << 50, "1.0P"},
		{500 << 30, "500G"},
		{math.MaxUint64, "16E"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"1.0K", "512M", "10G", "1.0P", "1.5T"} {
		n, err := ParseSize(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatSize(n); got != s {
			t.Errorf("FormatSize(ParseSize(%q)) = %q", s, got)
		}
	}
}
