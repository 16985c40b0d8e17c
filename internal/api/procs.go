package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sort"
	"sync"
	"time"

	"ohm/client"
	"ohm/internal/computer"
	"ohm/internal/sandbox"
)

// Bounds on background processes: each keeps at most ringSize bytes of its
// latest output, and a computer has at most maxProcs of them (exited ones
// are forgotten oldest first to make room).
const (
	ringSize = 1 << 20
	maxProcs = 64
)

// processTable holds the background processes of every computer. They
// live in the daemon: a restart of the daemon ends them.
type processTable struct {
	mu    sync.Mutex
	procs map[string]map[string]*process // computer -> id -> process
}

func newProcessTable() *processTable {
	return &processTable{procs: map[string]map[string]*process{}}
}

// process is a command running (or that ran) in the background.
type process struct {
	cancel context.CancelFunc
	done   chan struct{}
	stdin  *io.PipeWriter // nil when the process has no stdin
	resize chan sandbox.WindowSize

	mu     sync.Mutex
	info   client.Process
	chunks []chunk // output, oldest first, at most ringSize bytes
	size   int
	total  int64         // bytes ever written
	notify chan struct{} // closed and replaced on every change
}

// chunk is output of one stream starting at offset off of the process's
// output.
type chunk struct {
	off    int64
	stream byte
	data   []byte
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// add records p under its computer, making room by forgetting the oldest
// exited process; it fails if the computer has maxProcs running.
func (t *processTable) add(p *process) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.procs[p.info.Computer]
	if m == nil {
		m = map[string]*process{}
		t.procs[p.info.Computer] = m
	}
	if len(m) >= maxProcs {
		var oldest *process
		for _, q := range m {
			if q.exited() && (oldest == nil || q.info.StartedAt.Before(oldest.info.StartedAt)) {
				oldest = q
			}
		}
		if oldest == nil {
			return apiErrorf(client.CodeState, "computer %q already runs %d background processes", p.info.Computer, maxProcs)
		}
		delete(m, oldest.info.ID)
	}
	m[p.info.ID] = p
	return nil
}

func (t *processTable) get(name, id string) (*process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.procs[name][id]; p != nil {
		return p, nil
	}
	return nil, apiErrorf(client.CodeNotFound, "computer %q has no background process %q", name, id)
}

func (t *processTable) remove(name, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.procs[name], id)
	if len(t.procs[name]) == 0 {
		delete(t.procs, name)
	}
}

func (t *processTable) list(name string) []client.Process {
	t.mu.Lock()
	ps := make([]*process, 0, len(t.procs[name]))
	for _, p := range t.procs[name] {
		ps = append(ps, p)
	}
	t.mu.Unlock()
	out := make([]client.Process, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// killAll kills and forgets every background process of computer name.
func (t *processTable) killAll(name string) {
	t.mu.Lock()
	ps := t.procs[name]
	delete(t.procs, name)
	t.mu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// count returns the number of running background processes.
func (t *processTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, m := range t.procs {
		for _, p := range m {
			if !p.exited() {
				n++
			}
		}
	}
	return n
}

func (p *process) snapshot() client.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process and waits (briefly) for it to be gone.
func (p *process) kill() {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *process) changed() {
	close(p.notify)
	p.notify = make(chan struct{})
}

// output appends output of stream to the ring, dropping the oldest bytes
// beyond ringSize. It never blocks on readers.
func (p *process) output(stream byte, b []byte) {
	if len(b) > ringSize {
		b = b[len(b)-ringSize:]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chunks = append(p.chunks, chunk{off: p.total, stream: stream, data: append([]byte(nil), b...)})
	p.size += len(b)
	p.total += int64(len(b))
	for p.size > ringSize {
		p.size -= len(p.chunks[0].data)
		p.chunks[0] = chunk{}
		p.chunks = p.chunks[1:]
	}
	p.changed()
}

func (p *process) finish(code int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.info.State = "exited"
	p.info.EndedAt = time.Now().UTC()
	if err != nil {
		p.info.Error = err.Error()
	} else {
		p.info.ExitCode = &code
	}
	close(p.done)
	p.changed()
}

// ringWriter writes one stream of a process into its ring.
type ringWriter struct {
	p      *process
	stream byte
}

func (w ringWriter) Write(b []byte) (int, error) {
	w.p.output(w.stream, b)
	return len(b), nil
}

// sink receives what an attached client is sent.
type sink interface {
	output(stream byte, data []byte) error
	dropped(n int64) error
	end(info client.Process) error
}

// attach sends p's output to s from the oldest byte its ring holds, then
// live, until p exits (then s.end) or ctx ends.
func (p *process) attach(ctx context.Context, s sink) error {
	var next int64
	for {
		p.mu.Lock()
		var out []chunk
		var lost int64
		if len(p.chunks) > 0 && p.chunks[0].off > next {
			lost = p.chunks[0].off - next
			next = p.chunks[0].off
		}
		for _, c := range p.chunks {
			if end := c.off + int64(len(c.data)); end > next {
				out = append(out, chunk{stream: c.stream, data: c.data[next-c.off:]})
				next = end
			}
		}
		exited := p.exited()
		info := p.info
		notify := p.notify
		p.mu.Unlock()
		if lost > 0 {
			if err := s.dropped(lost); err != nil {
				return err
			}
		}
		for _, c := range out {
			if err := s.output(c.stream, c.data); err != nil {
				return err
			}
		}
		if exited {
			return s.end(info)
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startProcess starts req in computer name in the background.
func (s *Server) startProcess(name string, req client.ExecRequest, opts computer.ExecOptions, withStdin bool) (*process, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &process{
		cancel: cancel,
		done:   make(chan struct{}),
		notify: make(chan struct{}),
		info: client.Process{
			ID: newID(), Computer: name, Command: req.Command, Argv: req.Argv,
			State: "running", StartedAt: time.Now().UTC(),
		},
	}
	var stdin io.Reader
	if withStdin {
		pr, pw := io.Pipe()
		p.stdin, stdin = pw, pr
		p.resize = make(chan sandbox.WindowSize, 4)
		opts.Resize = p.resize
	}
	if err := s.procs.add(p); err != nil {
		cancel()
		return nil, err
	}
	start := time.Now()
	go func() {
		code, err := s.m.Exec(ctx, name, opts, stdin, ringWriter{p, client.StreamStdout}, ringWriter{p, client.StreamStderr})
		s.metrics.execDone("background", time.Since(start), err)
		if p.stdin != nil {
			p.stdin.Close()
		}
		p.finish(code, err)
		cancel()
	}()
	return p, nil
}
