package mcpserver

import (
	"context"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/client"
)

// ExposeInput are the arguments of expose and unexpose.
type ExposeInput struct {
	Name   string `json:"name" jsonschema:"the computer"`
	Port   int    `json:"port" jsonschema:"TCP port inside the computer (1-65535) where a server listens on 0.0.0.0 or 127.0.0.1"`
	Public bool   `json:"public,omitempty" jsonschema:"open the preview to anyone who can reach the daemon, without a token (expose only)"`
}

// PortOutput is an exposed port as the tools return it.
type PortOutput struct {
	Port   int    `json:"port"`
	Public bool   `json:"public"`
	URL    string `json:"url,omitempty"`
	// Note says why there is no URL, when there is none.
	Note string `json:"note,omitempty"`
}

func portOut(p *client.Port) PortOutput {
	out := PortOutput{Port: p.Port, Public: p.Public, URL: p.URL}
	if p.URL == "" {
		out.Note = "the daemon serves no TCP listener (ohm serve --listen), so the preview has no URL yet"
	}
	return out
}

func validPort(p int) error {
	if p < 1 || p > 65535 {
		return errors.New("port must be between 1 and 65535")
	}
	return nil
}

func (t tools) expose(ctx context.Context, _ *mcp.CallToolRequest, in ExposeInput) (*mcp.CallToolResult, PortOutput, error) {
	if err := validPort(in.Port); err != nil {
		return nil, PortOutput{}, err
	}
	p, err := t.c.Expose(ctx, in.Name, in.Port, in.Public)
	if err != nil {
		return nil, PortOutput{}, err
	}
	return nil, portOut(p), nil
}

func (t tools) unexpose(ctx context.Context, _ *mcp.CallToolRequest, in ExposeInput) (*mcp.CallToolResult, PortOutput, error) {
	if err := validPort(in.Port); err != nil {
		return nil, PortOutput{}, err
	}
	p, err := t.c.Unexpose(ctx, in.Name, in.Port)
	if err != nil {
		return nil, PortOutput{}, err
	}
	out := portOut(p)
	out.URL, out.Note = "", ""
	return nil, out, nil
}
