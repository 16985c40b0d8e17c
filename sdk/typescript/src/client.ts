/** The client: {@link Ohm} and the handles it gives out. Async throughout. */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import * as tar from "tar";
import WebSocket from "ws";

import { CommandFailedError, NotFoundError, OhmError, errorFor } from "./errors.js";
import {
  Checkpoint,
  CommandResult,
  ComputerInfo,
  DiskUsage,
  FileInfo,
  FileList,
  Limits,
  OutputEvent,
  Port,
  ProcessInfo,
  WatchEvent,
  WorkspaceUsage,
  checkpointFromWire,
  computerFromWire,
  fileFromWire,
  portFromWire,
  processFromWire,
  result,
  watchEventFromWire,
} from "./models.js";
import { Body, OhmOptions, Transport, decodeError, eventData, ndjson, readLimited } from "./transport.js";

/** A shell command (run through the computer's shell, `bash -lc`) or an argv run as is. */
export type Command = string | string[];

/** The root disk size `create` asks for when not told (as the CLI does). */
export const DEFAULT_DISK_SIZE_MB = 10240;

/** Options of a command. */
export interface RunOptions {
  env?: Record<string, string>;
  /** Absolute working directory (default the user's home). */
  workdir?: string;
  /** "ohm" (default) or "root". */
  user?: "ohm" | "root";
  /** Seconds after which the command is killed. */
  timeout?: number;
}

const q = encodeURIComponent;

function execBody(command: Command | undefined, o: RunOptions, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const b: Record<string, unknown> = {};
  if (typeof command === "string") b.command = command;
  else if (Array.isArray(command)) b.argv = command;
  if (o.env && Object.keys(o.env).length) b.env = o.env;
  if (o.workdir) b.workdir = o.workdir;
  if (o.user) b.user = o.user;
  if (o.timeout) b.timeout_seconds = o.timeout;
  for (const [k, v] of Object.entries(extra)) if (v) b[k] = v;
  return b;
}

function check(r: CommandResult, wanted: boolean | undefined): CommandResult {
  if (wanted && r.exitCode !== 0) throw new CommandFailedError(r);
  return r;
}

const NDJSON = { Accept: "application/x-ndjson" };

/**
 * A client of one Ohm daemon. `new Ohm()` talks to the local daemon on its
 * Unix socket (`$OHM_DATA_DIR/ohm.sock`, default `/var/lib/ohm/ohm.sock`)
 * unless `$OHM_URL` (and `$OHM_TOKEN`) point elsewhere; `new Ohm({ url,
 * token })` talks TCP (`ohm serve --listen`; `ohm token` prints the token).
 */
export class Ohm {
  /** @internal */
  readonly t: Transport;
  readonly computers: Computers;

  constructor(opts: OhmOptions = {}) {
    this.t = new Transport(opts);
    this.computers = new Computers(this);
  }

  /** Checks that the daemon answers (rejects otherwise). */
  async health(): Promise<void> {
    await this.t.json("GET", "/healthz");
  }

  /** The daemon's Prometheus metrics, as text. */
  async metrics(): Promise<string> {
    const res = await this.t.request("GET", "/metrics");
    return (await readLimited(res, 64 << 20)).toString("utf8");
  }

  /** The daemon's OpenAPI document. */
  async openapi(): Promise<Record<string, unknown>> {
    return this.t.json("GET", "/v1/openapi.json");
  }

  /** A handle on computer `name` without asking the daemon (see `computers.get`). */
  computer(name: string): Computer {
    return new Computer(this, { name, state: "unknown", template: "", diskSizeMb: 0, cpus: 0, memoryMb: 0, pids: 0, env: {}, network: false, idleTimeoutSeconds: 0, activeSessions: 0 });
  }

  /** Closes idle connections (so a program can exit at once). */
  close(): void {
    this.t.close();
  }
}

/** Options of {@link Computers.create}. */
export interface CreateOptions {
  /** Default: a free friendly name. */
  name?: string;
  /** Default: coding-agent. */
  template?: string;
  /** Root disk size in MB (default 10240). */
  diskSizeMb?: number;
  cpus?: number;
  memoryMb?: number;
  env?: Record<string, string>;
  /** Outbound network access (the host's loopback stays out of reach). */
  network?: boolean;
  /** Limit the network to these host names: exact ("pypi.org") or "*.example.org" (implies network). */
  allowHosts?: string[];
  /** Limit the network to these address ranges ("198.51.100.0/24"; implies network). */
  allowCidrs?: string[];
  /**
   * Seconds it may go unused (no command, shell, file or port traffic)
   * before it stops itself; the daemon's default (1800) when left out, 0 never.
   */
  idleTimeoutSeconds?: number;
  /** Each line of template build output, while the template has to be built first. */
  onProgress?: (line: string) => void;
}

