package api

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"ohm/client"
	"ohm/internal/computer"
)

// setComputer answers PATCH /v1/computers/{name}: it changes the settings
// the body gives (client.SetRequest) and answers the computer's record.
// Every field is checked before any is changed.
func (s *Server) setComputer(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.SetRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	var opts computer.SetOptions
	if opts.IdleTimeout, err = idleTimeout(req.IdleTimeoutSeconds); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.AllowHosts != nil || req.AllowCIDRs != nil {
		opts.Egress = &computer.EgressChange{AllowHosts: req.AllowHosts, AllowCIDRs: req.AllowCIDRs}
	}
	rec, err := s.m.Set(r.Context(), name, opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireRecord(rec))
}

// idleTimeout turns idle_timeout_seconds into the manager's duration (nil
// stays nil). The manager checks the range; this only refuses what a
// duration cannot hold.
func idleTimeout(seconds *float64) (*time.Duration, error) {
	if seconds == nil {
		return nil, nil
	}
	v := *seconds
	num := strconv.FormatFloat(v, 'f', -1, 64)
	if math.IsNaN(v) || math.IsInf(v, 0) || v > computer.MaxIdleTimeout.Seconds() {
		return nil, invalid("invalid idle_timeout_seconds %s: must be 0 (never stop) or at most %.0f (%s)",
			num, computer.MaxIdleTimeout.Seconds(), computer.FormatDuration(computer.MaxIdleTimeout))
	}
	if v < 0 {
		return nil, invalid("invalid idle_timeout_seconds %s: must not be negative (0 never stops)", num)
	}
	d := time.Duration(math.Round(v*1000)) * time.Millisecond
	return &d, nil
}
