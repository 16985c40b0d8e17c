package main

import (
	"bytes"
	"strings"
	"testing"

	"ohm/client"
)

func TestWriteInfoLimits(t *testing.T) {
	for _, tc := range []struct {
		comp client.Computer
		want []string
	}{
		{
			// Running: the limits in force, as the server read them.
			client.Computer{Name: "a", State: "running", CPUs: 2, MemoryMB: 2048, PIDs: 4096, Network: true,
				Limits: &client.Limits{CPUs: 1.5, MemoryBytes: 4 << 30, PIDs: 4096}},
			[]string{"cpus: 1.5\n", "memory: 4.0G\n", "pids: 4096\n", "network: outbound\n"},
		},
		{
			// An older server without limits: the record's.
			client.Computer{Name: "b", State: "stopped", CPUs: 2, MemoryMB: 512, PIDs: 100},
			[]string{"cpus: 2\n", "memory: 512M\n", "pids: 100\n", "network: none\n"},
		},
		{
			// Its init died: the reason shows.
			client.Computer{Name: "c", State: "stopped", CPUs: 1, MemoryMB: 256, PIDs: 100,
				StopReason: "init was killed (out of memory)"},
			[]string{"last stop: init was killed (out of memory)\n"},
		},
	} {
		var buf bytes.Buffer
		if err := writeInfo(&buf, &tc.comp); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("info of %s lacks %q:\n%s", tc.comp.Name, w, buf.String())
			}
		}
	}
}