/** What `Computer.set` changes. */
export interface SetOptions {
  /**
   * Seconds it may go unused (no command, shell, file or port traffic)
   * before it stops itself; 0 never. A running computer's countdown starts
   * again from now.
   */
  idleTimeoutSeconds?: number;
  /**
   * Replace the egress allow list of host names (exact, or "*.example.org");
   * an empty list clears it. A running computer follows at once.
   */
  allowHosts?: string[];
  /** Replace the egress allow list of address ranges ("198.51.100.0/24"). */
  allowCidrs?: string[];
}

/** The computers of a daemon: `ohm.computers`. */
export class Computers {
  constructor(private readonly ohm: Ohm) {}

  /** Creates a computer and resolves with it running. */
  async create(opts: CreateOptions = {}): Promise<Computer> {
    const body: Record<string, unknown> = { disk_size_mb: opts.diskSizeMb ?? DEFAULT_DISK_SIZE_MB };
    if (opts.name) body.name = opts.name;
    if (opts.template) body.template = opts.template;
    if (opts.cpus) body.cpus = opts.cpus;
    if (opts.memoryMb) body.memory_mb = opts.memoryMb;
    if (opts.env && Object.keys(opts.env).length) body.env = opts.env;
    if (opts.network) body.network = true;
    if (opts.allowHosts?.length) body.allow_hosts = opts.allowHosts;
    if (opts.allowCidrs?.length) body.allow_cidrs = opts.allowCidrs;
    if (opts.idleTimeoutSeconds !== undefined) body.idle_timeout_seconds = opts.idleTimeoutSeconds;
    const res = await this.ohm.t.request("POST", "/v1/computers", { json: body, headers: NDJSON });
    try {
      for await (const ev of ndjson(res)) {
        if (typeof ev.progress === "string") opts.onProgress?.(ev.progress);
        else if (ev.computer) return new Computer(this.ohm, computerFromWire(ev.computer));
      }
    } finally {
      res.destroy();
    }
    throw new OhmError("create: the daemon ended its answer without a computer");
  }

  /** Every computer, oldest first. */
  async list(): Promise<Computer[]> {
    const out = await this.ohm.t.json<{ computers: unknown[] }>("GET", "/v1/computers");
    return out.computers.map((c) => new Computer(this.ohm, computerFromWire(c)));
  }

  /** Computer `name` with its disk and workspace use and its limits (NotFoundError if none). */
  async get(name: string): Promise<Computer> {
    return new Computer(this.ohm, await this.info(name));
  }

  /** @internal */
  async info(name: string): Promise<ComputerInfo> {
    return computerFromWire(await this.ohm.t.json("GET", `/v1/computers/${q(name)}`));
  }

  /** Deletes computer `name` (stopping it first): root disk, workspace and metadata. */
  async delete(name: string): Promise<void> {
    await this.ohm.t.json("DELETE", `/v1/computers/${q(name)}`);
  }
}

/**
 * A computer: its last known state as properties (from `info`), and what
 * can be done with it.
 */
export class Computer implements ComputerInfo {
  name!: string;
  state!: string;
  template!: string;
  diskSizeMb!: number;
  cpus!: number;
  memoryMb!: number;
  pids!: number;
  env!: Record<string, string>;
  network!: boolean;
  createdAt?: Date;
  stopReason?: string;
  stoppedAt?: Date;
  idleTimeoutSeconds!: number;
  idleStopAt?: Date;
  activeSessions!: number;
  disk?: DiskUsage;
  workspace?: WorkspaceUsage;
  limits?: Limits;
  allowHosts?: string[];
  allowCidrs?: string[];
  readonly files: Files;

  /** @internal */
  constructor(
    readonly ohm: Ohm,
    info: ComputerInfo,
  ) {
    this.assign(info);
    this.files = new Files(this);
  }

  private assign(info: ComputerInfo): void {
    Object.assign(this, info);
  }

  /** @internal */
  get path(): string {
    return `/v1/computers/${q(this.name)}`;
  }

  /** Reads the computer's state, use and limits again. */
  async refresh(): Promise<this> {
    this.assign(await this.ohm.computers.info(this.name));
    return this;
  }

  /** Starts the computer (WrongStateError unless stopped). */
  async start(): Promise<this> {
    this.assign(computerFromWire(await this.ohm.t.json("POST", this.path + "/start")));
    return this;
  }

