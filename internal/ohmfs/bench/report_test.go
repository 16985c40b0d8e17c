package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHandWritten(t *testing.T) {
	m := HandWrittenMarker
	for _, tc := range []struct {
		name, old, want string
	}{
		{"empty", "", ""},
		{"no marker", "# Benchmarks\n\n| a | b |\n", ""},
		{"marker", "# Benchmarks\n\ngenerated\n\n" + m + "\n\n## Mine\n\nkept\n", m + "\n\n## Mine\n\nkept\n"},
		{"marker last, no newline", "gen\n" + m, m},
		{"marker with spaces", "gen\n  " + m + " \nkept\n", "  " + m + " \nkept\n"},
		{"marker inside a line is not one", "gen " + m + "\nkept\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(HandWritten([]byte(tc.old))); got != tc.want {
				t.Errorf("HandWritten(%q) = %q, want %q", tc.old, got, tc.want)
			}
		})
	}
}

func TestWriteMarkdownFileKeepsHandWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	rep := Report{
		Machine: Machine{Date: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)},
		Columns: []Column{{Name: "ext4"}, {Name: "btrfs on ohmfs"}},
		Results: []Result{{Step: Step{Name: "step", Target: targetAgent}, Times: []time.Duration{time.Second, 2 * time.Second},
			Failed: []string{"", ""}, Stored: []uint64{0, 0}}},
	}
	tail := HandWrittenMarker + "\n\n## Checkpoints\n\nkept\n"
	if err := os.WriteFile(path, []byte("# old generated part\n\n"+tail), 0o644); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		if err := WriteMarkdownFile(path, rep); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.Contains(s, "old generated part") {
			t.Errorf("round %d: the old generated part survived:\n%s", round, s)
		}
		if !strings.HasPrefix(s, "# Benchmarks\n") || !strings.HasSuffix(s, "\n\n"+tail) || strings.Count(s, HandWrittenMarker) != 1 {
			t.Errorf("round %d: want the new report followed by the hand-written part once, got:\n%s", round, s)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("want only the report in its directory, got %d entries", len(entries))
	}
}
