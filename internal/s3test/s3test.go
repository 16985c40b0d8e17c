// Package s3test runs a real S3-compatible server for tests: versitygw
// with its posix backend, on loopback, in a temporary directory. Tests that
// need it skip with a clear message when the binary is not installed
// (`make deps` installs it).
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Binary is the name of the server's executable.
const Binary = "versitygw"

// Credentials of the server's root user.
const (
	AccessKey = "ohmtestaccess"
	SecretKey = "ohmtestsecret0123456789"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{}
	buckets  atomic.Int64
}

// FindBinary returns the path of versitygw: on PATH, or in $GOBIN or
// $(go env GOPATH)/bin where `go install` puts it.
func FindBinary() (string, error) {
	if p, err := exec.LookPath(Binary); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, Binary)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (run `make deps`, or go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)", Binary)
}

// Start runs a server whose data lives under a new temporary directory.
func Start() (*Server, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ohm-s3test-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", addr, "--quiet", "posix", data)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "VGW_QUIET=true")
	// The server dies with the test process, even one killed by a signal
	// (a crash helper that SIGKILLs itself, go test's timeout) that runs
	// no Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &Server{Endpoint: "http://" + addr, dir: dir, cmd: cmd, exited: make(chan struct{})}
	// The death signal is sent when the thread that started the server
	// ends, not the process: Go ends a thread whose goroutine exits
	// locked to it (code that entered a namespace), which killed the
	// server in the middle of tests. So the server is started from a
	// thread kept, locked to the goroutine that waits for it, as long as
	// the server runs.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			out, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s exited at start: %s", bin, strings.TrimSpace(string(out)))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("%s did not listen on %s", bin, addr)
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	if s == nil {
		return
	}
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// DataDir is the posix backend's directory: bucket b is DataDir()/b.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// Env returns the environment variables that point the AWS SDK (and ohm)
// at this server, as KEY=VALUE.
func (s *Server) Env() []string {
	return EnvFor(s.Endpoint)
}

// EnvFor returns the environment that points the AWS SDK at endpoint with
// the server's credentials and no other configuration source.
func EnvFor(endpoint string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent/ohm-s3test",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/ohm-s3test",
	}
}

// SetEnv sets Env() in this process, so that code under test (and the
// binaries it starts) reach this server.
func (s *Server) SetEnv() {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	os.Unsetenv("AWS_ENDPOINT_URL_S3")
	os.Unsetenv("AWS_PROFILE")
	os.Unsetenv("AWS_SESSION_TOKEN")
}

// Client returns an S3 client for the server.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// CreateBucket creates a bucket called name.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("ohm-test-%d-%d", os.Getpid()%100000, s.buckets.Add(1))
	if err := s.CreateBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

var (
	shared    *Server
	sharedErr error
)

// Main is a TestMain body: it starts a server for the package's tests (if
// the binary is installed), points the environment at it, runs the tests
// and stops it. Use Shared in the tests.
func Main(m *testing.M) int {
	shared, sharedErr = Start()
	if shared != nil {
		shared.SetEnv()
		defer shared.Close()
	}
	return m.Run()
}

// Shared returns the server Main started, or skips t saying why there is none.
func Shared(t testing.TB) *Server {
	t.Helper()
	if shared == nil {
		if sharedErr == nil {
			sharedErr = errors.New("s3test.Main was not called from TestMain")
		}
		t.Skipf("no S3 test server: %v", sharedErr)
	}
	return shared
}
