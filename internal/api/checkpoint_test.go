package api

import (
	"context"
	"testing"
	"time"

	"ohm/client"
)

// TestCheckpointAPI drives checkpoints, restore and fork of a real
// computer through the Go client.
func TestCheckpointAPI(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	if _, err := c.Create(ctx, client.CreateRequest{Name: "ck", Template: "minimal", DiskSizeMB: 128}, nil); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, c, "ck", "echo one > /home/ohm/f && sync"); code != 0 {
		t.Fatalf("write: %s", out)
	}
	began := time.Now()
	ck, err := c.Checkpoint(ctx, "ck", "first")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint over the API: %v", time.Since(began).Round(time.Millisecond))
	if ck.ID == "" || ck.Label != "first" || len(ck.Disks) == 0 {
		t.Fatalf("checkpoint: %+v", ck)
	}
	run(t, c, "ck", "echo two > /home/ohm/f && sync")
	list, err := c.Checkpoints(ctx, "ck")
	if err != nil || len(list) != 1 || list[0].ID != ck.ID {
		t.Fatalf("checkpoints: %+v, %v", list, err)
	}

	for _, tt := range []struct {
		what string
		err  error
		code string
	}{
		{"checkpoint of a missing computer", func() error { _, err := c.Checkpoint(ctx, "ghost", ""); return err }(), client.CodeNotFound},
		{"bad label", func() error { _, err := c.Checkpoint(ctx, "ck", "a\nb"); return err }(), client.CodeInvalid},
		{"restore of an unknown checkpoint", func() error { _, err := c.Restore(ctx, "ck", "nope"); return err }(), client.CodeNotFound},
		{"restore without a checkpoint", func() error { _, err := c.Restore(ctx, "ck", ""); return err }(), client.CodeInvalid},
		{"fork onto an existing name", func() error { _, err := c.Fork(ctx, "ck", client.ForkRequest{Name: "ck"}); return err }(), client.CodeExists},
		{"fork of an unknown checkpoint", func() error {
			_, err := c.Fork(ctx, "ck", client.ForkRequest{Name: "ck2", Checkpoint: "nope"})
			return err
		}(), client.CodeNotFound},
		{"delete of an unknown checkpoint", c.DeleteCheckpoint(ctx, "ck", "nope"), client.CodeNotFound},
	} {
		if !isCode(tt.err, tt.code) {
			t.Errorf("%s: %v, want code %s", tt.what, tt.err, tt.code)
		}
	}
	if out, _ := run(t, c, "ck", "cat /home/ohm/f"); out != "two\n" {
		t.Fatalf("bad input changed the computer: %q", out)
	}

	comp, err := c.Restore(ctx, "ck", ck.ID)
	if err != nil || comp.State != "running" {
		t.Fatalf("restore: %+v, %v", comp, err)
	}
	if out, _ := run(t, c, "ck", "cat /home/ohm/f"); out != "one\n" {
		t.Fatalf("after restore: %q", out)
	}
	fork, err := c.Fork(ctx, "ck", client.ForkRequest{Name: "ck2"})
	if err != nil || fork.Name != "ck2" || fork.State != "running" {
		t.Fatalf("fork: %+v, %v", fork, err)
	}
	run(t, c, "ck2", "echo fork > /home/ohm/f && sync")
	if out, _ := run(t, c, "ck", "cat /home/ohm/f"); out != "one\n" {
		t.Fatalf("the fork's write shows in the parent: %q", out)
	}
	if err := c.DeleteCheckpoint(ctx, "ck", ck.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := c.Checkpoints(ctx, "ck"); len(list) != 0 {
		t.Fatalf("checkpoints after delete: %+v", list)
	}
}
