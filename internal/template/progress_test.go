package template

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestProgressNeverGoesBack feeds the progress parsers output in the order
// the real tools print it (dpkg interleaves unpacking and setting up in
// batches; debootstrap's verbs overlap) and checks that the percentages
// written only grow.
func TestProgressNeverGoesBack(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		feed  func(p *progressWriter, line string)
	}{
		{
			name: "apt batches",
			lines: []string{
				"0 upgraded, 4 newly installed, 0 to remove and 0 not upgraded.",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 a 1 [1 kB]",
				"Get:2 http://deb.debian.org/debian bookworm/main amd64 b 1 [1 kB]",
				"Get:3 http://deb.debian.org/debian bookworm/main amd64 c 1 [1 kB]",
				"Get:4 http://deb.debian.org/debian bookworm/main amd64 d 1 [1 kB]",
				"Unpacking a (1) ...",
				"Unpacking b (1) ...",
				"Setting up a (1) ...",
				"Setting up b (1) ...",
				"Unpacking c (1) ...",
				"Unpacking d (1) ...",
				"Setting up c (1) ...",
				"Setting up d (1) ...",
			},
			feed: func() func(p *progressWriter, line string) {
				a := &aptProgress{}
				return func(p *progressWriter, line string) { a.p = p; a.line(line) }
			}(),
		},
		{
			name: "debootstrap",
			lines: []string{
				"I: Retrieving InRelease",
				"I: Retrieving a 1",
				"I: Retrieving b 1",
				"I: Extracting a...",
				"I: Extracting b...",
				"I: Unpacking a...",
				"I: Configuring a...",
				"I: Unpacking b...",
				"I: Configuring b...",
				"I: Base system installed successfully.",
			},
			feed: func() func(p *progressWriter, line string) {
				d := &debootstrapProgress{}
				return func(p *progressWriter, line string) { d.p = p; d.line(line) }
			}(),
		},
	}
	pctRE := regexp.MustCompile(`^\[ *(\d+)%\]`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := newProgressWriter(&buf)
			for _, line := range tt.lines {
				// A new phase per line defeats the rate limit, so every
				// step is written and checked.
				p.phase = ""
				tt.feed(p, line)
			}
			last, seen := -1, 0
			for _, out := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				m := pctRE.FindStringSubmatch(out)
				if m == nil {
					continue
				}
				pct, _ := strconv.Atoi(m[1])
				if pct < last {
					t.Errorf("progress went back from %d%% to %d%%: %q\n%s", last, pct, out, buf.String())
				}
				last = pct
				seen++
			}
			if seen < len(tt.lines)/2 {
				t.Fatalf("only %d progress lines written:\n%s", seen, buf.String())
			}
		})
	}
}
