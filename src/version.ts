/**
 * denbd's version, from deno.json (the one place it is written down), and
 * the QEMU release whose interfaces denbd implements.
 *
 * @module
 */

import manifest from "../deno.json" with { type: "json" };

/** denbd's own version. */
export const VERSION: string = manifest.version;

/** The QEMU release whose command lines and protocols denbd follows. */
export const QEMU_API_VERSION = "7.2.0";