  /** Stops the computer; its workspace is flushed and kept. */
  async stop(): Promise<this> {
    this.assign(computerFromWire(await this.ohm.t.json("POST", this.path + "/stop")));
    return this;
  }

  /**
   * Changes settings of the computer, running or stopped; a setting left
   * out stays as it is, and bad input (BadRequestError) changes nothing.
   */
  async set(opts: SetOptions): Promise<this> {
    const body: Record<string, unknown> = {};
    if (opts.idleTimeoutSeconds !== undefined) body.idle_timeout_seconds = opts.idleTimeoutSeconds;
    if (opts.allowHosts) body.allow_hosts = opts.allowHosts;
    if (opts.allowCidrs) body.allow_cidrs = opts.allowCidrs;
    this.assign(computerFromWire(await this.ohm.t.json("PATCH", this.path, { json: body })));
    return this;
  }

  /** Deletes the computer with its disk and workspace. */
  async delete(): Promise<void> {
    await this.ohm.computers.delete(this.name);
    this.state = "deleted";
  }

  /** Saves the computer's disks (not memory or processes); a running computer keeps running. */
  async checkpoint(label?: string): Promise<Checkpoint> {
    return checkpointFromWire(await this.ohm.t.json("POST", this.path + "/checkpoints", { json: label ? { label } : {} }));
  }

  /** The computer's checkpoints, oldest first. */
  async checkpoints(): Promise<Checkpoint[]> {
    const out = await this.ohm.t.json<{ checkpoints: unknown[] }>("GET", this.path + "/checkpoints");
    return out.checkpoints.map(checkpointFromWire);
  }

  /** Deletes checkpoint `id`. */
  async deleteCheckpoint(id: string): Promise<void> {
    await this.ohm.t.json("DELETE", this.path + "/checkpoints/" + q(id));
  }

  /** Puts the disks back to `checkpoint`; a running computer is stopped and started again. */
  async restore(checkpoint: string): Promise<this> {
    this.assign(computerFromWire(await this.ohm.t.json("POST", this.path + "/restore", { json: { checkpoint } })));
    return this;
  }

  /** Makes and starts a copy of the computer (from `opts.checkpoint`, or its disks now) sharing their blocks. */
  async fork(opts: { name?: string; checkpoint?: string } = {}): Promise<Computer> {
    const body: Record<string, unknown> = {};
    if (opts.name) body.name = opts.name;
    if (opts.checkpoint) body.checkpoint = opts.checkpoint;
    return new Computer(this.ohm, computerFromWire(await this.ohm.t.json("POST", this.path + "/fork", { json: body })));
  }

  /**
   * Grows the root disk (the space outside /home/ohm) to `diskSizeMb`: a
   * running computer at once (`df` inside shows it as this resolves), a
   * stopped one at its next start. A root disk never shrinks: a smaller
   * size, or growth the host cannot give, rejects with BadRequestError; a
   * computer still being created with WrongStateError. The computer's
   * state comes back with its new `diskSizeMb` and `disk` use.
   */
  async resize(diskSizeMb: number): Promise<this> {
    this.assign(computerFromWire(await this.ohm.t.json("POST", this.path + "/resize", { json: { disk_size_mb: diskSizeMb } })));
    return this;
  }

  /**
   * Exposes TCP `port` of the computer at a preview URL on the daemon's
   * TCP listener (`ohm serve --listen`): HTTP and WebSocket requests to
   * `url` reach the port inside, which a server there listens on (0.0.0.0
   * or 127.0.0.1; until one does, requests answer 502). A private preview
   * (the default) takes the share token its URL carries, or the API
   * token; `public: true` opens it to anyone who can reach the listener.
   * Exposing an exposed port changes only `public`. A port outside
   * 1-65535 rejects with BadRequestError.
   */
  async expose(port: number, opts: { public?: boolean } = {}): Promise<Port> {
    return portFromWire(await this.ohm.t.json("POST", `${this.path}/ports/${port}`, { json: opts.public ? { public: true } : {} }));
  }

  /** The computer's exposed ports with their preview URLs. */
  async ports(): Promise<Port[]> {
    const out = await this.ohm.t.json<{ ports: unknown[] }>("GET", this.path + "/ports");
    return out.ports.map(portFromWire);
  }

  /**
   * Removes the preview URL of `port` (connections already open through
   * it stay until they close) and resolves with what it was;
   * NotFoundError if it is not exposed.
   */
  async unexpose(port: number): Promise<Port> {
    return portFromWire(await this.ohm.t.json("DELETE", `${this.path}/ports/${port}`));
  }

