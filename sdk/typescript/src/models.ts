/** Plain data the daemon answers with, in camelCase. */

/** The resource limits in force for a computer. */
export interface Limits {
  cpus: number;
  memoryBytes: number;
  pids: number;
}

/** A root disk's size and use, in bytes. */
export interface DiskUsage {
  sizeBytes: number;
  usedBytes: number;
}

/** What a computer's workspace (/home/ohm) holds. */
export interface WorkspaceUsage {
  usedBytes: number;
  storedBytes: number;
  files: number;
  capacityBytes: number;
  /** Age of the oldest metadata change the replica lacks (undefined without a replica). */
  replicaLagSeconds?: number;
  /** "block" (a kernel filesystem on an ohmfs image) or "file". */
  layout?: string;
  /** What went wrong with its storage and was repaired, if anything. */
  incident?: string;
}

/** A computer as the daemon reports it. */
export interface ComputerInfo {
  name: string;
  /** creating, running or stopped */
  state: string;
  template: string;
  diskSizeMb: number;
  cpus: number;
  memoryMb: number;
  pids: number;
  env: Record<string, string>;
  network: boolean;
  createdAt?: Date;
  /** Why it last stopped when that was not asked for (its init died). */
  stopReason?: string;
  stoppedAt?: Date;
  /** Seconds it may go unused before it stops itself; 0: never. */
  idleTimeoutSeconds: number;
  /** When it will stop itself unless used (get/refresh, while running idle). */
  idleStopAt?: Date;
  /** Sessions keeping it busy now (get/refresh). */
  activeSessions: number;
  /** From get/refresh. */
  disk?: DiskUsage;
  workspace?: WorkspaceUsage;
  limits?: Limits;
  /** The egress allow list: with either set, the computer reaches only these. */
  allowHosts?: string[];
  allowCidrs?: string[];
}

/** A path in a computer (a symlink itself, not its target). */
export interface FileInfo {
  path: string;
  name: string;
  /** file, dir, symlink or other */
  type: string;
  size: number;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  mtime?: Date;
  linkTarget?: string;
}

/** A directory listing: its entries sorted by name, and whether the directory has more than the listing's limit returned. */
export type FileList = FileInfo[] & { truncated: boolean };

/** A background process as the daemon reports it. */
export interface ProcessInfo {
  id: string;
  computer: string;
  /** running or exited */
  state: string;
  command?: string;
  argv?: string[];
  exitCode?: number;
  error?: string;
  startedAt?: Date;
  endedAt?: Date;
}

/**
 * One event of a command's output: `stdout`/`stderr` with `data`, `exit`
 * with `exitCode` (always the last), or `dropped` (bytes of a background
 * process's output lost from its ring before they were read).
 */
export type OutputEvent =
  | { kind: "stdout" | "stderr"; data: Buffer; text: string }
  | { kind: "exit"; exitCode: number }
  | { kind: "dropped"; dropped: number };

/** What a command printed and how it exited. A non-zero exit code is a result, not an error. */
export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
  stderrBytes: Buffer;
}

function time(s: unknown): Date | undefined {
  if (typeof s !== "string" || s.startsWith("0001-01-01")) return undefined;
  return new Date(s);
}

/* eslint-disable @typescript-eslint/no-explicit-any */

