package mcpserver

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/client"
)

func addEgressTools(s *mcp.Server, t tools) {
	mcp.AddTool(s, &mcp.Tool{Name: "set_egress", Description: "Change where a networked computer may connect, at once if it runs: " +
		"allow_hosts (exact names or *.example.org) and allow_cidrs each replace the computer's list when given ([] clears it). " +
		"With a list set, DNS answers only the allowed names and everything else outbound is refused; with both empty it reaches anywhere but the host."}, t.setEgress)
}

// SetEgressInput are the arguments of set_egress: a list left out stays
// as it is.
type SetEgressInput struct {
	Name       string    `json:"name" jsonschema:"the computer"`
	AllowHosts *[]string `json:"allow_hosts,omitempty" jsonschema:"the allowed host names: exact (pypi.org) or *.example.org (the names under it)"`
	AllowCIDRs *[]string `json:"allow_cidrs,omitempty" jsonschema:"the allowed address ranges (198.51.100.0/24)"`
}

// EgressOutput is a computer's egress policy.
type EgressOutput struct {
	Name       string   `json:"name"`
	Network    bool     `json:"network"`
	AllowHosts []string `json:"allow_hosts"`
	AllowCIDRs []string `json:"allow_cidrs"`
}

func (t tools) setEgress(ctx context.Context, _ *mcp.CallToolRequest, in SetEgressInput) (*mcp.CallToolResult, EgressOutput, error) {
	c, err := t.c.Set(ctx, in.Name, client.SetRequest{AllowHosts: in.AllowHosts, AllowCIDRs: in.AllowCIDRs})
	if err != nil {
		return nil, EgressOutput{}, err
	}
	out := EgressOutput{Name: c.Name, Network: c.Network, AllowHosts: c.AllowHosts, AllowCIDRs: c.AllowCIDRs}
	if out.AllowHosts == nil {
		out.AllowHosts = []string{}
	}
	if out.AllowCIDRs == nil {
		out.AllowCIDRs = []string{}
	}
	return nil, out, nil
}
