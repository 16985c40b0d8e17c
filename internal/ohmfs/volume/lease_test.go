package volume

import (
	"testing"
	"time"
)

// TestLeaseTimingDefaults: zero fields take the defaults, and a timing
// under which a holder could write after its lease expired is refused.
func TestLeaseTimingDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   LeaseTiming
		want LeaseTiming
		bad  bool
	}{
		{name: "zero", want: LeaseTiming{TTL: 30 * time.Second, Renew: 10 * time.Second, Margin: 5 * time.Second}},
		{name: "short", in: shortLease, want: shortLease},
		{name: "margin past TTL", in: LeaseTiming{TTL: time.Second, Renew: 100 * time.Millisecond, Margin: 2 * time.Second}, bad: true},
		{name: "renew after the holder stops", in: LeaseTiming{TTL: 3 * time.Second, Renew: 2 * time.Second, Margin: time.Second}, bad: true},
		{name: "negative", in: LeaseTiming{Renew: -time.Second}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.withDefaults()
			if tt.bad {
				if err == nil {
					t.Fatalf("withDefaults(%+v) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("withDefaults(%+v) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}
