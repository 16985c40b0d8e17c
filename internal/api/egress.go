package api

import (
	"net/http"

	"ohm/client"
	"ohm/internal/computer"
)

// setEgress applies the allow lists of req (PATCH /v1/computers/{name}),
// if it names any.
func (s *Server) setEgress(r *http.Request, name string, req client.SetRequest) error {
	if req.AllowHosts == nil && req.AllowCIDRs == nil {
		return nil
	}
	_, err := s.m.SetEgress(r.Context(), name, computer.EgressChange{AllowHosts: req.AllowHosts, AllowCIDRs: req.AllowCIDRs})
	return err
}