  /**
   * Watches the changes to files under `path` (/home/ohm, the default, or
   * below it; it need not exist yet) of the running computer, and
   * resolves once the watch is in place: changes made after that are
   * reported. `for await (const ev of watch)` gives {@link WatchEvent}s
   * (created, modified, deleted, moved, overflow), the last one "ended"
   * when the computer stops; `close()` (or aborting `signal`, which
   * before the watch is in place rejects this) ends the watch and the
   * loop. Bursts are coalesced per path; a reader that
   * falls behind loses events and gets an "overflow" event instead of
   * holding the computer up. A path outside /home/ohm rejects with
   * BadRequestError; a computer that is not running, or whose workspace
   * predates the block layout, with WrongStateError. A watch is not
   * activity: it does not keep the computer from stopping as idle.
   */
  async watch(opts: { path?: string; signal?: AbortSignal } = {}): Promise<Watch> {
    const res = await this.ohm.t.request("GET", this.path + "/watch", { query: { path: opts.path }, headers: NDJSON, signal: opts.signal });
    const w = new Watch(res);
    let first: IteratorResult<WatchEvent>;
    try {
      first = await w[Symbol.asyncIterator]().next();
    } catch (e) {
      w.close();
      throw e;
    }
    if (first.done || first.value.type !== "watching") {
      w.close();
      throw new OhmError(`watch ${this.name}: the daemon began with ${first.done ? "nothing" : first.value.type}, not a watching event`);
    }
    w.path = first.value.path;
    if (opts.signal) {
      const signal = opts.signal;
      if (signal.aborted) w.close();
      else {
        const abort = () => w.close();
        signal.addEventListener("abort", abort, { once: true });
        w.onClose = () => signal.removeEventListener("abort", abort);
      }
    }
    return w;
  }

  /**
   * Runs a command and resolves with its output and exit code (starting
   * the computer first if stopped). `input` is its stdin; `check: true`
   * rejects with CommandFailedError on a non-zero exit code; aborting
   * `signal` kills it.
   */
  async run(command: Command, opts: RunOptions & { input?: string | Uint8Array; check?: boolean; signal?: AbortSignal } = {}): Promise<CommandResult> {
    if (opts.input !== undefined) {
      const sh = await this.shell({ ...opts, command, tty: false });
      const abort = () => sh.close();
      opts.signal?.addEventListener("abort", abort);
      try {
        if (opts.input.length) sh.write(opts.input);
        sh.closeStdin();
        return check(await sh.collect(), opts.check);
      } finally {
        opts.signal?.removeEventListener("abort", abort);
        sh.close();
      }
    }
    const s = await this.runStream(command, opts);
    return check(await s.collect(), opts.check);
  }

  /**
   * Runs a command, its output coming as it is written: `for await (const
   * ev of stream)`, the last event of kind "exit". Closing the stream (or
   * aborting `signal`) early kills the command.
   */
  async runStream(command: Command, opts: RunOptions & { signal?: AbortSignal } = {}): Promise<CommandStream> {
    const res = await this.ohm.t.request("POST", this.path + "/exec", { json: execBody(command, opts), headers: NDJSON, signal: opts.signal });
    return new CommandStream(res);
  }

  /**
   * Starts a command in the background and resolves as soon as it runs: it
   * outlives this client, its latest output is kept (1 MiB) for
   * {@link Process.attach}, and it runs until it exits or is killed.
   */
  async runBackground(command: Command, opts: RunOptions = {}): Promise<Process> {
    const res = await this.ohm.t.request("POST", this.path + "/exec", { json: execBody(command, opts, { background: true }), headers: NDJSON });
    try {
      for await (const ev of ndjson(res)) {
        if (ev.process) return new Process(this, processFromWire(ev.process));
      }
    } finally {
      res.destroy();
    }
    throw new OhmError("the daemon ended a background exec without a process");
  }

  /** The computer's background processes, running or exited, oldest first. */
  async processes(): Promise<Process[]> {
    const out = await this.ohm.t.json<{ processes: unknown[] }>("GET", this.path + "/processes");
    return out.processes.map((p) => new Process(this, processFromWire(p)));
  }

  /** Background process `id`. */
  async process(id: string): Promise<Process> {
    return new Process(this, processFromWire(await this.ohm.t.json("GET", `${this.path}/processes/${q(id)}`)));
  }

