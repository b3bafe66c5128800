/**
 * The byte stream a protocol connection runs over. A TCP or Unix `Deno.Conn`
 * is one; a TLS session (added after STARTTLS) will be another, swapped in
 * under the same reader and writer in the middle of a connection.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ByteStream, writeAll } from "./byte-stream.ts";
 * // A stream that takes at most 2 bytes a write, as a busy socket may.
 * const written: number[] = [];
 * const stream: ByteStream = {
 *   read: () => Promise.resolve(null),
 *   write(data) {
 *     written.push(...data.subarray(0, 2));
 *     return Promise.resolve(Math.min(2, data.length));
 *   },
 *   close() {},
 * };
 * await writeAll(stream, new Uint8Array([1, 2, 3, 4, 5]));
 * assert.deepEqual(written, [1, 2, 3, 4, 5]);
 * ```
 * @module
 */

/** A bidirectional stream of bytes. `Deno.Conn` satisfies it. */
export interface ByteStream {
  /** Read into `buffer`; resolves to the count read, or null at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Write some of `data`; resolves to the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Close both directions. */
  close(): void;
}

/** Write all of `data` to `stream`, looping over short writes. */
export async function writeAll(stream: ByteStream, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await stream.write(data.subarray(done));
}
