/**
 * HTTP to the Ohm daemon over its Unix socket or TCP.
 *
 * Both go through node:http (node:https for TLS): fetch cannot reach a Unix
 * socket, and it drops HTTP trailers, where the daemon reports a directory
 * download that failed midway. One code path for both keeps them alike.
 */

import * as http from "node:http";
import * as https from "node:https";
import * as path from "node:path";
import { Readable } from "node:stream";

import { DaemonUnreachableError, OhmError, errorFor } from "./errors.js";

/** Where the daemon listens when nothing says otherwise (`ohm serve` without --data-dir). */
export const DEFAULT_SOCKET = "/var/lib/ohm/ohm.sock";

/** The socket of the local daemon: `$OHM_DATA_DIR/ohm.sock` or {@link DEFAULT_SOCKET}. */
export function defaultSocket(): string {
  const d = process.env.OHM_DATA_DIR;
  return d ? path.join(d, "ohm.sock") : DEFAULT_SOCKET;
}

/** How to reach a daemon. */
export interface OhmOptions {
  /**
   * `http://HOST:PORT` or `https://HOST:PORT` (TCP, with `token`), or
   * `unix:///path/to/ohm.sock`. Default: `$OHM_URL`, else the local socket.
   */
  url?: string;
  /** The bearer token for TCP (`ohm token`). Default: `$OHM_TOKEN`. */
  token?: string;
  /** A Unix socket to use instead of the default one. */
  socket?: string;
  /** CA certificate(s) to trust for https. */
  ca?: string | Buffer;
}

/** A request body: bytes, text, or a stream. */
export type Body = Uint8Array | string | Readable;

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: Body;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

const MAX_ERROR_BODY = 1 << 20;

export class Transport {
  readonly socketPath?: string;
  readonly host?: string;
  readonly port?: number;
  readonly tls: boolean = false;
  readonly token?: string;
  readonly where: string;
  private readonly ca?: string | Buffer;
  private readonly agent: http.Agent;