export function computerFromWire(d: any): ComputerInfo {
  return {
    name: d.name,
    state: d.state,
    template: d.template ?? "",
    diskSizeMb: d.disk_size_mb ?? 0,
    cpus: d.cpus ?? 0,
    memoryMb: d.memory_mb ?? 0,
    pids: d.pids ?? 0,
    env: d.env ?? {},
    network: d.network ?? false,
    createdAt: time(d.created_at),
    stopReason: d.stop_reason || undefined,
    stoppedAt: time(d.stopped_at),
    allowHosts: d.allow_hosts ?? undefined,
    allowCidrs: d.allow_cidrs ?? undefined,
    idleTimeoutSeconds: d.idle_timeout_seconds ?? 0,
    idleStopAt: time(d.idle_stop_at),
    activeSessions: d.active_sessions ?? 0,
    disk: d.disk && { sizeBytes: d.disk.size_bytes ?? 0, usedBytes: d.disk.used_bytes ?? 0 },
    workspace: d.workspace && {
      usedBytes: d.workspace.used_bytes ?? 0,
      storedBytes: d.workspace.stored_bytes ?? 0,
      files: d.workspace.files ?? 0,
      capacityBytes: d.workspace.capacity_bytes ?? 0,
      replicaLagSeconds: d.workspace.replica_lag_seconds,
      layout: d.workspace.layout || undefined,
      incident: d.workspace.incident || undefined,
    },
    limits: d.limits && { cpus: d.limits.cpus ?? 0, memoryBytes: d.limits.memory_bytes ?? 0, pids: d.limits.pids ?? 0 },
  };
}

export function fileFromWire(d: any): FileInfo {
  return {
    path: d.path,
    name: d.name,
    type: d.type,
    size: d.size ?? 0,
    mode: d.mode ?? 0,
    mtime: time(d.mtime),
    linkTarget: d.link_target || undefined,
  };
}

export function processFromWire(d: any): ProcessInfo {
  return {
    id: d.id,
    computer: d.computer,
    state: d.state,
    command: d.command || undefined,
    argv: d.argv || undefined,
    exitCode: d.exit_code ?? undefined,
    error: d.error || undefined,
    startedAt: time(d.started_at),
    endedAt: time(d.ended_at),
  };
}

export function result(exitCode: number, out: Buffer[], err: Buffer[]): CommandResult {
  const stdoutBytes = Buffer.concat(out);
  const stderrBytes = Buffer.concat(err);
  return { exitCode, stdoutBytes, stderrBytes, stdout: stdoutBytes.toString("utf8"), stderr: stderrBytes.toString("utf8") };
}

/**
 * A saved point of a computer's disks (workspace and root disk). Memory
 * and processes are not saved: a restored or forked computer boots fresh
 * on the saved disks.
 */
export interface Checkpoint {
  id: string;
  label: string;
  createdAt?: Date;
  /** What the checkpoint alone holds: what deleting it gives back. */
  bytes: number;
  disks: string[];
}

export function checkpointFromWire(d: any): Checkpoint {
  return { id: d.id, label: d.label ?? "", createdAt: time(d.created_at), bytes: d.bytes ?? 0, disks: d.disks ?? [] };
}

/**
 * An exposed port of a computer and its preview URL: HTTP and WebSocket
 * requests to `url` (on the daemon's TCP listener) reach the port inside
 * the computer.
 */
export interface Port {
  port: number;
  /** Open to anyone who can reach the daemon's TCP listener, without a token. */
  public: boolean;
  /** The preview URL, with the share token unless public; "" when the daemon serves no TCP listener. */
  url: string;
  createdAt?: Date;
}

export function portFromWire(d: any): Port {
  return { port: d.port, public: d.public ?? false, url: d.url ?? "", createdAt: time(d.created_at) };
}

/**
 * One change under a watched path of a computer's workspace: `created`,
 * `modified`, `deleted`, or `moved` (`oldPath` was renamed to `path`),
 * with paths as the computer sees them and `dir` true for a directory;
 * `overflow`: events were dropped (at least `dropped`, 0 unknown) because
 * the reader fell behind, list `path` again to catch up; `ended`, always
 * the last: the watch is over (`reason` says why, e.g. the computer
 * stopped).
 */
export interface WatchEvent {
  type: "watching" | "created" | "modified" | "deleted" | "moved" | "overflow" | "ended";
  path: string;
  oldPath?: string;
  dir: boolean;
  dropped?: number;
  reason?: string;
}

export function watchEventFromWire(d: any): WatchEvent {
  return {
    type: d.type,
    path: d.path ?? "",
    oldPath: d.old_path || undefined,
    dir: d.dir ?? false,
    dropped: d.dropped ?? undefined,
    reason: d.reason || undefined,
  };
}
