package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCheckpointHelp: every checkpoint command says that memory and
// processes are not checkpointed, and restore says what it does with a
// running computer.
func TestCheckpointHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"checkpoint", "--help"}, []string{"Memory and processes are not checkpointed", "--label"}},
		{[]string{"checkpoints", "--help"}, []string{"Memory and processes are not checkpointed", "--json"}},
		{[]string{"restore", "--help"}, []string{"Memory and processes are not checkpointed", "stopped first and started again"}},
		{[]string{"fork", "--help"}, []string{"Memory and processes are not checkpointed", "--checkpoint"}},
		{[]string{"checkpoint", "delete", "--help"}, []string{"delete NAME CHECKPOINT"}},
	} {
		cmd := newComputerCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(tc.args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v lacks %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}
