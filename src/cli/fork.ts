/**
 * `denbd serve --fork`, as qemu-nbd's: the command returns once the server
 * listens, and the server goes on in the background. A Deno program cannot
 * fork, so the parent runs itself again (the same program, permissions and
 * arguments) with {@linkcode FORK_CHILD_ENV} set, in a session of its own,
 * and relays what the child writes to standard error until the child says
 * it is ready (a marker on standard error, after everything it printed
 * before), then exits 0. A child that fails before that ends with its
 * messages on the parent's standard error and its exit code as the
 * parent's. Once ready, the child writes nothing more (qemu-nbd sends its
 * output to /dev/null), so whoever reads the parent's output sees it end.
 *
 * @module
 */

import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import { concatBytes } from "../io/bytes.ts";

/** Set in the environment of the re-spawned server. */
export const FORK_CHILD_ENV = "DENBD_FORK_CHILD";

/** What the child writes to standard error once it serves (not text anyone would print). */
const READY_MARKER = "\u0000denbd-fork-ready\u0000";

/** The permissions Deno can grant, as their --allow- flags name them. */
const PERMISSIONS = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;

/** Whether this process is the server a `--fork` parent started. */
export function isForkChild(): boolean {
  return Deno.env.get(FORK_CHILD_ENV) === "1";
}

/**
 * The command line that runs this program again with `args`: the compiled
 * binary itself, or `deno run` with the permissions granted to this process
 * (whole permissions only: one granted for some paths only is not passed on).
 */
export function selfCommand(args: readonly string[]): [string, string[]] {
  const program = Deno.execPath();
  if (!/^deno(\.exe)?$/.test(basename(program))) return [program, [...args]];
  const granted = PERMISSIONS.filter((name) =>
    Deno.permissions.querySync({ name }).state === "granted"
  );
  const flags = granted.length === PERMISSIONS.length
    ? ["--allow-all"]
    : granted.map((name) => `--allow-${name}`);
  return [program, ["run", "--no-prompt", ...flags, fileURLToPath(Deno.mainModule), ...args]];
}

/**
 * In the parent: start the server again as a child and wait until it is
 * ready (resolves to 0) or has failed (resolves to its exit code, its
 * messages relayed to standard error).
 */
export async function runForkParent(args: readonly string[]): Promise<number> {
  const [command, commandArgs] = selfCommand(args);
  const child = new Deno.Command(command, {
    args: commandArgs,
    env: { [FORK_CHILD_ENV]: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    detached: true,
  }).spawn();
  const ready = await relayUntilReady(child.stderr);
  if (ready) {
    child.unref();
    return 0;
  }
  const status = await child.status;
  return status.code === 0 ? 1 : status.code;
}

/** Copy `stream` to standard error until the ready marker (true) or its end (false). */
async function relayUntilReady(stream: ReadableStream<Uint8Array>): Promise<boolean> {
  const marker = new TextEncoder().encode(READY_MARKER);
  const reader = stream.getReader();
  let pending: Uint8Array = new Uint8Array(0);
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) {
        await writeAll(pending);
        return false;
      }
      pending = concatBytes(pending, value);
      const at = indexOf(pending, marker);
      if (at >= 0) {
        await writeAll(pending.subarray(0, at));
        return true;
      }
      // Keep what could be the start of a marker split across reads.
      const keep = Math.min(pending.length, marker.length - 1);
      await writeAll(pending.subarray(0, pending.length - keep));
      pending = pending.slice(pending.length - keep);
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * In the child, once it serves: tell the parent, and from then on print
 * nothing (the parent is gone and its standard error may be a pipe someone
 * reads until it ends).
 */
export function signalForkReady(): void {
  Deno.stderr.writeSync(new TextEncoder().encode(READY_MARKER));
  const silent = () => {};
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    console[method] = silent;
  }
}

async function writeAll(bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await Deno.stderr.write(bytes.subarray(at));
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
