package api

import (
	"net/http"

	"ohm/client"
)

// set answers PATCH /v1/computers/{name}: it applies each group of fields
// of the request in turn (egress: setEgress) and answers the computer as
// it is then. A group's bad input is refused before anything changes.
func (s *Server) set(w http.ResponseWriter, r *http.Request) {
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
	if err := s.setEgress(r, name, req); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.m.Info(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireComputer(c))
}