  /**
   * An interactive session over a WebSocket: a login shell (or `command`)
   * with stdin and, unless `tty: false`, a PTY of rows x cols. Closing it
   * kills the command unless `background`, which also makes it a
   * {@link Process} (`shell.process`) to come back to with
   * {@link Process.connect}.
   */
  async shell(opts: RunOptions & { command?: Command; tty?: boolean; rows?: number; cols?: number; background?: boolean } = {}): Promise<Shell> {
    const req = execBody(opts.command, opts, { background: opts.background });
    if (opts.tty !== false) Object.assign(req, { tty: true, rows: opts.rows ?? 24, cols: opts.cols ?? 80 });
    return Shell.open(this, this.path + "/exec", JSON.stringify(req), !!opts.background);
  }
}

/**
 * A command's output as it comes: `for await (const ev of stream)` (the
 * last event is "exit"), or {@link collect} the rest. Closing it before
 * the end kills the command (or, for a background process, detaches).
 */
export class CommandStream implements AsyncIterable<OutputEvent> {
  exitCode?: number;
  private readonly it: AsyncGenerator<OutputEvent>;

  /** @internal */
  constructor(private readonly res: IncomingMessage) {
    this.it = this.events();
  }

  private async *events(): AsyncGenerator<OutputEvent> {
    try {
      for await (const ev of ndjson(this.res)) {
        if (typeof ev.stream === "string") {
          const data = eventData(ev);
          yield { kind: ev.stream === "stderr" ? "stderr" : "stdout", data, text: data.toString("utf8") };
        } else if (typeof ev.dropped === "number") {
          yield { kind: "dropped", dropped: ev.dropped };
        } else if (typeof ev.exit_code === "number") {
          this.exitCode = ev.exit_code;
          yield { kind: "exit", exitCode: ev.exit_code };
          return;
        }
      }
      throw new OhmError("the daemon ended the command's output without an exit code");
    } finally {
      this.res.destroy();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<OutputEvent> {
    return this.it;
  }

  /** Reads the rest of the output and resolves with it and the exit code. */
  async collect(): Promise<CommandResult> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    for await (const ev of this.it) {
      if (ev.kind === "stdout") out.push(ev.data);
      else if (ev.kind === "stderr") err.push(ev.data);
    }
    if (this.exitCode === undefined) throw new OhmError("the command's output was closed before its exit code");
    return result(this.exitCode, out, err);
  }

  /** Stops reading: kills the command unless it runs in the background. */
  close(): void {
    this.res.destroy();
    void this.it.return(undefined);
  }
}

/**
 * The changes under a path of a computer's workspace as they come: `for
 * await (const ev of watch)` (the last event is "ended", with `reason`
 * saying why: the computer stopped). `path` is the watched path. `close()`
 * ends the watch; a loop waiting on the next event then ends, without an
 * error. A stream the daemon cut before its ended event throws OhmError.
 */
export class Watch implements AsyncIterable<WatchEvent> {
  /** The watched path. */
  path = "";
  /** Why the watch ended, once its ended event was read. */
  reason?: string;
  /** @internal */
  onClose?: () => void;
  private closed = false;
  private readonly it: AsyncGenerator<WatchEvent>;

  /** @internal */
  constructor(private readonly res: IncomingMessage) {
    this.it = this.events();
  }

