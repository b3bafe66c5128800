/**
 * systemd socket activation (sd_listen_fds(3)) as qemu-nbd reads it: when
 * LISTEN_PID is this process's id and LISTEN_FDS a number, the process was
 * handed that many listening sockets from descriptor 3 on. The variables
 * are then removed, so that no child process takes them for its own.
 *
 * Reading the environment needs `--allow-env`; without it the variables are
 * read from /proc/self/environ (the environment the process started with),
 * so that an activated server never overlooks its socket and listens
 * elsewhere instead.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { takeActivatedSockets } from "./socket-activation.ts";
 * // Not started by a socket activator (LISTEN_PID, if set, names another process).
 * if (Deno.env.get("LISTEN_PID") === undefined) assert.equal(takeActivatedSockets(), 0);
 * ```
 * @module
 */

/** The first inherited descriptor (SD_LISTEN_FDS_START). */
export const FIRST_ACTIVATED_FD = 3;

/** The variables of the protocol, removed once read. */
const ACTIVATION_VARIABLES = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] as const;

/** The value of environment variable `name`, from /proc when env access is not granted. */
function variable(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
  }
  try {
    const entries = Deno.readTextFileSync("/proc/self/environ").split("\0");
    return entries.find((entry) => entry.startsWith(`${name}=`))?.slice(name.length + 1);
  } catch {
    return undefined;
  }
}

/**
 * How many sockets this process was handed from {@linkcode FIRST_ACTIVATED_FD}
 * on (0 when it was not activated), after removing the variables.
 */
export function takeActivatedSockets(): number {
  const pid = variable("LISTEN_PID");
  const count = variable("LISTEN_FDS");
  if (pid === undefined || !/^\d+$/.test(pid) || Number(pid) !== Deno.pid) return 0;
  if (count === undefined || !/^\d+$/.test(count)) return 0;
  for (const name of ACTIVATION_VARIABLES) {
    try {
      Deno.env.delete(name);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotCapable)) throw error;
    }
  }
  return Number(count);
}
