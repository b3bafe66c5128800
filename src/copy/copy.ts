/**
 * Copy between NBD exports, local files and streams, as libnbd's nbdcopy
 * does: open both ends, check the destination is large enough, move the
 * data (skipping holes, writing zero ranges efficiently), flush the
 * destination and close both ends on every path.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { copy } from "./copy.ts";
 * const source = await Deno.makeTempFile();
 * const destination = `${source}.copy`;
 * await Deno.writeFile(source, new Uint8Array(1 << 20).fill(7));
 * try {
 *   // Names may also be NBD URIs (nbd://localhost/disk) or "-" for a stream.
 *   await copy(source, destination, { connections: 4 });
 *   assert.deepEqual(await Deno.readFile(destination), await Deno.readFile(source));
 * } finally {
 *   await Deno.remove(source);
 *   await Deno.remove(destination).catch(() => {});
 * }
 * ```
 * @module
 */

import { DenbdError, kindOf, messageOf } from "../errors.ts";
import type { Destination, Source } from "./endpoint.ts";
import { openDestination, openSource } from "./endpoints.ts";
import type { ProgressReporter } from "./progress.ts";
import { transfer } from "./transfer.ts";

/** nbdcopy's defaults for what can be tuned. */
export const COPY_DEFAULTS = {
  /**
   * Connections to each NBD server (used only when it allows multi-conn),
   * at most one per CPU unless asked for explicitly: see {@linkcode defaultConnections}.
   */
  connections: 4,
  /** Requests in flight per connection. */
  requests: 64,
} as const;

/** Bytes read or written per request (nbdcopy's default request size). */
export const REQUEST_SIZE = 256 * 1024;
/** All-zero blocks of this size in data are left as holes (nbdcopy's --sparse default). */
export const SPARSE_BLOCK = 4096;
/**
 * Bytes of data buffers in flight, whatever the connections and requests:
 * 16 requests of {@linkcode REQUEST_SIZE}. nbdcopy's 64 requests per
 * connection, each with a buffer of its own, keep a loopback server no busier;
 * they only cost memory to fault in and cache misses on every copy of the data
 * (issue 12: 4 MiB copied NBD to file fastest, ahead of 2, 8 and 16 MiB).
 * Zero requests hold no buffer and are not bounded by it.
 */
export const BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * The connections used when none are asked for: nbdcopy's 4, but no more
 * than the CPUs, since nbdcopy gives each connection a thread of its own
 * and starts no more threads than there are CPUs.
 */
export function defaultConnections(): number {
  return Math.max(1, Math.min(COPY_DEFAULTS.connections, navigator.hardwareConcurrency));
}

/** Options of {@linkcode copy}. */
export interface CopyOptions {
  /** Connections to each NBD server that allows several ({@linkcode defaultConnections} by default). */
  readonly connections?: number;
  /** Requests in flight per connection. */
  readonly requests?: number;
  /** Receives the progress. */
  readonly progress?: ProgressReporter;
}

/**
 * Copy `sourceName` to `destinationName` (each an NBD URI, a path, or "-"
 * for standard input/output); resolves to the bytes of the source copied
 * (zero ranges included). Errors are DenbdErrors whose message names the end
 * that failed.
 */
export async function copy(
  sourceName: string,
  destinationName: string,
  options: CopyOptions = {},
): Promise<number> {
  const connections = options.connections ?? defaultConnections();
  const requests = options.requests ?? COPY_DEFAULTS.requests;
  const source = await openSource(sourceName, { connections });
  return await closingOnExit(source, async () => {
    const destination = await openDestination(destinationName, {
      connections,
      sourceSize: source.size,
    });
    return await closingOnExit(
      destination,
      () => run(source, destination, connections, requests, options.progress),
    );
  });
}

/** Check sizes, transfer, flush; the progress reporter hears of the start and the end. */
async function run(
  source: Source,
  destination: Destination,
  connections: number,
  requests: number,
  progress: ProgressReporter | undefined,
): Promise<number> {
  if (
    source.size !== undefined && destination.size !== undefined && source.size > destination.size
  ) {
    throw new DenbdError(
      "no-space",
      `${destination.name}: the destination (${destination.size} bytes) is smaller than ` +
        `the source (${source.size} bytes)`,
    );
  }
  const lanes = Math.min(connections, source.connections, destination.connections);
  const maxInFlight = requests * lanes;
  const sequential = source.sequential || destination.sequential;
  const requestSize = Math.min(REQUEST_SIZE, source.maxRequest, destination.maxRequest);
  progress?.start(source.size);
  try {
    const bytes = await transfer(source, destination, {
      requestSize,
      maxInFlight,
      maxBuffers: Math.max(1, Math.min(maxInFlight, Math.floor(BUFFER_BYTES / requestSize))),
      sparseBlock: sequential ? 0 : SPARSE_BLOCK,
      onProgress: progress && ((done) => progress.advance(done)),
    });
    await destination.flush().catch((error) => {
      throw new DenbdError(kindOf(error), `${destination.name}: flush failed: ${messageOf(error)}`);
    });
    progress?.finish(true);
    return bytes;
  } catch (error) {
    progress?.finish(false);
    throw error;
  }
}

/**
 * Run `body`, then close `endpoint`. A failure to close is reported only
 * when `body` succeeded (otherwise the first error is the one that matters).
 */
async function closingOnExit<T>(
  endpoint: Source | Destination,
  body: () => Promise<T>,
): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (error) {
    await endpoint.close().catch(() => {});
    throw error;
  }
  try {
    await endpoint.close();
  } catch (error) {
    throw new DenbdError(kindOf(error), `${endpoint.name}: close failed: ${messageOf(error)}`);
  }
  return result;
}
