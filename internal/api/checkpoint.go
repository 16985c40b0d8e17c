package api

import (
	"net/http"

	"ohm/client"
	"ohm/internal/computer"
)

// The checkpoint endpoints (docs/checkpoints.md): checkpoints of a
// computer's disks, restore, and fork.

// routeCheckpoints adds the checkpoint endpoints to s.
func (s *Server) routeCheckpoints() {
	s.handle("POST /v1/computers/{name}/checkpoints", s.checkpoint)
	s.handle("GET /v1/computers/{name}/checkpoints", s.listCheckpoints)
	s.handle("DELETE /v1/computers/{name}/checkpoints/{id}", s.deleteCheckpoint)
	s.handle("POST /v1/computers/{name}/restore", s.restore)
	s.handle("POST /v1/computers/{name}/fork", s.fork)
}

// wireCheckpoint is the wire form of a checkpoint.
func wireCheckpoint(c computer.Checkpoint) client.Checkpoint {
	disks := c.Disks
	if disks == nil {
		disks = []string{}
	}
	return client.Checkpoint{ID: c.ID, Label: c.Label, CreatedAt: c.CreatedAt, Bytes: c.Bytes, Disks: disks}
}

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.CheckpointRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.m.Checkpoint(r.Context(), name, req.Label)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wireCheckpoint(c))
}

func (s *Server) listCheckpoints(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cs, err := s.m.Checkpoints(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.CheckpointList{Checkpoints: make([]client.Checkpoint, 0, len(cs))}
	for _, c := range cs {
		out.Checkpoints = append(out.Checkpoints, wireCheckpoint(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.m.DeleteCheckpoint(r.Context(), name, id); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.CheckpointDeleted{ID: id, State: "deleted"})
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.RestoreRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Checkpoint == "" {
		s.fail(w, r, invalid("restore needs a checkpoint"))
		return
	}
	s.procs.killAll(name) // a restore restarts the computer
	if err := s.m.Restore(r.Context(), name, req.Checkpoint); err != nil {
		s.fail(w, r, err)
		return
	}
	rec, err := s.m.Get(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireRecord(rec))
}

func (s *Server) fork(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.ForkRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.m.Fork(r.Context(), name, req.Name, req.Checkpoint)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wireComputer(c))
}
