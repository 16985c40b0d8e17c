/**
 * Typed errors of the Ohm SDK. Every error the daemon answers becomes the
 * class of its code (see `ErrorBody.code` in the daemon's OpenAPI
 * document), carrying the daemon's one-sentence message.
 */

/** An error from the Ohm daemon, or from talking to it. */
export class OhmError extends Error {
  /** The daemon's stable error code, e.g. "not_found". */
  readonly code: string;
  /** The HTTP status (undefined for an error inside a stream). */
  readonly status?: number;

  constructor(message: string, code = "unknown", status?: number) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}

/** Bad input: a name, a size, a path, an option (invalid_argument, 400). */
export class BadRequestError extends OhmError {}
/** A missing or wrong bearer token on TCP (unauthenticated, 401). */
export class UnauthorizedError extends OhmError {}
/** No such computer, file or background process (not_found, 404). */
export class NotFoundError extends OhmError {}
/** The request conflicts with the computer's state or name (409). */
export class ConflictError extends OhmError {}
/** A computer with that name exists (already_exists, 409). */
export class AlreadyExistsError extends ConflictError {}
/** The computer is in the wrong state, e.g. start of a running one (failed_precondition, 409). */
export class WrongStateError extends ConflictError {}
/** A request body over the daemon's limit (too_large, 413). */
export class TooLargeError extends OhmError {}
/** The computer does not answer: its sandbox is gone; stop and start it (unavailable, 503). */
export class ComputerUnreachableError extends OhmError {}
/** Something failed inside the daemon (internal, 500). */
export class InternalError extends OhmError {}
/** No Ohm daemon answers where the client was pointed. */
export class DaemonUnreachableError extends OhmError {}

/** A command exited non-zero and the caller asked `check: true`. */
export class CommandFailedError extends OhmError {
  readonly result: { exitCode: number; stdout: string; stderr: string };
  readonly exitCode: number;

  constructor(result: { exitCode: number; stdout: string; stderr: string }) {
    const tail = (result.stderr || result.stdout).trim().split("\n").slice(-3).filter(Boolean);
    super(`command exited with code ${result.exitCode}${tail.length ? ": " + tail.join(" / ") : ""}`, "command_failed");
    this.result = result;
    this.exitCode = result.exitCode;
  }
}

type ErrorClass = new (message: string, code?: string, status?: number) => OhmError;

/**
 * The class of each wire code. A code the daemon adds maps here; until
 * then it arrives as the class of its HTTP status, or OhmError.
 */
export const ERRORS_BY_CODE: Record<string, ErrorClass> = {
  invalid_argument: BadRequestError,
  unauthenticated: UnauthorizedError,
  not_found: NotFoundError,
  already_exists: AlreadyExistsError,
  failed_precondition: WrongStateError,
  too_large: TooLargeError,
  internal: InternalError,
  unavailable: ComputerUnreachableError,
};

const BY_STATUS: Record<number, ErrorClass> = {
  400: BadRequestError,
  401: UnauthorizedError,
  404: NotFoundError,
  409: ConflictError,
  413: TooLargeError,
  500: InternalError,
  503: ComputerUnreachableError,
};

/** The typed error of a daemon's error answer. */
export function errorFor(code: string | undefined, message: string, status?: number): OhmError {
  const cls = (code && ERRORS_BY_CODE[code]) || (status && BY_STATUS[status]) || OhmError;
  return new cls(message, code || "unknown", status);
}
