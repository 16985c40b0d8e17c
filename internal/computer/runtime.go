package computer

import (
	"context"
	"fmt"
	"io"
	"time"

	"ohm/internal/sandbox"
	"ohm/internal/template"
)

// sandboxes is what the manager needs of internal/sandbox; tests swap it
// to inject failures.
type sandboxes interface {
	CreateDisk(ctx context.Context, spec sandbox.Spec) error
	Start(ctx context.Context, spec sandbox.Spec) (instance, error)
	Attach(ctx context.Context, spec sandbox.Spec) (instance, error)
	Usage(ctx context.Context, spec sandbox.Spec) (sandbox.DiskUsage, error)
	Cleanup(ctx context.Context, spec sandbox.Spec) error
	// Limits reads the limits in force for spec's running computer.
	Limits(ctx context.Context, spec sandbox.Spec) (sandbox.Limits, error)
}

// instance is a running sandbox, with a watch on its init.
type instance interface {
	Exec(ctx context.Context, req sandbox.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	Stop(ctx context.Context, grace time.Duration) error
	// Ended is closed when the computer's init has ended (by itself or
	// through Stop).
	Ended() <-chan struct{}
	// EndReason says why the init ended, once Ended is closed.
	EndReason() string
	// Release ends the watch on the init; the computer keeps running.
	Release()
}

// sandboxRuntime is the real set of sandboxes.
type sandboxRuntime struct{}

// watched is a real sandbox and the watch on its init.
type watched struct {
	*sandbox.Sandbox
	w *sandbox.InitWatch
}

func (s watched) Ended() <-chan struct{} { return s.w.Done() }
func (s watched) EndReason() string      { return s.w.Reason() }
func (s watched) Release()               { s.w.Close(); s.Sandbox.Release() }

func watch(ctx context.Context, sb *sandbox.Sandbox) (instance, error) {
	w, err := sb.WatchInit(ctx)
	if err != nil {
		return nil, err
	}
	return watched{sb, w}, nil
}

func (sandboxRuntime) CreateDisk(ctx context.Context, spec sandbox.Spec) error {
	return sandbox.CreateDisk(ctx, spec)
}

func (sandboxRuntime) Start(ctx context.Context, spec sandbox.Spec) (instance, error) {
	sb, err := sandbox.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	inst, err := watch(ctx, sb)
	if err != nil {
		sb.Stop(context.WithoutCancel(ctx), 0)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	return inst, nil
}

func (sandboxRuntime) Attach(ctx context.Context, spec sandbox.Spec) (instance, error) {
	sb, err := sandbox.Attach(ctx, spec)
	if err != nil {
		return nil, err
	}
	return watch(ctx, sb)
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
