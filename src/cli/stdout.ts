/**
 * Write to standard output completely (Deno.stdout.write may write only
 * part of a large buffer).
 *
 * @example
 * ```ts
 * import { writeStdout } from "./stdout.ts";
 * await writeStdout("hello\n");
 * ```
 * @module
 */

const encoder = new TextEncoder();

/** Write all of `output` (text as UTF-8, or bytes as they are) to standard output. */
export async function writeStdout(output: string | Uint8Array): Promise<void> {
  const bytes = typeof output === "string" ? encoder.encode(output) : output;
  for (let done = 0; done < bytes.length;) {
    done += await Deno.stdout.write(bytes.subarray(done));
  }
}
