package main

import (
	"testing"
	"time"

	"ohm/client"
)

func TestIdleLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	for _, tc := range []struct {
		comp client.Computer
		want string
	}{
		{client.Computer{}, "off (never stops for idleness)"},
		{client.Computer{IdleTimeoutSeconds: 1800, State: "stopped"}, "30m"},
		{client.Computer{IdleTimeoutSeconds: 5400, IdleStopAt: at}, "1h30m (stops at " + at.Format(time.RFC3339) + " unless used)"},
		{client.Computer{IdleTimeoutSeconds: 90, ActiveSessions: 2}, "1m30s (busy: 2 open sessions)"},
	} {
		if got := idleLine(&tc.comp); got != tc.want {
			t.Errorf("idleLine(%+v) = %q, want %q", tc.comp, got, tc.want)
		}
	}
}
