// Tests of the SDK that need no daemon: its coverage of the OpenAPI
// document, error mapping and where it connects.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import * as tar from "tar";

import * as sdk from "../src/index.js";
import { Computer, Computers, Files, Ohm, OPERATIONS, Process } from "../src/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/test -> sdk/typescript -> repository root
const openapiPath = process.env.OHM_OPENAPI ?? path.join(here, "..", "..", "..", "..", "internal", "api", "openapi.json");
const doc = JSON.parse(fs.readFileSync(openapiPath, "utf8"));

const classes: Record<string, { prototype: object }> = { Ohm, Computers, Computer, Process, Files };

describe("coverage of the API", () => {
  it("has a method for every operation of openapi.json", () => {
    const ids: string[] = [];
    // x-ohm-sdk: false marks what SDKs leave to other clients (MCP).
    for (const ops of Object.values(doc.paths) as Record<string, { operationId: string; "x-ohm-sdk"?: boolean }>[])
      for (const op of Object.values(ops)) if (op["x-ohm-sdk"] !== false) ids.push(op.operationId);
    const missing = ids.filter((id) => !(id in OPERATIONS)).sort();
    assert.deepEqual(missing, [], "operations of openapi.json the TypeScript SDK lacks: add them (see src/operations.ts)");
    const stale = Object.keys(OPERATIONS).filter((id) => !ids.includes(id));
    assert.deepEqual(stale, [], "src/operations.ts lists operations openapi.json does not have");
    for (const [id, target] of Object.entries(OPERATIONS)) {
      const [cls, meth] = target.split(".");
      const proto = classes[cls]?.prototype as Record<string, unknown> | undefined;
      assert.equal(typeof proto?.[meth], "function", `${id}: ${target} does not exist`);
    }
  });

  it("leaves out exactly the MCP transport's operations", () => {
    // An operation marked x-ohm-sdk: false outside /mcp would go uncovered.
    const marked: string[] = [];
    const mcp: string[] = [];
    for (const [p, ops] of Object.entries(doc.paths) as [string, Record<string, { operationId?: string; "x-ohm-sdk"?: unknown }>][])
      for (const [method, op] of Object.entries(ops)) {
        if (typeof op !== "object" || op === null || !op.operationId) continue;
        if ("x-ohm-sdk" in op) {
          assert.equal(op["x-ohm-sdk"], false, `${method} ${p}: x-ohm-sdk is only ever false`);
          marked.push(`${method} ${p}`);
        }
        if (p === "/mcp" || p.startsWith("/mcp/")) mcp.push(`${method} ${p}`);
      }
    assert.notDeepEqual(mcp, [], "openapi.json has no /mcp operations");
    assert.deepEqual(marked.sort(), mcp.sort(), "x-ohm-sdk: false must mark exactly the /mcp operations");
  });

  it("has an error class for every error code", () => {
    for (const code of doc.components.schemas.ErrorBody.properties.code.enum as string[]) {
      assert.ok(sdk.ERRORS_BY_CODE[code], `error code ${code} has no class in src/errors.ts`);
    }
  });
});

