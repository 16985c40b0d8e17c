package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

func filesPath(name, sub, p, user string, tar bool) string {
	q := url.Values{"path": {p}}
	if user != "" {
		q.Set("user", user)
	}
	if tar {
		q.Set("archive", "tar")
	}
	return computerPath(name) + "/files" + sub + "?" + q.Encode()
}

func (c *Client) put(ctx context.Context, path, contentType string, r io.Reader) error {
	req, err := c.newRequest(ctx, http.MethodPut, path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return nil
}

func (c *Client) get(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	// The server ends a download that failed midway with a trailer.
	if msg := resp.Trailer.Get("Ohm-Error"); msg != "" {
		return &Error{Code: CodeInternal, Message: msg}
	}
	return nil
}

// PutFile writes r to the file p in a computer (created or truncated), as
// user (ohm if empty), streaming it.
func (c *Client) PutFile(ctx context.Context, name, p, user string, r io.Reader) error {
	return c.put(ctx, filesPath(name, "", p, user, false), "application/octet-stream", r)
}

// GetFile copies the file p of a computer to w, streaming it.
func (c *Client) GetFile(ctx context.Context, name, p, user string, w io.Writer) error {
	if err := c.get(ctx, filesPath(name, "", p, user, false), w); err != nil {
		return fmt.Errorf("read %s:%s: %w", name, p, err)
	}
	return nil
}

// PutTar extracts the tar stream r into the directory dir of a computer,
// creating it if needed.
func (c *Client) PutTar(ctx context.Context, name, dir, user string, r io.Reader) error {
	return c.put(ctx, filesPath(name, "", dir, user, true), "application/x-tar", r)
}

// GetTar writes the contents of the directory dir of a computer to w as a
// tar stream (names relative to dir).
func (c *Client) GetTar(ctx context.Context, name, dir, user string, w io.Writer) error {
	if err := c.get(ctx, filesPath(name, "", dir, user, true), w); err != nil {
		return fmt.Errorf("read %s:%s: %w", name, dir, err)
	}
	return nil
}

// Stat describes the path p in a computer (a symlink itself, not its
// target).
func (c *Client) Stat(ctx context.Context, name, p, user string) (*FileInfo, error) {
	var fi FileInfo
	if err := c.doJSON(ctx, http.MethodGet, filesPath(name, "/stat", p, user, false), nil, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// ListDir describes the entries of the directory dir in a computer, sorted
// by name.
func (c *Client) ListDir(ctx context.Context, name, dir, user string) ([]FileInfo, error) {
	var out FileList
	if err := c.doJSON(ctx, http.MethodGet, filesPath(name, "/list", dir, user, false), nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}
