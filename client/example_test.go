package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"ohm/client"
)

// Connect to the local daemon (starting it if none answers), create a
// computer, run a command in it with its output streamed, and delete it.
func Example() {
	ctx := context.Background()
	exe, _ := os.Executable() // the ohm binary, to start the daemon with
	c, err := client.Connect(ctx, "/var/lib/ohm", exe)
	if err != nil {
		log.Fatal(err)
	}
	comp, err := c.Create(ctx, client.CreateRequest{Template: "coding-agent", DiskSizeMB: 10240}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Delete(ctx, comp.Name)
	code, err := c.Exec(ctx, comp.Name, client.ExecRequest{Command: "python3 --version"}, os.Stdout, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", code)
}

// A remote daemon started with `ohm serve --listen 127.0.0.1:7070` needs
// the token `ohm token` prints.
func ExampleNewTCP() {
	c, err := client.NewTCP("http://127.0.0.1:7070", os.Getenv("OHM_TOKEN"), nil)
	if err != nil {
		log.Fatal(err)
	}
	comps, err := c.List(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, comp := range comps {
		fmt.Println(comp.Name, comp.State)
	}
}

// Start a server in the background, leave, and come back to its output.
func ExampleClient_StartBackground() {
	ctx := context.Background()
	c := client.New("/var/lib/ohm/ohm.sock")
	p, err := c.StartBackground(ctx, "einstein", client.ExecRequest{Command: "python3 -m http.server 8000"})
	if err != nil {
		log.Fatal(err)
	}
	ps, _ := c.Processes(ctx, "einstein")
	fmt.Println(len(ps), "background processes")
	// Later: stream what it printed so far and then live, until it exits
	// (or ctx ends, which detaches without killing it)...
	go c.Attach(ctx, "einstein", p.ID, os.Stdout, os.Stderr)
	// ...and stop it.
	if _, err := c.Kill(ctx, "einstein", p.ID); err != nil {
		log.Fatal(err)
	}
}

// Files move as streams: any size, constant memory.
func ExampleClient_PutFile() {
	ctx := context.Background()
	c := client.New("/var/lib/ohm/ohm.sock")
	if err := c.PutFile(ctx, "einstein", "/home/ohm/hello.txt", "", strings.NewReader("hello\n")); err != nil {
		log.Fatal(err)
	}
	if err := c.GetFile(ctx, "einstein", "/home/ohm/hello.txt", "", os.Stdout); err != nil {
		log.Fatal(err)
	}
	// A directory moves as a tar stream.
	f, _ := os.Create("project.tar")
	defer f.Close()
	if err := c.GetTar(ctx, "einstein", "/home/ohm/project", "", f); err != nil {
		log.Fatal(err)
	}
}

// An interactive session: stdin, a PTY of the given size, and window
// resizes, over a WebSocket.
func ExampleClient_Interactive() {
	ctx := context.Background()
	c := client.New("/var/lib/ohm/ohm.sock")
	resize := make(chan client.WindowSize, 1)
	code, err := c.Interactive(ctx, "einstein", client.ExecRequest{TTY: true, Rows: 24, Cols: 80}, os.Stdin, os.Stdout, nil, resize)
	if err != nil {
		log.Fatal(err)
	}
	os.Exit(code)
}