  private async *events(): AsyncGenerator<WatchEvent> {
    try {
      for await (const d of ndjson(this.res)) {
        const ev = watchEventFromWire(d);
        if (ev.type === "ended") {
          this.reason = ev.reason ?? "";
          yield ev;
          return;
        }
        yield ev;
      }
      if (!this.closed) throw new OhmError("the daemon ended the watch without an ended event");
    } catch (e) {
      if (!this.closed) throw e;
      // Closed while a read waited: the watch is simply over.
    } finally {
      this.res.destroy();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return this.it;
  }

  /** Ends the watch. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose?.();
    this.res.destroy();
  }
}

/** A background process: its last known state as properties. */
export class Process implements ProcessInfo {
  id!: string;
  computer!: string;
  state!: string;
  command?: string;
  argv?: string[];
  exitCode?: number;
  error?: string;
  startedAt?: Date;
  endedAt?: Date;

  /** @internal */
  constructor(
    readonly owner: Computer,
    info: ProcessInfo,
  ) {
    Object.assign(this, info);
  }

  private get path(): string {
    return `${this.owner.path}/processes/${q(this.id)}`;
  }

  async refresh(): Promise<this> {
    Object.assign(this, processFromWire(await this.owner.ohm.t.json("GET", this.path)));
    return this;
  }

  /** Its output from the oldest byte still kept, then live, until it exits. Closing the stream detaches. */
  async attach(): Promise<CommandStream> {
    return new CommandStream(await this.owner.ohm.t.request("GET", this.path + "/attach", { headers: NDJSON }));
  }

  /** Waits for it to exit and resolves with its (kept) output and exit code. */
  async wait(): Promise<CommandResult> {
    const r = await (await this.attach()).collect();
    await this.refresh();
    return r;
  }

  /** Kills it (if it still runs) and makes the daemon forget it. */
  async kill(): Promise<this> {
    Object.assign(this, processFromWire(await this.owner.ohm.t.json("DELETE", this.path)));
    return this;
  }

  /** Attaches a {@link Shell} to a process started by `shell({ background: true })`: its output, and stdin to it. Closing detaches. */
  async connect(): Promise<Shell> {
    const sh = await Shell.open(this.owner, this.path + "/attach", undefined, false);
    sh.process = this;
    return sh;
  }
}

type Waiter = { resolve: () => void };

/**
 * An interactive session: `write` stdin, `read`/`readUntil` output (with a
 * PTY both streams come as stdout), `resize`, `closeStdin`, `wait` for the
 * exit code; or `for await` its events.
 */
export class Shell implements AsyncIterable<OutputEvent> {
  process?: Process;
  exitCode?: number;
  private readonly queue: OutputEvent[] = [];
  private pending: Buffer = Buffer.alloc(0) as Buffer;
  private ended = false;
  private error?: Error;
  private waiters: Waiter[] = [];
  private closing = false;
  private readonly done: Promise<void>;

  private constructor(
    private readonly ws: WebSocket,
    private readonly owner: Computer,
  ) {
    this.done = new Promise((resolve) => {
      ws.on("close", () => {
        if (this.exitCode === undefined && !this.error && !this.closing) this.error = new OhmError("the session ended without an exit code");
        this.ended = true;
        this.wake();
        resolve();
      });
    });
    ws.on("error", (e) => {
      if (!this.closing && !this.error) this.error = e;
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    // Only a background session waits on started; no one else must see it fail.
    this.started.catch(() => undefined);
  }

  /** @internal */
  static open(owner: Computer, p: string, request: string | undefined, waitProcess: boolean): Promise<Shell> {
    const t = owner.ohm.t;
    const ws = new WebSocket(t.wsURL(p), { ...t.wsOptions(), maxPayload: 16 << 20, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      let settled = false;
      ws.once("unexpected-response", (_req, res) => {
        settled = true;
        readLimited(res, 1 << 20).then(
          (b) => reject(decodeError(res.statusCode ?? 0, b)),
          (e) => reject(e),
        );
        ws.terminate();
      });
      ws.once("error", (err: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        reject(["ECONNREFUSED", "ENOENT", "EACCES"].includes(err.code ?? "") ? t.unreachable(err) : err);
      });
      ws.once("open", () => {
        const sh = new Shell(ws, owner);
        if (request !== undefined) ws.send(request);
        if (!waitProcess) {
          settled = true;
          resolve(sh);
          return;
        }
        sh.started.then(
          () => {
            settled = true;
            resolve(sh);
          },
          (e) => {
            settled = true;
            reject(e);
          },
        );
      });
    });
  }

  private startedResolve?: () => void;
  private startedReject?: (e: Error) => void;
  private readonly started = new Promise<void>((res, rej) => {
    this.startedResolve = res;
    this.startedReject = rej;
  });

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (data.length > 1) {
        const b = Buffer.from(data.subarray(1));
        this.push({ kind: data[0] === 2 ? "stderr" : "stdout", data: b, text: b.toString("utf8") });
      }
      return;
    }
    const ev = JSON.parse(data.toString("utf8"));
    if (ev.process) {
      this.process = new Process(this.owner, processFromWire(ev.process));
      this.startedResolve?.();
    } else if (typeof ev.dropped === "number") {
      this.push({ kind: "dropped", dropped: ev.dropped });
    } else if (ev.error) {
      this.error = errorFor(ev.error.code, ev.error.message || "the session failed");
      this.startedReject?.(this.error);
      this.ws.close();
    } else if (typeof ev.exit_code === "number") {
      this.exitCode = ev.exit_code;
      this.push({ kind: "exit", exitCode: ev.exit_code });
      this.ws.close();
    }
  }

  private push(ev: OutputEvent): void {
    this.queue.push(ev);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) x.resolve();
    if (this.ended && !this.process) this.startedReject?.(this.error ?? new OhmError("the daemon ended a background session without a process"));
  }

  /** The next event; undefined once the session ended. */
  private async next(timeoutMs?: number): Promise<OutputEvent | undefined> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (;;) {
      const ev = this.queue.shift();
      if (ev) return ev;
      if (this.ended) return undefined;
      await new Promise<void>((resolve, reject) => {
        const w: Waiter = { resolve };
        this.waiters.push(w);
        if (deadline !== undefined) {
          const timer = setTimeout(() => {
            this.waiters = this.waiters.filter((x) => x !== w);
            reject(new OhmError(`no output from the session within ${timeoutMs} ms`, "timeout"));
          }, Math.max(0, deadline - Date.now()));
          w.resolve = () => {
            clearTimeout(timer);
            resolve();
          };
        }
      });
    }
  }

