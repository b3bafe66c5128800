/**
 * Reading a whole file as GLib's g_file_get_contents does, so that what
 * fails is worded as QEMU words it ("Failed to open file “/x”: No such file
 * or directory", "Error reading file “/d”: Is a directory").
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFileLikeGlib } from "./glib-file.ts";
 * await assert.rejects(readFileLikeGlib("/nonexistent"), {
 *   message: "Failed to open file \u201c/nonexistent\u201d: No such file or directory",
 * });
 * ```
 * @module
 */

import { DenbdError, osErrorText } from "./errors.ts";

/** How much is read at a time. */
const CHUNK_BYTES = 64 * 1024;

/** The bytes of the file at `path`; a DenbdError worded as GLib's otherwise. */
export async function readFileLikeGlib(path: string): Promise<Uint8Array> {
  const fail = (what: string, error: unknown) =>
    new DenbdError("not-found", `${what} \u201c${path}\u201d: ${osErrorText(error)}`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw fail("Failed to open file", error);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const chunk = new Uint8Array(CHUNK_BYTES);
      const count = await file.read(chunk);
      if (count === null) break;
      chunks.push(chunk.subarray(0, count));
      total += count;
    }
  } catch (error) {
    throw fail("Error reading file", error);
  } finally {
    file.close();
  }
  const contents = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    contents.set(chunk, offset);
    offset += chunk.length;
  }
  return contents;
}
