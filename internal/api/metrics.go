package api

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"ohm/internal/computer"
)

// execBuckets are the upper bounds (seconds) of the exec latency histogram.
var execBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

// metrics counts execs and their latency, for GET /metrics.
type metrics struct {
	mu    sync.Mutex
	execs map[[2]string]uint64 // {mode, result} -> count
	hist  map[string]*histogram
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newMetrics() *metrics {
	return &metrics{execs: map[[2]string]uint64{}, hist: map[string]*histogram{}}
}

// execDone records an exec of mode (stream, interactive, background) that
// took d; err is a failure to run it at all (not a non-zero exit).
func (m *metrics) execDone(mode string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.execs[[2]string{mode, result}]++
	h := m.hist[mode]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(execBuckets))}
		m.hist[mode] = h
	}
	sec := d.Seconds()
	for i, b := range execBuckets {
		if sec <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += sec
	h.count++
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// serveMetrics writes the Prometheus text exposition format (version
// 0.0.4) by hand: the handful of series here need no client library.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	recs, err := s.m.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	defer bw.Flush()

	states := map[computer.State]int{computer.StateCreating: 0, computer.StateRunning: 0, computer.StateStopped: 0}
	for _, rec := range recs {
		states[rec.State]++
	}
	fmt.Fprintln(bw, "# HELP ohm_computers Computers by state.")
	fmt.Fprintln(bw, "# TYPE ohm_computers gauge")
	for _, st := range []computer.State{computer.StateCreating, computer.StateRunning, computer.StateStopped} {
		fmt.Fprintf(bw, "ohm_computers{state=%q} %d\n", st, states[st])
	}

	fmt.Fprintln(bw, "# HELP ohm_background_processes Background processes still running.")
	fmt.Fprintln(bw, "# TYPE ohm_background_processes gauge")
	fmt.Fprintf(bw, "ohm_background_processes %d\n", s.procs.count())

	s.metrics.mu.Lock()
	keys := make([][2]string, 0, len(s.metrics.execs))
	for k := range s.metrics.execs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	fmt.Fprintln(bw, "# HELP ohm_exec_total Commands run, by mode (stream, interactive, background) and result (ok: it ran, whatever its exit code).")
	fmt.Fprintln(bw, "# TYPE ohm_exec_total counter")
	for _, k := range keys {
		fmt.Fprintf(bw, "ohm_exec_total{mode=%q,result=%q} %d\n", k[0], k[1], s.metrics.execs[k])
	}
	modes := make([]string, 0, len(s.metrics.hist))
	for m := range s.metrics.hist {
		modes = append(modes, m)
	}
	sort.Strings(modes)
	fmt.Fprintln(bw, "# HELP ohm_exec_duration_seconds Time from request to exit of commands.")
	fmt.Fprintln(bw, "# TYPE ohm_exec_duration_seconds histogram")
	for _, mode := range modes {
		h := s.metrics.hist[mode]
		var cum uint64
		for i, b := range execBuckets {
			cum += h.counts[i]
			fmt.Fprintf(bw, "ohm_exec_duration_seconds_bucket{mode=%q,le=%q} %d\n", mode, fmtFloat(b), cum)
		}
		fmt.Fprintf(bw, "ohm_exec_duration_seconds_bucket{mode=%q,le=\"+Inf\"} %d\n", mode, h.count)
		fmt.Fprintf(bw, "ohm_exec_duration_seconds_sum{mode=%q} %s\n", mode, fmtFloat(h.sum))
		fmt.Fprintf(bw, "ohm_exec_duration_seconds_count{mode=%q} %d\n", mode, h.count)
	}
	s.metrics.mu.Unlock()

	type wsm struct {
		name string
		u    computer.WorkspaceUsage
	}
	var ws []wsm
	for _, rec := range recs {
		if rec.State == computer.StateCreating {
			continue
		}
		u, err := s.m.WorkspaceUsage(r.Context(), rec.Name)
		if err != nil {
			continue
		}
		ws = append(ws, wsm{rec.Name, u})
	}
	fmt.Fprintln(bw, "# HELP ohm_workspace_used_bytes Logical bytes the files of a computer's workspace hold.")
	fmt.Fprintln(bw, "# TYPE ohm_workspace_used_bytes gauge")
	for _, x := range ws {
		fmt.Fprintf(bw, "ohm_workspace_used_bytes{computer=%q} %d\n", x.name, x.u.UsedBytes)
	}
	fmt.Fprintln(bw, "# HELP ohm_workspace_stored_bytes Bytes a computer's workspace takes in its store, compressed.")
	fmt.Fprintln(bw, "# TYPE ohm_workspace_stored_bytes gauge")
	for _, x := range ws {
		fmt.Fprintf(bw, "ohm_workspace_stored_bytes{computer=%q} %d\n", x.name, x.u.StoredBytes)
	}
	fmt.Fprintln(bw, "# HELP ohm_workspace_replica_lag_seconds Age of the oldest metadata change a workspace's replica lacks.")
	fmt.Fprintln(bw, "# TYPE ohm_workspace_replica_lag_seconds gauge")
	for _, x := range ws {
		if x.u.ReplicaLagSeconds != nil {
			fmt.Fprintf(bw, "ohm_workspace_replica_lag_seconds{computer=%q} %s\n", x.name, fmtFloat(*x.u.ReplicaLagSeconds))
		}
	}
}
