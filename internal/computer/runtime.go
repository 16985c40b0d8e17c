package computer

import (
	"context"
	"io"
	"time"

	"ohm/internal/sandbox"
	"ohm/internal/template"
)

// runtime is what the manager needs of internal/sandbox; tests swap it to
// inject failures.
type runtime interface {
	CreateDisk(ctx context.Context, spec sandbox.Spec) error
	Start(ctx context.Context, spec sandbox.Spec) (instance, error)
	Attach(ctx context.Context, spec sandbox.Spec) (instance, error)
	Usage(ctx context.Context, spec sandbox.Spec) (sandbox.DiskUsage, error)
	Cleanup(ctx context.Context, spec sandbox.Spec) error
	// Limits reads the limits in force for spec's running computer.
	Limits(ctx context.Context, spec sandbox.Spec) (sandbox.Limits, error)
}

// instance is a running sandbox.
type instance interface {
	Exec(ctx context.Context, req sandbox.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	Stop(ctx context.Context, grace time.Duration) error
}

// sandboxRuntime is the real runtime.
type sandboxRuntime struct{}

func (sandboxRuntime) CreateDisk(ctx context.Context, spec sandbox.Spec) error {
	return sandbox.CreateDisk(ctx, spec)
}

func (sandboxRuntime) Start(ctx context.Context, spec sandbox.Spec) (instance, error) {
	sb, err := sandbox.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (sandboxRuntime) Attach(ctx context.Context, spec sandbox.Spec) (instance, error) {
	sb, err := sandbox.Attach(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (sandboxRuntime) Usage(ctx context.Context, spec sandbox.Spec) (sandbox.DiskUsage, error) {
	return sandbox.Usage(ctx, spec)
}

func (sandboxRuntime) Cleanup(ctx context.Context, spec sandbox.Spec) error {
	return sandbox.Cleanup(ctx, spec)
}

func (sandboxRuntime) Limits(ctx context.Context, spec sandbox.Spec) (sandbox.Limits, error) {
	return sandbox.CurrentLimits(spec)
}

// Templates is what the manager needs of the template cache
// (*template.Store).
type Templates interface {
	List(ctx context.Context) ([]template.Info, error)
	Ensure(ctx context.Context, name string, progress io.Writer) (string, error)
}
