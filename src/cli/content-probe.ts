/**
 * What nbdinfo's `content:` line says: the first 8 KiB of an export (all of
 * it when smaller) written to a temporary file and described by
 * `file -b FILE`, run through `/bin/sh` as nbdinfo's popen does, so a
 * missing file(1) gets the shell's message on stderr. The first line of its
 * output is the description, without its newline. When file(1) prints
 * nothing (or is missing) there is no description: nbdinfo 1.14.2 then
 * prints a content line of whatever bytes getline(3) left in its buffer.
 * A read that fails, or that libnbd would refuse as unaligned to the
 * server's minimum block size, gives no description either.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeBytes } from "./content-probe.ts";
 * const text = await describeBytes(new TextEncoder().encode("hello\n"));
 * assert.ok(text === undefined || text.includes("text"), "file(1) may be absent");
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { NbdClient } from "../nbd/client/client.ts";

/** How much of the export's start file(1) is shown, as nbdinfo. */
export const PROBED_BYTES = 8192;

/**
 * Describe the start of the export `client` is connected to, as nbdinfo's
 * content probe, reading up to `size` bytes: the size the server described
 * the export with, which may differ from the one it entered transmission
 * with (nbd-server answers NBD_OPT_INFO with 0; nbdinfo then reads nothing).
 */
export async function probeContent(client: NbdClient, size: number): Promise<string | undefined> {
  const length = Math.min(size, PROBED_BYTES);
  if (length % client.minimumBlock !== 0) return undefined;
  let bytes: Uint8Array = new Uint8Array(0);
  if (length > 0) {
    try {
      bytes = await client.read(0, length);
    } catch (error) {
      if (error instanceof DenbdError) return undefined;
      throw error;
    }
  }
  return await describeBytes(bytes);
}

/** The first line `file -b` prints about `bytes`, or undefined if it prints nothing. */
export async function describeBytes(bytes: Uint8Array): Promise<string | undefined> {
  const path = await Deno.makeTempFile({ prefix: "denbd-content-" });
  try {
    await Deno.writeFile(path, bytes);
    const { stdout } = await new Deno.Command("/bin/sh", {
      args: ["-c", 'file -b "$1"', "sh", path],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).output();
    return firstLine(stdout);
  } finally {
    await Deno.remove(path);
  }
}

/** The first line of `output` without its newline; undefined when `output` is empty. */
export function firstLine(output: Uint8Array): string | undefined {
  if (output.length === 0) return undefined;
  const end = output.indexOf(0x0a);
  return new TextDecoder().decode(end < 0 ? output : output.subarray(0, end));
}