describe("errors from a daemon", () => {
  let dir: string;
  let sock: string;
  let srv: http.Server;
  const answers = new Map<string, [number, string]>();
  const seen: (string | undefined)[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ohm-ts-"));
    sock = path.join(dir, "ohm.sock");
    srv = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      const [status, body] = answers.get((req.url ?? "").split("?")[0]) ?? [404, JSON.stringify({ error: { code: "not_found", message: "no" } })];
      res.writeHead(status, { "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    });
    await new Promise<void>((r) => srv.listen(sock, r));
  });
  after(() => {
    srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("maps each code to its class with the daemon's message", async () => {
    const cases: [string, number, new (...a: never[]) => sdk.OhmError][] = [
      ["invalid_argument", 400, sdk.BadRequestError],
      ["unauthenticated", 401, sdk.UnauthorizedError],
      ["not_found", 404, sdk.NotFoundError],
      ["already_exists", 409, sdk.AlreadyExistsError],
      ["failed_precondition", 409, sdk.WrongStateError],
      ["too_large", 413, sdk.TooLargeError],
      ["internal", 500, sdk.InternalError],
      ["unavailable", 503, sdk.ComputerUnreachableError],
    ];
    const c = new Ohm({ socket: sock });
    for (const [code, status, cls] of cases) {
      answers.set("/v1/computers/x", [status, JSON.stringify({ error: { code, message: `it is ${code}` } })]);
      await assert.rejects(c.computers.get("x"), (e: sdk.OhmError) => {
        assert.ok(e instanceof cls, `${code}: ${e.name}`);
        assert.equal(e.message, `it is ${code}`);
        assert.equal(e.code, code);
        assert.equal(e.status, status);
        return true;
      });
    }
    assert.ok(new sdk.AlreadyExistsError("x") instanceof sdk.ConflictError);
    answers.set("/v1/computers/y", [502, "bad gateway"]);
    await assert.rejects(c.computers.get("y"), /502/);
    c.close();
  });

  it("says when no daemon answers", async () => {
    const c = new Ohm({ socket: path.join(dir, "missing.sock") });
    await assert.rejects(c.health(), (e: Error) => e instanceof sdk.DaemonUnreachableError && /missing\.sock/.test(e.message));
  });

  it("reads OHM_URL, OHM_TOKEN and OHM_DATA_DIR", async () => {
    const saved = { ...process.env };
    try {
      process.env.OHM_URL = "unix://" + sock;
      answers.set("/healthz", [200, JSON.stringify({ status: "ok" })]);
      await new Ohm().health();
      process.env.OHM_URL = "http://127.0.0.1:1";
      process.env.OHM_TOKEN = "t0k";
      const tcp = new Ohm();
      assert.deepEqual(tcp.t.authHeaders(), { Authorization: "Bearer t0k" });
      await assert.rejects(tcp.health(), sdk.DaemonUnreachableError);
      delete process.env.OHM_URL;
      process.env.OHM_DATA_DIR = "/srv/ohm";
      assert.equal(new Ohm().t.socketPath, "/srv/ohm/ohm.sock");
    } finally {
      process.env = saved;
    }
    assert.throws(() => new Ohm({ url: "ftp://x" }), TypeError);
  });
});

describe("watches", () => {
  // A daemon's watch stream, one kind per computer name: live (held open
  // until the client goes), ended, cut (no ended event), odd (no watching
  // event first), failed (an error event), bad (a 400).
  let dir: string;
  let sock: string;
  let srv: http.Server;
  let gone: Promise<void>;
  let wentAway: () => void = () => undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ohm-ts-w-"));
    sock = path.join(dir, "ohm.sock");
    srv = http.createServer((req, res) => {
      const u = new URL(req.url ?? "/", "http://ohm");
      const name = u.pathname.split("/")[3];
      const p = u.searchParams.get("path") ?? "/home/ohm";
      if (name === "bad") {
        const body = JSON.stringify({ error: { code: "invalid_argument", message: "path outside /home/ohm" } });
        res.writeHead(400, { "Content-Length": Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      res.writeHead(200, { "Content-Type": "application/x-ndjson" });
      const line = (ev: unknown) => res.write(JSON.stringify(ev) + "\n");
      if (name !== "odd") line({ type: "watching", path: p, dir: true });
      line({ type: "created", path: p + "/a", dir: true });
      if (name === "failed") {
        line({ error: { code: "internal", message: "the feed broke" } });
        res.end();
      } else if (name === "ended") {
        line({ type: "moved", path: p + "/b", old_path: p + "/a/b" });
        line({ type: "overflow", path: p, dropped: 7, reason: "the reader fell behind" });
        line({ type: "ended", reason: "the computer stopped: stopped on request" });
        res.end();
      } else if (name === "live") {
        res.on("close", () => wentAway());
      } else {
        res.end();
      }
    });
    await new Promise<void>((r) => srv.listen(sock, r));
  });
  after(() => {
    srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("gives the events up to ended", async () => {
    const o = new Ohm({ socket: sock });
    const w = await o.computer("ended").watch({ path: "/home/ohm/src" });
    assert.equal(w.path, "/home/ohm/src");
    const evs: sdk.WatchEvent[] = [];
    for await (const ev of w) evs.push(ev);
    assert.deepEqual(evs, [
      { type: "created", path: "/home/ohm/src/a", oldPath: undefined, dir: true, dropped: undefined, reason: undefined },
      { type: "moved", path: "/home/ohm/src/b", oldPath: "/home/ohm/src/a/b", dir: false, dropped: undefined, reason: undefined },
      { type: "overflow", path: "/home/ohm/src", oldPath: undefined, dir: false, dropped: 7, reason: "the reader fell behind" },
      { type: "ended", path: "", oldPath: undefined, dir: false, dropped: undefined, reason: "the computer stopped: stopped on request" },
    ]);
    assert.equal(w.reason, "the computer stopped: stopped on request");
    o.close();
  });

  it("says what is wrong with a broken stream", async () => {
    const o = new Ohm({ socket: sock });
    await assert.rejects(o.computer("bad").watch({ path: "/etc" }), sdk.BadRequestError);
    await assert.rejects(o.computer("odd").watch(), /watching/);
    const cut = (await o.computer("cut").watch())[Symbol.asyncIterator]();
    assert.equal((await cut.next()).value?.type, "created");
    await assert.rejects(cut.next(), /without an ended event/);
    const failed = (await o.computer("failed").watch())[Symbol.asyncIterator]();
    assert.equal((await failed.next()).value?.type, "created");
    await assert.rejects(failed.next(), sdk.InternalError);
    o.close();
  });

  it("ends on close and on abort", async () => {
    const o = new Ohm({ socket: sock });
    for (const how of ["close", "abort"]) {
      gone = new Promise((r) => (wentAway = r));
      const ac = new AbortController();
      const w = await o.computer("live").watch({ signal: ac.signal });
      const it = w[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.type, "created");
      const pending = it.next(); // waits: nothing more comes
      if (how === "close") w.close();
      else ac.abort();
      assert.deepEqual(await pending, { done: true, value: undefined }, how);
      await gone;
    }
    o.close();
  });
});

describe("directory downloads", () => {
  it("refuse what would write outside the destination", async () => {
    // The same archive an evil computer could send: a symlink out, then a file through it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ohm-ts-x-"));
    const outside = path.join(dir, "outside");
    fs.mkdirSync(outside);
    const src = path.join(dir, "src");
    fs.mkdirSync(src);
    fs.symlinkSync(outside, path.join(src, "link"));
    const archive = path.join(dir, "a.tar");
    await tar.create({ cwd: src, file: archive, portable: true }, ["link"]);
    // Append an entry "link/planted".
    const planted = path.join(dir, "p");
    fs.mkdirSync(path.join(planted, "link"), { recursive: true });
    fs.writeFileSync(path.join(planted, "link", "planted"), "x");
    await tar.replace({ cwd: planted, file: archive }, ["link/planted"]);
    const srv = http.createServer((_req, res) => {
      res.writeHead(200, { "Content-Type": "application/x-tar" });
      fs.createReadStream(archive).pipe(res);
    });
    const sock = path.join(dir, "s.sock");
    await new Promise<void>((r) => srv.listen(sock, r));
    try {
      const c = new Ohm({ socket: sock }).computer("evil");
      await assert.rejects(c.files.downloadDir("/home/ohm", path.join(dir, "dest")));
      assert.deepEqual(fs.readdirSync(outside), []);
    } finally {
      srv.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
