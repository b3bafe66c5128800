/**
 * Errors as values with a kind. Each layer that meets the outside world maps
 * the kind to its own vocabulary: the NBD layer to an NBD error number, the
 * QMP layer to an error class, the CLI to a message and an exit code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DenbdError, kindOf } from "./errors.ts";
 * const error = new DenbdError("no-space", "write past the end of the export");
 * assert.equal(kindOf(error), "no-space"); // NBD sends ENOSPC for it, QMP a GenericError
 * ```
 * @module
 */

/** What went wrong, independent of how it is reported. */
export type ErrorKind =
  /** The storage failed (EIO and anything unexpected). */
  | "io"
  /** No room, or a write past the end of the device. */
  | "no-space"
  /** A write to something opened or exported read-only. */
  | "read-only"
  /** The request itself is malformed or out of range. */
  | "invalid"
  /** The operation cannot be done this way (e.g. a fast zero that is not fast). */
  | "not-supported"
  /** The request is too large to honour as asked. */
  | "too-large"
  /** The server is shutting down. */
  | "shutdown"
  /** Something the user named does not exist. */
  | "not-found"
  /** A resource is held by someone else (an image lock, a name in use). */
  | "busy";

/** An error with a kind that every layer knows how to report. */
export class DenbdError extends Error {
  /** What went wrong. */
  readonly kind: ErrorKind;

  /** Create an error of `kind` with a human-readable `message`. */
  constructor(kind: ErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DenbdError";
    this.kind = kind;
  }
}

/** The kind of any thrown value: a DenbdError's own kind, otherwise "io". */
export function kindOf(error: unknown): ErrorKind {
  return error instanceof DenbdError ? error.kind : "io";
}

/**
 * The message of an operating-system error without Deno's suffix
 * (" (os error 2): stat '/path'"), e.g. "No such file or directory".
 */
export function osErrorText(error: unknown): string {
  return messageOf(error).replace(/ \(os error \d+\).*$/s, "");
}

/** A one-line message for any thrown value. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
