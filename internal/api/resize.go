package api

import (
	"net/http"

	"ohm/client"
)

// resize grows a computer's root disk (Manager.Resize) and answers the
// computer with its root disk's new size and use.
func (s *Server) resize(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.ResizeRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.DiskSizeMB <= 0 {
		s.fail(w, r, invalid("disk_size_mb must be a positive number of MB, not %d", req.DiskSizeMB))
		return
	}
	if err := s.m.Resize(r.Context(), name, req.DiskSizeMB); err != nil {
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
