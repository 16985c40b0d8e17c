/**
 * Which method covers each operation of the daemon's OpenAPI document.
 *
 * A test holds this table to `internal/api/openapi.json`: an operation the
 * daemon gains fails it until a method here covers it. Adding an operation
 * is: a method on the class that owns the resource (`Computer`, `Process`,
 * `Files`, ...) and a line here.
 */

/** operationId -> "Class.method" of this package that calls it. */
export const OPERATIONS: Record<string, string> = {
  health: "Ohm.health",
  metrics: "Ohm.metrics",
  openapi: "Ohm.openapi",
  createComputer: "Computers.create",
  listComputers: "Computers.list",
  getComputer: "Computers.get",
  deleteComputer: "Computers.delete",
  startComputer: "Computer.start",
  stopComputer: "Computer.stop",
  setComputer: "Computer.set",
  exec: "Computer.runStream",
  execInteractive: "Computer.shell",
  listProcesses: "Computer.processes",
  getProcess: "Computer.process",
  killProcess: "Process.kill",
  attachProcess: "Process.attach",
  getFile: "Files.read",
  putFile: "Files.write",
  statFile: "Files.stat",
  listFiles: "Files.list",
  checkpointComputer: "Computer.checkpoint",
  listCheckpoints: "Computer.checkpoints",
  deleteCheckpoint: "Computer.deleteCheckpoint",
  restoreComputer: "Computer.restore",
  forkComputer: "Computer.fork",
  resizeComputer: "Computer.resize",
  exposePort: "Computer.expose",
  listPorts: "Computer.ports",
  unexposePort: "Computer.unexpose",
  watchComputer: "Computer.watch",
};
