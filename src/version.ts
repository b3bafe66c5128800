/**
 * denbd's version, from deno.json (the one place it is written down).
 *
 * @module
 */

import manifest from "../deno.json" with { type: "json" };

/** denbd's own version. */
export const VERSION: string = manifest.version;
