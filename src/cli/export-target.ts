/**
 * What libnbd's tools take where an NBD server is named: a URI, or
 * `[ CMD ARGS ... ]`, a server run for the command through systemd socket
 * activation (see `src/nbd/client/subprocess.ts`) and stopped when the tool
 * is done. `denbd copy` takes two such ends, `info`, `list`, `map` and `dump`
 * one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serverEnds } from "./export-target.ts";
 * assert.deepEqual(serverEnds(["[", "nbdkit", "memory", "1M", "]", "out.img"]), [
 *   { command: ["nbdkit", "memory", "1M"] },
 *   "out.img",
 * ]);
 * ```
 * @module
 */

import { UsageError } from "./flags.ts";
import {
  type ActivatedServer,
  type ServerCommand,
  startActivatedServer,
} from "../nbd/client/subprocess.ts";
import { DenbdError, kindOf, messageOf } from "../errors.ts";

/**
 * The ends the positional arguments name, in order: each one word, or `[`
 * CMD ARGS ... `]` (up to the first `]`), as libnbd's tools read them.
 */
export function serverEnds(positionals: readonly string[]): (string | ServerCommand)[] {
  const ends: (string | ServerCommand)[] = [];
  for (let i = 0; i < positionals.length;) {
    if (positionals[i] !== "[") {
      ends.push(positionals[i++]);
      continue;
    }
    const close = positionals.indexOf("]", i + 1);
    if (close === -1) throw new UsageError("'[' without a matching ']'");
    if (close === i + 1) throw new UsageError("'[ ]' names no command to run");
    ends.push({ command: positionals.slice(i + 1, close) });
    i = close + 1;
  }
  return ends;
}

/**
 * Run `body` with the URI of the one server the positional arguments name:
 * the URI itself, or that of a server started for `[ CMD ARGS ]`, stopped
 * (and reaped) once `body` has settled, whatever it did; `body` gets that
 * server too (null for a URI), to stop it sooner (before exiting on a
 * signal) or to leave its URI out of what is printed, as libnbd's tools do.
 * Errors while talking to a started server are prefixed with the
 * program's name.
 */
export async function withServerUri<T>(
  positionals: readonly string[],
  body: (uri: string, server: ActivatedServer | null) => Promise<T>,
): Promise<T> {
  const ends = serverEnds(positionals);
  if (ends.length !== 1) throw new UsageError("expected exactly one URI or [ CMD ARGS ... ]");
  const [end] = ends;
  if (typeof end === "string") return await body(end, null);
  const server = await startActivatedServer(end.command);
  try {
    return await body(server.uri, server);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new DenbdError(kindOf(error), `${server.name}: ${messageOf(error)}`);
  } finally {
    await server.stop();
  }
}
