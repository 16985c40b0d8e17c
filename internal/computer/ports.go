package computer

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"time"
)

// Port is a port of a computer exposed as a preview URL (the API makes
// the URL; see docs/preview.md).
type Port struct {
	Computer string
	Port     int
	// Public opens the preview to anyone who can reach the daemon's TCP
	// listener; otherwise a request needs the API token or Token.
	Public bool
	// Token is the port's share token: a secret that opens its preview
	// (only), so the URL can be given to a browser without the API token.
	// A new one is made each time the port is exposed anew.
	Token     string
	CreatedAt time.Time
}

// portsMigration is the registry's table of exposed ports. A computer's
// rows go with it (registry.remove).
const portsMigration = `CREATE TABLE ports (
	computer   TEXT NOT NULL,
	port       INTEGER NOT NULL,
	public     INTEGER NOT NULL DEFAULT 0,
	token      TEXT NOT NULL,
	created_at TEXT NOT NULL,
	PRIMARY KEY (computer, port)
);`

// ValidatePort checks that port is a TCP port number.
func ValidatePort(port int) error {
	if port < 1 || port > 65535 {
		return invalidf("invalid port %d: it must be between 1 and 65535", port)
	}
	return nil
}

func notExposed(name string, port int) error {
	return &Error{Code: CodeNotFound, Msg: fmt.Sprintf("port %d of computer %q is not exposed", port, name)}
}

// Expose records port of computer name as exposed, public or not, and
// returns it. Exposing an exposed port changes only Public: its token,
// and so the URLs already handed out, stay.
func (m *Manager) Expose(ctx context.Context, name string, port int, public bool) (Port, error) {
	if err := ValidatePort(port); err != nil {
		return Port{}, err
	}
	unlock := m.lock(name)
	defer unlock()
	if _, err := m.reg.get(ctx, name); err != nil {
		return Port{}, err
	}
	p, err := m.reg.port(ctx, name, port)
	switch {
	case err == nil:
		p.Public = public
	case ErrorCode(err) == CodeNotFound:
		b := make([]byte, 24)
		rand.Read(b)
		p = Port{Computer: name, Port: port, Public: public, Token: base64.RawURLEncoding.EncodeToString(b), CreatedAt: time.Now().UTC()}
	default:
		return Port{}, err
	}
	if err := m.reg.putPort(ctx, p); err != nil {
		return Port{}, err
	}
	return p, nil
}

// Unexpose forgets port of computer name and returns what it was; its
// preview URL stops working at once (connections open through it stay
// until they close).
func (m *Manager) Unexpose(ctx context.Context, name string, port int) (Port, error) {
	if err := ValidatePort(port); err != nil {
		return Port{}, err
	}
	unlock := m.lock(name)
	defer unlock()
	if _, err := m.reg.get(ctx, name); err != nil {
		return Port{}, err
	}
	p, err := m.reg.port(ctx, name, port)
	if err != nil {
		return Port{}, err
	}
	if _, err := m.reg.db.ExecContext(ctx, `DELETE FROM ports WHERE computer = ? AND port = ?`, name, port); err != nil {
		return Port{}, fmt.Errorf("unexpose port %d of %s: %w", port, name, err)
	}
	return p, nil
}

// Ports lists the exposed ports of computer name, lowest first.
func (m *Manager) Ports(ctx context.Context, name string) ([]Port, error) {
	if _, err := m.reg.get(ctx, name); err != nil {
		return nil, err
	}
	return m.reg.ports(ctx, name)
}

// ExposedPort returns port of computer name if it is exposed (an error
// with CodeNotFound if it is not, or the computer does not exist).
func (m *Manager) ExposedPort(ctx context.Context, name string, port int) (Port, error) {
	if err := ValidateName(name); err != nil {
		return Port{}, notExposed(name, port)
	}
	if err := ValidatePort(port); err != nil {
		return Port{}, err
	}
	return m.reg.port(ctx, name, port)
}

// portDialer is what DialPort needs of a sandbox (*sandbox.Sandbox has it).
type portDialer interface {
	DialPort(ctx context.Context, port int) (net.Conn, error)
}

// DialPort connects to TCP port on computer name's loopback, starting the
// computer first if it is stopped (the caller waits). Errors wrap
// sandbox.ErrNotListening when nothing listens there. Whether the port is
// exposed is the caller's business, and so is telling Touch of the
// traffic: an open connection alone (a browser tab's idle keep-alive or
// HMR socket) does not keep the computer from its idle stop.
func (m *Manager) DialPort(ctx context.Context, name string, port int) (net.Conn, error) {
	if err := ValidatePort(port); err != nil {
		return nil, err
	}
	l, release, err := m.ensureRunning(ctx, name)
	if err != nil {
		return nil, err
	}
	// The dial is what counts as use; the countdown starts again after.
	defer release()
	d, ok := l.inst.(portDialer)
	if !ok {
		return nil, fmt.Errorf("computer %q: its sandbox cannot reach its ports", name)
	}
	c, err := d.DialPort(ctx, port)
	if err != nil {
		return nil, fmt.Errorf("reach port %d inside %s: %w", port, name, err)
	}
	return c, nil
}

func (r *registry) putPort(ctx context.Context, p Port) error {
	_, err := r.db.ExecContext(ctx, `INSERT INTO ports (computer, port, public, token, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (computer, port) DO UPDATE SET public = excluded.public`,
		p.Computer, p.Port, p.Public, p.Token, p.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("expose port %d of %s: %w", p.Port, p.Computer, err)
	}
	return nil
}

func scanPort(row interface{ Scan(...any) error }) (Port, error) {
	var p Port
	var created string
	if err := row.Scan(&p.Computer, &p.Port, &p.Public, &p.Token, &created); err != nil {
		return Port{}, err
	}
	p.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return p, nil
}

func (r *registry) port(ctx context.Context, name string, port int) (Port, error) {
	p, err := scanPort(r.db.QueryRowContext(ctx, `SELECT computer, port, public, token, created_at FROM ports WHERE computer = ? AND port = ?`, name, port))
	if errors.Is(err, sql.ErrNoRows) {
		return Port{}, notExposed(name, port)
	}
	if err != nil {
		return Port{}, fmt.Errorf("look up port %d of %s: %w", port, name, err)
	}
	return p, nil
}

func (r *registry) ports(ctx context.Context, name string) ([]Port, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT computer, port, public, token, created_at FROM ports WHERE computer = ? ORDER BY port`, name)
	if err != nil {
		return nil, fmt.Errorf("list ports of %s: %w", name, err)
	}
	defer rows.Close()
	var out []Port
	for rows.Next() {
		p, err := scanPort(rows)
		if err != nil {
			return nil, fmt.Errorf("list ports of %s: %w", name, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// removePorts forgets every exposed port of computer name.
func (r *registry) removePorts(ctx context.Context, name string) error {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM ports WHERE computer = ?`, name); err != nil {
		return fmt.Errorf("forget the ports of %s: %w", name, err)
	}
	return nil
}
