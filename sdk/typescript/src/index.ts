/**
 * Ohm: Linux computers for AI agents, from TypeScript.
 *
 * ```ts
 * import { Ohm } from "ohm-sdk";
 * const ohm = new Ohm(); // the local daemon's Unix socket
 * const c = await ohm.computers.create({ template: "coding-agent", diskSizeMb: 10240 });
 * console.log((await c.run("df -h / /home/ohm")).stdout);
 * await c.delete();
 * ```
 */

export { Ohm, Computers, Computer, CommandStream, Process, Shell, Files, Watch, DEFAULT_DISK_SIZE_MB } from "./client.js";
export type { Command, CreateOptions, RunOptions, SetOptions } from "./client.js";
export type { Checkpoint, CommandResult, ComputerInfo, DiskUsage, FileInfo, FileList, Limits, OutputEvent, Port, ProcessInfo, WatchEvent, WorkspaceUsage } from "./models.js";
export type { OhmOptions, Body } from "./transport.js";
export { DEFAULT_SOCKET, defaultSocket } from "./transport.js";
export {
  OhmError,
  BadRequestError,
  UnauthorizedError,
  NotFoundError,
  ConflictError,
  AlreadyExistsError,
  WrongStateError,
  TooLargeError,
  ComputerUnreachableError,
  InternalError,
  DaemonUnreachableError,
  CommandFailedError,
  ERRORS_BY_CODE,
} from "./errors.js";
export { OPERATIONS } from "./operations.js";
