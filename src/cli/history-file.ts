/**
 * A shell's history kept across sessions in the user's state directory
 * (`$XDG_STATE_HOME/denbd/NAME`, else `~/.local/state/denbd/NAME`), as
 * readline's history file: one line per entry, oldest first, the last
 * {@linkcode HISTORY_LIMIT} kept. The file is the user's alone (mode 0600,
 * in a directory created 0700), since commands may carry secrets.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { historyPath, loadHistory, saveHistory } from "./history-file.ts";
 * const state = await Deno.makeTempDir();
 * const path = historyPath("qmp_history", { XDG_STATE_HOME: state })!;
 * assert.equal(path, `${state}/denbd/qmp_history`);
 * await saveHistory(path, ["query-version", "quit"]);
 * assert.deepEqual(await loadHistory(path), ["query-version", "quit"]);
 * await Deno.remove(state, { recursive: true });
 * ```
 * @module
 */

import { dirname, join } from "node:path";

/** Entries kept: the newest this many. */
export const HISTORY_LIMIT = 1000;

/**
 * The history file called `name` in the state directory the environment
 * `env` gives (XDG's base directory rules), or null without HOME or
 * XDG_STATE_HOME.
 */
export function historyPath(
  name: string,
  env: Readonly<Record<string, string | undefined>> = Deno.env.toObject(),
): string | null {
  const state = env.XDG_STATE_HOME?.startsWith("/")
    ? env.XDG_STATE_HOME
    : env.HOME
    ? join(env.HOME, ".local", "state")
    : null;
  return state === null ? null : join(state, "denbd", name);
}

/** The entries of the history file at `path` (none if it does not exist yet). */
export async function loadHistory(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return text.split("\n").filter((line) => line !== "").slice(-HISTORY_LIMIT);
}

/** Write the newest {@linkcode HISTORY_LIMIT} of `entries` to `path`, readable by the user only. */
export async function saveHistory(path: string, entries: readonly string[]): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const kept = entries.filter((entry) => entry !== "" && !entry.includes("\n"))
    .slice(-HISTORY_LIMIT);
  await Deno.writeTextFile(path, kept.map((entry) => entry + "\n").join(""), { mode: 0o600 });
  await Deno.chmod(path, 0o600);
}
