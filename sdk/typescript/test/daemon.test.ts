// The SDK against a real daemon, over its Unix socket and over TCP with a
// token: real computers created, run in, copied to and from, and deleted.
//
// tests/sdk (Go, in `make test`) starts `ohm serve` and runs this with
// OHM_TEST_SOCKET, OHM_TEST_URL and OHM_TEST_TOKEN set; without them it
// skips. Each suite creates one computer and its tests share it, in order;
// the last one stops, starts and deletes it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import * as sdk from "../src/index.js";
import { Computer, Ohm, OhmOptions } from "../src/index.js";

const SOCKET = process.env.OHM_TEST_SOCKET;
const URL_ = process.env.OHM_TEST_URL;
const TOKEN = process.env.OHM_TEST_TOKEN;
const TEMPLATE = process.env.OHM_TEST_TEMPLATE ?? "minimal";

/** The computer's live (not zombie) processes. */
async function ps(c: Computer): Promise<string> {
  return (await c.run("ps -o stat=,args= | grep -v '^Z'")).stdout;
}

async function eventually(cond: () => Promise<boolean>, what: string, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function scenario(title: string, prefix: string, opts: OhmOptions | undefined, extra?: (get: () => { ohm: Ohm; c: Computer }) => void): void {
  describe(title, { skip: opts ? false : "OHM_TEST_* is not set (tests/sdk sets it)" }, () => {
    let ohm: Ohm;
    let c: Computer;
    let tmp: string;

    before(async () => {
      ohm = new Ohm(opts);
      c = await ohm.computers.create({ name: `${prefix}-${randomBytes(3).toString("hex")}`, template: TEMPLATE, diskSizeMb: 256, env: { GREETING: "hi" } });
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ohm-ts-"));
    });
    after(async () => {
      fs.rmSync(tmp, { recursive: true, force: true });
      await ohm.computers.delete(c.name).catch(() => undefined);
      ohm.close();
    });

    it("creates a running computer", async () => {
      assert.equal(c.state, "running");
      assert.equal(c.template, TEMPLATE);
      assert.ok((await ohm.computers.list()).some((x) => x.name === c.name));
      const got = await ohm.computers.get(c.name);
      assert.equal(got.diskSizeMb, 256);
      assert.ok(got.disk && got.disk.sizeBytes > 0);
      assert.ok(got.limits);
      assert.equal(got.workspace?.layout, "block");
      assert.equal(got.stopReason, undefined);
    });

    it("runs commands", async () => {
      const r = await c.run("echo out; echo err >&2; echo $GREETING; exit 3");
      assert.deepEqual([r.exitCode, r.stdout, r.stderr], [3, "out\nhi\n", "err\n"]);
      await assert.rejects(c.run("echo boom >&2; exit 4", { check: true }), (e: sdk.CommandFailedError) => e instanceof sdk.CommandFailedError && e.exitCode === 4 && /boom/.test(e.message));
      assert.equal((await c.run(["printf", "%s|", "a b", "c"], { workdir: "/tmp" })).stdout, "a b|c|");
      assert.equal((await c.run("id -un", { user: "root" })).stdout.trim(), "root");
      assert.deepEqual((await c.run("cat", { input: Buffer.from("piped\0bytes") })).stdoutBytes, Buffer.from("piped\0bytes"));
      assert.deepEqual((await c.run("printf '\\377\\376'")).stdoutBytes, Buffer.from([0xff, 0xfe]));
    });

    it("streams output as it comes", async () => {
      const kinds: [string, string][] = [];
      let exit: number | undefined;
      for await (const ev of await c.runStream("echo one; sleep 0.2; echo two >&2; exit 5")) {
        if (ev.kind === "exit") exit = ev.exitCode;
        else if (ev.kind !== "dropped") kinds.push([ev.kind, ev.text]);
      }
      assert.deepEqual(kinds, [["stdout", "one\n"], ["stderr", "two\n"]]);
      assert.equal(exit, 5);
      // Closing the stream kills the command.
      const s = await c.runStream("echo up; exec sleep 1001");
      const first = await s[Symbol.asyncIterator]().next();
      assert.equal((first.value as { text: string }).text, "up\n");
      s.close();
      await eventually(async () => !(await ps(c)).includes("sleep 1001"), "the command to die with its stream");
    });

    it("sets the idle timeout", async () => {
      assert.equal(c.idleTimeoutSeconds, 1800); // the daemon's default
      await c.set({ idleTimeoutSeconds: 7200 });
      assert.equal(c.idleTimeoutSeconds, 7200);
      await assert.rejects(c.set({ idleTimeoutSeconds: -1 }), (e: Error) => e instanceof sdk.BadRequestError && /negative/.test(e.message));
      assert.equal((await ohm.computers.get(c.name)).idleTimeoutSeconds, 7200);
    });

    it("answers typed errors", async () => {
      await assert.rejects(ohm.computers.get("no-such-computer"), (e: Error) => e instanceof sdk.NotFoundError && /no-such-computer/.test(e.message));
      await assert.rejects(ohm.computers.create({ name: c.name, template: TEMPLATE, diskSizeMb: 256 }), sdk.AlreadyExistsError);
      await assert.rejects(c.start(), sdk.WrongStateError);
      await assert.rejects(ohm.computers.create({ name: "Bad_Name", template: TEMPLATE, diskSizeMb: 256 }), sdk.BadRequestError);
      await assert.rejects(c.run("true", { workdir: "relative" }), sdk.BadRequestError);
      await assert.rejects(c.files.read("/home/ohm/missing"), sdk.NotFoundError);
      await assert.rejects(ohm.computer("ghost").run("true"), sdk.NotFoundError);
      await assert.rejects(ohm.computer("ghost").shell({ command: "true" }), sdk.NotFoundError);
    });

    it("moves files", async () => {
      const f = c.files;
      assert.equal(await f.write("/home/ohm/a.txt", "hi"), 2);
      assert.equal(await f.readText("/home/ohm/a.txt"), "hi");
      const blob = randomBytes(3 << 20);
      const local = path.join(tmp, "blob");
      fs.writeFileSync(local, blob);
      assert.equal(await f.upload(local, "/home/ohm/blob"), blob.length);
      const back = path.join(tmp, "blob.back");
      await f.download("/home/ohm/blob", back);
      assert.ok(fs.readFileSync(back).equals(blob));
      const st = await f.stat("/home/ohm/a.txt");
      assert.deepEqual([st.type, st.size, st.name], ["file", 2, "a.txt"]);
      assert.equal(await f.exists("/home/ohm/a.txt"), true);
      assert.equal(await f.exists("/home/ohm/nope"), false);
      const listing = await f.list("/home/ohm");
      const names = listing.map((e) => e.name);
      assert.ok(names.includes("a.txt"));
      assert.deepEqual(names, [...names].sort());
      assert.equal(listing.truncated, false);
      const one = await f.list("/home/ohm", { limit: 1 });
      assert.equal(one.length, 1);
      assert.equal(one.truncated, true, "a listing cut at its limit must say so");
    });

    it("moves directories", async () => {
      const src = path.join(tmp, "repo");
      fs.mkdirSync(path.join(src, "sub", "deep"), { recursive: true });
      fs.writeFileSync(path.join(src, "README"), "readme\n", { mode: 0o755 });
      fs.chmodSync(path.join(src, "README"), 0o755);
      fs.writeFileSync(path.join(src, "sub", "deep", "x.bin"), Buffer.alloc(100000, 1));
      fs.symlinkSync("sub/deep/x.bin", path.join(src, "link"));
      await c.files.uploadDir(src, "/home/ohm/repo");
      const r = await c.run("cd /home/ohm/repo && cat README && readlink link && wc -c < sub/deep/x.bin && stat -c %a README");
      assert.deepEqual(r.stdout.split(/\s+/).filter(Boolean), ["readme", "sub/deep/x.bin", "100000", "755"]);
      await c.run("echo made-inside > /home/ohm/repo/sub/new.txt", { check: true });
      const dst = path.join(tmp, "repo.back");
      await c.files.downloadDir("/home/ohm/repo", dst);
      assert.equal(fs.readFileSync(path.join(dst, "sub", "new.txt"), "utf8"), "made-inside\n");
      assert.ok(fs.readFileSync(path.join(dst, "sub", "deep", "x.bin")).equals(Buffer.alloc(100000, 1)));
      assert.equal(fs.readlinkSync(path.join(dst, "link")), "sub/deep/x.bin");
      assert.equal(fs.statSync(path.join(dst, "README")).mode & 0o777, 0o755);
    });

    it("runs background processes", async () => {
      const p = await c.runBackground("echo started; echo oops >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished; exit 4");
      assert.equal(p.state, "running");
      assert.ok((await c.processes()).some((x) => x.id === p.id));
      assert.equal((await c.process(p.id)).state, "running");
      await c.run("touch /tmp/go", { check: true });
      const r = await p.wait();
      assert.deepEqual([r.exitCode, r.stdout, r.stderr], [4, "started\nfinished\n", "oops\n"]);
      assert.deepEqual([p.state, p.exitCode], ["exited", 4]);
      const long = await c.runBackground(["sleep", "1002"]);
      await long.kill();
      await assert.rejects(c.process(long.id), sdk.NotFoundError);
      await eventually(async () => !(await ps(c)).includes("sleep 1002"), "the killed process to be gone");
    });

    it("opens shells with a PTY", async () => {
      const sh = await c.shell({ rows: 30, cols: 100 });
      sh.write("stty size; echo $((6*7))-marker\n");
      assert.match((await sh.readUntil("42-marker")).toString(), /30 100/);
      sh.resize(40, 120);
      sh.write("stty size\n");
      await sh.readUntil("40 120");
      sh.write("exit 7\n");
      assert.equal(await sh.wait(30000), 7);
      // Without a PTY, stdout and stderr stay apart and stdin ends.
      const cat = await c.shell({ command: "cat; echo done >&2", tty: false });
      cat.write("abc");
      cat.closeStdin();
      const r = await cat.collect();
      assert.deepEqual([r.stdout, r.stderr, r.exitCode], ["abc", "done\n", 0]);
    });

    it("comes back to a background shell", async () => {
      const sh = await c.shell({ command: "read line; echo got $line; sleep 0.3; exit 2", tty: false, background: true });
      assert.ok(sh.process);
      const id = sh.process.id;
      sh.close();
      const p = await c.process(id);
      assert.equal(p.state, "running");
      const again = await p.connect();
      again.write("again\n");
      await again.readUntil("got again");
      assert.equal(await again.wait(30000), 2);
    });

    it("runs concurrently and aborts", async () => {
      const rs = await Promise.all([0, 1, 2, 3, 4].map((i) => c.run(`echo ${i}; exit ${i}`)));
      assert.deepEqual(rs.map((r) => [r.stdout, r.exitCode]), [0, 1, 2, 3, 4].map((i) => [`${i}\n`, i]));
      const ac = new AbortController();
      const running = c.run("echo x > /tmp/abort-started; exec sleep 1003", { signal: ac.signal });
      await eventually(() => c.files.exists("/tmp/abort-started"), "the command to start");
      ac.abort();
      await assert.rejects(running);
      await eventually(async () => !(await ps(c)).includes("sleep 1003"), "an aborted run to be killed");
    });

    it("grows the root disk", async () => {
      try {
        await c.resize(320);
        assert.equal(c.diskSizeMb, 320);
      } catch (e) {
        // This host cannot grow a mounted ext4 (no CAP_SYS_RESOURCE): the
        // size is recorded and the disk grows at the next start.
        if (!(e instanceof sdk.WrongStateError) || !/CAP_SYS_RESOURCE/.test(e.message)) throw e;
        await c.stop();
        await c.start();
      }
      const got = await ohm.computers.get(c.name);
      assert.equal(got.diskSizeMb, 320);
      assert.equal(got.disk?.sizeBytes, 320 * 1024 * 1024);
      await assert.rejects(c.resize(256), (e: Error) => e instanceof sdk.BadRequestError && /shrink/.test(e.message));
      await assert.rejects(ohm.computer("ghost").resize(512), sdk.NotFoundError);
    });

    it("exposes ports", async () => {
      assert.deepEqual(await c.ports(), []);
      // Nothing needs to listen on a port to expose it (a request would then answer 502).
      const p = await c.expose(3000);
      assert.deepEqual([p.port, p.public], [3000, false]);
      assert.ok(p.createdAt);
      // The daemon serves TCP, so the URL is there whichever way this client came.
      assert.ok(p.url.startsWith(`http://3000-${c.name}.localhost:`) && p.url.includes("ohm_token="), p.url);
      const pub = await c.expose(3000, { public: true });
      assert.equal(pub.public, true);
      assert.ok(!pub.url.includes("ohm_token"), pub.url);
      await c.expose(8080);
      assert.deepEqual((await c.ports()).map((x) => [x.port, x.public]).sort(), [[3000, true], [8080, false]]);
      assert.equal((await c.unexpose(3000)).port, 3000);
      assert.deepEqual((await c.ports()).map((x) => x.port), [8080]);
      await c.unexpose(8080);
      assert.deepEqual(await c.ports(), []);
      await assert.rejects(c.unexpose(3000), sdk.NotFoundError);
      await assert.rejects(c.expose(0), sdk.BadRequestError);
      await assert.rejects(ohm.computer("ghost").ports(), sdk.NotFoundError);
    });

    it("watches changes to files", async () => {
      await assert.rejects(c.watch({ path: "/etc" }), sdk.BadRequestError);
      await assert.rejects(ohm.computer("ghost").watch(), sdk.NotFoundError);
      const w = await c.watch({ path: "/home/ohm/watched" });
      assert.equal(w.path, "/home/ohm/watched");
      const guard = setTimeout(() => w.close(), 60000); // a watch that never sees it ends
      const seen: sdk.WatchEvent[] = [];
      try {
        await c.run("mkdir -p /home/ohm/watched && echo hi > /home/ohm/watched/new.txt && touch /home/ohm/elsewhere", { check: true });
        for await (const ev of w) {
          seen.push(ev);
          if (ev.path === "/home/ohm/watched/new.txt") break;
        }
      } finally {
        clearTimeout(guard);
        w.close();
      }
      assert.ok(seen.some((e) => e.type === "created" && e.path === "/home/ohm/watched/new.txt" && !e.dir), JSON.stringify(seen));
      assert.ok(!seen.some((e) => e.path === "/home/ohm/elsewhere"), JSON.stringify(seen));
      // Aborting a signal ends a watch as close does.
      const ac = new AbortController();
      const w2 = await c.watch({ signal: ac.signal });
      const next = w2[Symbol.asyncIterator]().next();
      ac.abort();
      assert.equal((await next).done, true);
    });

    extra?.(() => ({ ohm, c }));

    it("stops, starts and deletes (last)", async () => {
      await c.files.write("/home/ohm/keep.txt", "durable");
      const w = await c.watch();
      const guard = setTimeout(() => w.close(), 60000);
      assert.equal((await c.stop()).state, "stopped");
      const evs: sdk.WatchEvent[] = [];
      for await (const ev of w) evs.push(ev);
      clearTimeout(guard);
      assert.equal(evs.at(-1)?.type, "ended", JSON.stringify(evs));
      assert.match(w.reason ?? "", /stopped/);
      await assert.rejects(c.watch(), sdk.WrongStateError);
      assert.equal((await ohm.computers.get(c.name)).state, "stopped");
      assert.equal((await c.start()).state, "running");
      assert.equal(await c.files.readText("/home/ohm/keep.txt"), "durable");
      await c.stop();
      assert.equal((await c.run("cat /home/ohm/keep.txt")).stdout, "durable");
      await c.delete();
      await assert.rejects(ohm.computers.get(c.name), sdk.NotFoundError);
    });
  });
}

scenario("over the Unix socket", "tsunix", SOCKET ? { socket: SOCKET } : undefined, (get) => {
  it("serves health, metrics and the OpenAPI document", async () => {
    const { ohm } = get();
    await ohm.health();
    assert.match(await ohm.metrics(), /ohm_computers/);
    assert.equal((await ohm.openapi()).openapi, "3.1.0");
  });
});

scenario("over TCP with a token", "tstcp", URL_ && TOKEN ? { url: URL_, token: TOKEN } : undefined, (get) => {
  it("refuses a wrong token", async () => {
    const bad = new Ohm({ url: URL_, token: "wrong-token-wrong-token-wrong-token" });
    await assert.rejects(bad.computers.list(), sdk.UnauthorizedError);
    await assert.rejects(bad.computer(get().c.name).shell({ command: "true" }), sdk.UnauthorizedError);
    bad.close();
  });
});