  constructor(opts: OhmOptions = {}) {
    let url = opts.url;
    if (url === undefined && opts.socket === undefined) url = process.env.OHM_URL || undefined;
    this.token = opts.token ?? (process.env.OHM_TOKEN || undefined);
    this.ca = opts.ca;
    if (opts.socket !== undefined) {
      this.socketPath = opts.socket;
    } else if (url === undefined) {
      this.socketPath = defaultSocket();
    } else {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        throw new TypeError(`invalid daemon URL ${JSON.stringify(url)}: want http://HOST:PORT, https://HOST:PORT or unix:///PATH`);
      }
      if (u.protocol === "unix:") {
        this.socketPath = decodeURIComponent(u.pathname);
      } else if ((u.protocol === "http:" || u.protocol === "https:") && u.hostname) {
        this.tls = u.protocol === "https:";
        this.host = u.hostname.replace(/^\[(.*)\]$/, "$1");
        this.port = u.port ? Number(u.port) : this.tls ? 443 : 80;
      } else {
        throw new TypeError(`invalid daemon URL ${JSON.stringify(url)}: want http://HOST:PORT, https://HOST:PORT or unix:///PATH`);
      }
    }
    this.where = this.socketPath ?? `${this.host}:${this.port}`;
    this.agent = this.tls ? new https.Agent({ keepAlive: true, ca: this.ca }) : new http.Agent({ keepAlive: true });
  }

  /** Headers that authenticate a request (none on the Unix socket). */
  authHeaders(): Record<string, string> {
    return this.token && this.socketPath === undefined ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /** The URL of path for a WebSocket (the `ws` package's forms). */
  wsURL(p: string): string {
    if (this.socketPath !== undefined) return `ws+unix://${this.socketPath}:${p}`;
    const host = this.host!.includes(":") ? `[${this.host}]` : this.host;
    return `${this.tls ? "wss" : "ws"}://${host}:${this.port}${p}`;
  }

  wsOptions(): { ca?: string | Buffer; headers: Record<string, string> } {
    return { ca: this.ca, headers: this.authHeaders() };
  }

  unreachable(err: NodeJS.ErrnoException): DaemonUnreachableError {
    let hint = "";
    if (this.socketPath !== undefined) {
      if (err.code === "EACCES") hint = " (the socket is root-only: run as root, or use TCP with a token)";
      else if (err.code === "ENOENT" || err.code === "ECONNREFUSED") hint = " (start one with `ohm serve`, or point OHM_URL at one)";
    }
    return new DaemonUnreachableError(`no ohm daemon answers at ${this.where}: ${err.message}${hint}`, "daemon_unreachable");
  }

  /**
   * Sends a request and resolves with the answer once its headers are in;
   * an error answer rejects with its typed error.
   */
  request(method: string, p: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    let url = p;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== "") q.set(k, String(v));
      const s = q.toString();
      if (s) url += "?" + s;
    }
    const headers: Record<string, string> = { ...this.authHeaders(), ...(opts.headers ?? {}) };
    let body: Uint8Array | string | Readable | undefined = opts.body;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers["Content-Type"] = "application/json";
    }
    if (typeof body === "string") body = Buffer.from(body);
    if (body instanceof Uint8Array) headers["Content-Length"] = String(body.byteLength);
    const reqOpts: http.RequestOptions = { method, path: url, headers, agent: this.agent, signal: opts.signal };
    if (this.socketPath !== undefined) {
      reqOpts.socketPath = this.socketPath;
      reqOpts.agent = undefined;
      reqOpts.headers = { Host: "ohm", ...headers };
    } else {
      reqOpts.host = this.host;
      reqOpts.port = this.port;
    }
    return new Promise((resolve, reject) => {
      const req = (this.tls ? https : http).request(reqOpts, (res) => {
        if ((res.statusCode ?? 0) < 300) {
          resolve(res);
          return;
        }
        readLimited(res, MAX_ERROR_BODY).then(
          (b) => reject(decodeError(res.statusCode ?? 0, b)),
          (e) => reject(e),
        );
      });
      req.on("error", (err: NodeJS.ErrnoException) => {
        if (["ECONNREFUSED", "ENOENT", "EACCES", "ENOTFOUND", "EHOSTUNREACH", "ECONNRESET"].includes(err.code ?? "") && !req.reusedSocket) {
          reject(this.unreachable(err));
        } else {
          reject(err);
        }
      });
      if (body instanceof Readable) {
        body.on("error", (e) => req.destroy(e));
        body.pipe(req);
      } else {
        req.end(body);
      }
    });
  }

  /** A request whose JSON answer is parsed. */
  async json<T>(method: string, p: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, p, opts);
    return JSON.parse((await readLimited(res, 64 << 20)).toString("utf8")) as T;
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Reads a whole (bounded) body. */
export async function readLimited(res: Readable, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of res) {
    n += (chunk as Buffer).length;
    if (n > limit) {
      res.destroy();
      throw new OhmError(`answer larger than ${limit} bytes`);
    }
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** The typed error of an error answer. */
export function decodeError(status: number, body: Buffer): OhmError {
  try {
    const e = JSON.parse(body.toString("utf8")).error;
    if (e && e.message) return errorFor(e.code, e.message, status);
  } catch {
    // not JSON: reported below
  }
  const text = body.toString("utf8").trim() || http.STATUS_CODES[status] || "";
  return errorFor(undefined, `the daemon answered ${status}: ${text}`, status);
}

/** The NDJSON events of an answer; an error event throws its typed error. */
export async function* ndjson(res: Readable): AsyncGenerator<Record<string, any>> {
  let buf: Buffer = Buffer.alloc(0);
  for await (const chunk of res) {
    buf = buf.length ? Buffer.concat([buf, chunk as Buffer]) : (chunk as Buffer);
    let i: number;
    while ((i = buf.indexOf(10)) >= 0) {
      const line = buf.subarray(0, i).toString("utf8").trim();
      buf = buf.subarray(i + 1);
      if (line) yield parseEvent(line);
    }
    if (buf.length > 16 << 20) throw new OhmError("an event from the daemon is too long");
  }
  const rest = buf.toString("utf8").trim();
  if (rest) yield parseEvent(rest);
}

function parseEvent(line: string): Record<string, any> {
  let ev: Record<string, any>;
  try {
    ev = JSON.parse(line);
  } catch (e) {
    throw new OhmError(`bad event from the daemon: ${(e as Error).message}`);
  }
  if (ev.error) throw errorFor(ev.error.code, ev.error.message || "the daemon reported an error");
  return ev;
}

/** The output bytes of an exec event (`data` or `data_b64`). */
export function eventData(ev: Record<string, any>): Buffer {
  if (typeof ev.data_b64 === "string") return Buffer.from(ev.data_b64, "base64");
  return Buffer.from(ev.data ?? "", "utf8");
}
