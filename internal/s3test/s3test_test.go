package s3test

import (
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestServerOutlivesThreads ends many of the test process's threads (as
// code that enters a namespace does, its goroutine ending locked to its
// thread): the server, whose death signal follows the thread that started
// it, must keep running.
func TestServerOutlivesThreads(t *testing.T) {
	if _, err := FindBinary(); err != nil {
		t.Skip(err)
	}
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 64; i++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		}()
		<-done
	}
	// The death signal is delivered at once; a dead server refuses.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.Endpoint, "http://"))
	if err != nil {
		t.Fatalf("the server died with a thread of the test: %v", err)
	}
	c.Close()
	select {
	case <-s.exited:
		t.Fatal("the server exited")
	default:
	}
}
