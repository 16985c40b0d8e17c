package main

import (
	"bytes"
	"strings"
	"testing"

	"ohm/client"
)

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"3000", 3000, true},
		{"65535", 65535, true},
		{"0", 0, false},
		{"65536", 0, false},
		{"70000", 0, false},
		{"-1", 0, false},
		{"http", 0, false},
		{"", 0, false},
	} {
		got, err := parsePort(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parsePort(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "between 1 and 65535") {
			t.Errorf("parsePort(%q): %v does not say the range", tc.in, err)
		}
	}
}

func TestWritePorts(t *testing.T) {
	var buf bytes.Buffer
	writePorts(&buf, []client.Port{
		{Port: 3000, URL: "http://3000-web.localhost:7070/?ohm_token=x"},
		{Port: 8080, Public: true},
	})
	want := "port 3000: http://3000-web.localhost:7070/?ohm_token=x (token)\n" +
		"port 8080: (none: the daemon has no --listen) (public)\n"
	if buf.String() != want {
		t.Errorf("writePorts:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// TestPortCommandsJSON: expose, unexpose and ports all take --json.
func TestPortCommandsJSON(t *testing.T) {
	for _, name := range []string{"expose", "unexpose", "ports"} {
		cmd := newComputerCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{name, "--help"})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s --help: %v", name, err)
		}
		if !strings.Contains(out.String(), "--json") {
			t.Errorf("%s has no --json:\n%s", name, out.String())
		}
	}
}
