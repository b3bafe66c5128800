/**
 * How failures travel over NBD: the error number sent for each kind of
 * failure, the kind a client makes of each number it receives (derived from
 * the same table), and the text shown for each number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeNbdError, kindOfNbdError, NBD_ERRNO_OF_KIND } from "./errors.ts";
 * const errno = NBD_ERRNO_OF_KIND["no-space"]; // what the server sends
 * assert.equal(describeNbdError(errno), "No space left on device"); // what a client prints
 * assert.equal(kindOfNbdError(errno), "no-space"); // what a client makes of it
 * ```
 * @module
 */

import type { ErrorKind } from "../errors.ts";
import { NBD_ERROR } from "./protocol.ts";

/** The NBD error number a server sends for each kind of failure. */
export const NBD_ERRNO_OF_KIND: Readonly<Record<ErrorKind, number>> = {
  "io": NBD_ERROR.EIO,
  "no-space": NBD_ERROR.ENOSPC,
  "read-only": NBD_ERROR.EPERM,
  "invalid": NBD_ERROR.EINVAL,
  "not-supported": NBD_ERROR.ENOTSUP,
  "too-large": NBD_ERROR.EOVERFLOW,
  "shutdown": NBD_ERROR.ESHUTDOWN,
  "not-found": NBD_ERROR.EINVAL,
  "busy": NBD_ERROR.EIO,
};

/** Human text of each NBD error number, as strerror(3) words it on Linux. */
export const NBD_ERROR_TEXT: Readonly<Record<number, string>> = {
  [NBD_ERROR.EPERM]: "Operation not permitted",
  [NBD_ERROR.EIO]: "Input/output error",
  [NBD_ERROR.ENOMEM]: "Cannot allocate memory",
  [NBD_ERROR.EINVAL]: "Invalid argument",
  [NBD_ERROR.ENOSPC]: "No space left on device",
  [NBD_ERROR.EOVERFLOW]: "Value too large for defined data type",
  [NBD_ERROR.ENOTSUP]: "Operation not supported",
  [NBD_ERROR.ESHUTDOWN]: "Cannot send after transport endpoint shutdown",
};

/** The first kind in {@linkcode NBD_ERRNO_OF_KIND} that maps to each number. */
const KIND_OF_ERRNO = new Map<number, ErrorKind>();
for (const [kind, errno] of Object.entries(NBD_ERRNO_OF_KIND) as [ErrorKind, number][]) {
  if (!KIND_OF_ERRNO.has(errno)) KIND_OF_ERRNO.set(errno, kind);
}
// A server out of memory is a failure of the storage side, not of the request.
KIND_OF_ERRNO.set(NBD_ERROR.ENOMEM, "io");

/**
 * The kind of failure an error number received from a server stands for.
 * Unknown numbers count as EINVAL, as the spec asks of clients.
 */
export function kindOfNbdError(errno: number): ErrorKind {
  return KIND_OF_ERRNO.get(errno) ?? "invalid";
}

/** The text of an NBD error number ("error 42" for unknown ones). */
export function describeNbdError(errno: number): string {
  return NBD_ERROR_TEXT[errno] ?? `error ${errno}`;
}
