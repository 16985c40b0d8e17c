package api

import (
	"errors"
	"fmt"

	"ohm/client"
	"ohm/internal/computer"
	"ohm/internal/sandbox"
)

// The wire types of the API are package ohm/client's, and only its: the
// server writes them and every client (the Go one, the SDKs under sdk/)
// reads them, all held to openapi.json by TestWireTypesMatchOpenAPI. The
// manager keeps its own domain types; this file is the one place that
// turns them into wire types. A field added to a domain type shows up on
// the wire only once it is added here, to the client type and to
// openapi.json (TestWireCoversDomain fails until then).

// wireRecord is the wire form of a computer's registry record.
func wireRecord(r computer.Record) client.Computer {
	return client.Computer{
		Name:       r.Name,
		State:      string(r.State),
		Template:   r.Template,
		DiskSizeMB: r.DiskSizeMB,
		CPUs:       r.CPUs,
		MemoryMB:   r.MemoryMB,
		PIDs:       r.PIDs,
		Env:        r.Env,
		Network:    r.Network,
		CreatedAt:  r.CreatedAt,
		StopReason: r.StopReason,
		StoppedAt:  r.StoppedAt,
		AllowHosts: r.AllowHosts,
		AllowCIDRs: r.AllowCIDRs,

		IdleTimeoutSeconds: r.IdleTimeoutSeconds,
	}
}

// wireComputer is the wire form of a computer with its use and limits.
func wireComputer(c computer.Computer) client.Computer {
	out := wireRecord(c.Record)
	if d := c.Disk; d != nil {
		out.Disk = &client.DiskUsage{SizeBytes: d.SizeBytes, UsedBytes: d.UsedBytes}
	}
	if w := c.Workspace; w != nil {
		out.Workspace = &client.WorkspaceUsage{
			UsedBytes: w.UsedBytes, StoredBytes: w.StoredBytes, Files: w.Files,
			Capacity: w.Capacity, ReplicaLagSeconds: w.ReplicaLagSeconds,
			Layout: w.Layout, Incident: w.Incident,
		}
	}
	if l := c.Limits; l != nil {
		out.Limits = &client.Limits{CPUs: l.CPUs, MemoryBytes: l.MemoryBytes, PIDs: l.PIDs}
	}
	out.IdleStopAt, out.ActiveSessions = c.IdleStopAt, c.ActiveSessions
	return out
}

// domainCodes maps the manager's error codes to the wire's. A code missing
// here answers as internal (and is logged as such).
var domainCodes = map[computer.Code]string{
	computer.CodeInvalid:  client.CodeInvalid,
	computer.CodeNotFound: client.CodeNotFound,
	computer.CodeExists:   client.CodeExists,
	computer.CodeState:    client.CodeState,
	computer.CodeInternal: client.CodeInternal,
}

// apiError is an error the API layer raises itself, with a wire code.
type apiError struct {
	code string
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func apiErrorf(code, format string, args ...any) error {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

// wireError is the error answer for err: its wire code and its message.
func wireError(err error) client.ErrorBody {
	code := client.CodeInternal
	var ae *apiError
	var ce *computer.Error
	switch {
	case errors.As(err, &ae):
		code = ae.code
	case errors.As(err, &ce):
		if c, ok := domainCodes[ce.Code]; ok {
			code = c
		}
	case errors.Is(err, sandbox.ErrUnreachable):
		code = client.CodeUnavailable
	}
	return client.ErrorBody{Code: code, Message: err.Error()}
}