  /** Sends data to the command's stdin. */
  write(data: string | Uint8Array): void {
    this.ws.send(typeof data === "string" ? Buffer.from(data) : data, { binary: true });
  }

  /** Tells the PTY its new window size. */
  resize(rows: number, cols: number): void {
    this.ws.send(JSON.stringify({ type: "resize", rows, cols }));
  }

  /** Closes the command's stdin (it reads end of file). */
  closeStdin(): void {
    this.ws.send(JSON.stringify({ type: "eof" }));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<OutputEvent> {
    for (;;) {
      const ev = await this.next();
      if (!ev) {
        if (this.error) throw this.error;
        return;
      }
      yield ev;
    }
  }

  /** The next output (stdout and stderr alike); empty once the session ended. */
  async read(timeoutMs?: number): Promise<Buffer> {
    if (this.pending.length) {
      const out = this.pending;
      this.pending = Buffer.alloc(0);
      return out;
    }
    for (;;) {
      const ev = await this.next(timeoutMs);
      if (!ev) {
        if (this.error) throw this.error;
        return Buffer.alloc(0);
      }
      if (ev.kind === "stdout" || ev.kind === "stderr") return ev.data;
    }
  }

  /** Output up to and including `marker`; rejects if it did not come within timeoutMs or the session ended first. */
  async readUntil(marker: string | Uint8Array, timeoutMs = 30000): Promise<Buffer> {
    const m = typeof marker === "string" ? Buffer.from(marker) : Buffer.from(marker);
    let buf = this.pending;
    this.pending = Buffer.alloc(0);
    const deadline = Date.now() + timeoutMs;
    while (buf.indexOf(m) < 0) {
      let chunk: Buffer;
      try {
        chunk = await this.read(Math.max(0, deadline - Date.now()));
      } catch (e) {
        this.pending = buf;
        throw new OhmError(`${JSON.stringify(m.toString())} did not come within ${timeoutMs} ms; got ${JSON.stringify(buf.subarray(-200).toString())}: ${(e as Error).message}`, "timeout");
      }
      if (!chunk.length) {
        this.pending = buf;
        throw new OhmError(`the session ended before ${JSON.stringify(m.toString())}; got ${JSON.stringify(buf.subarray(-200).toString())}`);
      }
      buf = Buffer.concat([buf, chunk]);
    }
    const i = buf.indexOf(m) + m.length;
    this.pending = buf.subarray(i);
    return buf.subarray(0, i);
  }

  /** Waits for the command to exit (output not read is dropped) and resolves with its exit code. */
  async wait(timeoutMs?: number): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.done,
        new Promise<void>((_, reject) => {
          if (timeoutMs !== undefined) timer = setTimeout(() => reject(new OhmError(`the session did not end within ${timeoutMs} ms`, "timeout")), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    if (this.error) throw this.error;
    if (this.exitCode === undefined) throw new OhmError("the session ended without an exit code");
    return this.exitCode;
  }

  /** Reads all output until the command exits. */
  async collect(): Promise<CommandResult> {
    const out: Buffer[] = [this.pending];
    const err: Buffer[] = [];
    this.pending = Buffer.alloc(0);
    for await (const ev of this) {
      if (ev.kind === "stdout") out.push(ev.data);
      else if (ev.kind === "stderr") err.push(ev.data);
    }
    return result(await this.wait(), out, err);
  }

  /** Ends the session: kills the command unless it runs in the background (then it detaches). */
  close(): void {
    this.closing = true;
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close();
      setTimeout(() => this.ws.terminate(), 5000).unref();
    }
  }
}

/**
 * Files of a computer: `computer.files`. Paths are absolute paths in the
 * computer; I/O happens inside it as `user` (ohm unless "root"), so paths
 * and symlinks resolve in the computer and cannot reach the host.
 * Transfers stream: any size, constant memory.
 */
export class Files {
  /** @internal */
  constructor(private readonly c: Computer) {}

  private get url(): string {
    return this.c.path + "/files";
  }

  private get t(): Transport {
    return this.c.ohm.t;
  }

  /** Writes data (bytes, text or a stream) to the file at `path`, created or replaced once complete; resolves with the bytes written. */
  async write(p: string, data: Body, opts: { user?: string; size?: number } = {}): Promise<number> {
    const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
    if (opts.size !== undefined) headers["Content-Length"] = String(opts.size);
    const out = await this.t.json<{ bytes: number }>("PUT", this.url, { query: { path: p, user: opts.user }, body: data, headers });
    return out.bytes;
  }

  /** The contents of the file at `path`. */
  async read(p: string, opts: { user?: string } = {}): Promise<Buffer> {
    const res = await this.t.request("GET", this.url, { query: { path: p, user: opts.user } });
    return readLimited(res, Number.MAX_SAFE_INTEGER);
  }

  async readText(p: string, opts: { user?: string } = {}): Promise<string> {
    return (await this.read(p, opts)).toString("utf8");
  }

  /** Copies the local file `localPath` to `path` in the computer. */
  async upload(localPath: string, p: string, opts: { user?: string } = {}): Promise<number> {
    const st = await fsp.stat(localPath);
    return this.write(p, fs.createReadStream(localPath), { ...opts, size: st.size });
  }

  /** Copies the file at `path` to the local file `localPath` (replaced only once complete). */
  async download(p: string, localPath: string, opts: { user?: string } = {}): Promise<void> {
    const res = await this.t.request("GET", this.url, { query: { path: p, user: opts.user } });
    const tmp = path.join(path.dirname(path.resolve(localPath)), `.${path.basename(localPath)}.${process.pid}.${Date.now()}`);
    try {
      await pipeline(res, fs.createWriteStream(tmp, { flags: "wx" }));
      if (!res.complete) throw new OhmError(`download of ${p} was cut short`);
      await fsp.rename(tmp, localPath);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  }

  /** Copies the contents of `localDir` into the directory `path` (created if needed), as a tar stream. Symlinks are copied as symlinks. */
  async uploadDir(localDir: string, p: string, opts: { user?: string } = {}): Promise<void> {
    const entries = (await fsp.readdir(localDir)).sort();
    const body: Readable = entries.length
      ? Readable.from(tar.create({ cwd: localDir, portable: true, follow: false }, entries) as AsyncIterable<Buffer>)
      : Readable.from([Buffer.alloc(1024)]);
    await this.t.json("PUT", this.url, {
      query: { path: p, user: opts.user, archive: "tar" },
      body,
      headers: { "Content-Type": "application/x-tar" },
    });
  }

  /**
   * Copies the contents of the directory `path` into `localDir` (created
   * if needed). What the computer sends cannot write outside localDir:
   * node-tar refuses absolute names, .. and paths through symlinks, and
   * only files, directories and symlinks are made.
   */
  async downloadDir(p: string, localDir: string, opts: { user?: string } = {}): Promise<void> {
    const res = await this.t.request("GET", this.url, { query: { path: p, user: opts.user, archive: "tar" } });
    await fsp.mkdir(localDir, { recursive: true });
    let refused: string | undefined;
    const x = tar.extract({
      cwd: localDir,
      strict: true,
      preserveOwner: false,
      filter: (name, entry) => {
        const type = (entry as { type?: string }).type;
        if (type === "File" || type === "OldFile" || type === "Directory" || type === "SymbolicLink") return true;
        return false;
      },
      onwarn: (code, message) => {
        refused ??= `${code}: ${message}`;
      },
    });
    await pipeline(res, x as unknown as NodeJS.WritableStream);
    const failed = res.trailers["ohm-error"];
    if (failed) throw errorFor("internal", failed);
    if (refused) throw new OhmError(`download of ${p}: refused part of the archive (${refused})`);
  }

  /** Describes `path` (a symlink itself, not its target). */
  async stat(p: string, opts: { user?: string } = {}): Promise<FileInfo> {
    return fileFromWire(await this.t.json("GET", this.url + "/stat", { query: { path: p, user: opts.user } }));
  }

  /**
   * The entries of the directory `path`, sorted by name (at most `limit`,
   * default 10000); `truncated` on the result says the directory has more.
   */
  async list(p: string, opts: { user?: string; limit?: number } = {}): Promise<FileList> {
    const out = await this.t.json<{ entries: unknown[]; truncated?: boolean }>("GET", this.url + "/list", { query: { path: p, user: opts.user, limit: opts.limit } });
    return Object.assign(out.entries.map(fileFromWire), { truncated: out.truncated === true });
  }

  async exists(p: string, opts: { user?: string } = {}): Promise<boolean> {
    try {
      await this.stat(p, opts);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }
}
