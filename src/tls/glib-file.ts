/**
 * Whole-file reads failing with GLib's words (g_file_get_contents), which
 * QEMU puts into its messages about credential files.
 *
 * @module
 */

import { DenbdError, osErrorText } from "../errors.ts";

/**
 * Read a whole file as GLib's g_file_get_contents does, failing with
 * `prefix` and GLib's words for what went wrong.
 */
export async function readFileAsGlib(
  path: string,
  prefix: string,
): Promise<Uint8Array<ArrayBuffer>> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    const what =
      error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied
        ? "Failed to open file"
        : "Error reading file";
    throw new DenbdError(
      "not-found",
      `${prefix}${what} \u201c${path}\u201d: ${osErrorText(error)}`,
      { cause: error },
    );
  }
}
