/**
 * `denbd top [OPTIONS] SOCKET|HOST:PORT`: a live view of what a `denbd
 * daemon` or `denbd serve --qmp` serves, polled over QMP with
 * x-denbd-query-stats: each export with its clients (address, age,
 * requests, bytes read and written per second, errors). On a terminal it
 * redraws the screen every `-d` seconds until q or Ctrl-C; with `-b` (or
 * when standard output is not a terminal) it prints plain frames, as top(1)
 * does in batch mode, `-n` of them. The frame itself is drawn by
 * `top-view.ts`.
 *
 * @module
 */

import {
  type FlagTable,
  formatFlagHelp,
  parseFlags,
  parseIntegerFlag,
  UsageError,
} from "./flags.ts";
import { connectMonitor } from "./qmp.ts";
import { writeStdout } from "./stdout.ts";
import { renderFrame } from "./top-view.ts";
import type { Subcommand } from "./subcommand.ts";
import { DenbdError } from "../errors.ts";
import { DenbdStats, type DenbdStatsValue } from "../daemon/qapi-types.ts";
import type { QmpClient } from "../qmp/client.ts";
import { validateInput } from "../qmp/input.ts";
import type { JsonObject } from "../qmp/json-value.ts";

/** The flags of `denbd top`, spelled as top(1) spells them. */
export const TOP_FLAGS = {
  delay: { short: "d", value: "SECONDS", help: "seconds between two polls", default: "1" },
  batch: { short: "b", help: "print plain frames one after the other instead of redrawing" },
  iterations: { short: "n", value: "N", help: "stop after N frames (default: never)" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The longest delay between polls, in seconds (a day). */
const MAX_DELAY_SECONDS = 86_400;

/** Terminal controls: the alternate screen, the cursor, clearing. */
const TERMINAL = {
  enter: "\x1b[?1049h\x1b[?25l",
  leave: "\x1b[?25h\x1b[?1049l",
  home: "\x1b[H\x1b[2J",
} as const;

/** Keys that end the interactive view: q, Q, Ctrl-C. */
const QUIT_KEYS = new Set([0x71, 0x51, 0x03]);

/** The --help text of `denbd top`. */
export function topHelp(): string {
  return [
    "Usage: denbd top [OPTIONS] SOCKET|HOST:PORT",
    "Watch what a 'denbd daemon' or a 'denbd serve --qmp' serves, through its QMP monitor",
    "(x-denbd-query-stats): each export and its clients, with their address, age,",
    "requests and bytes read and written per second, running totals and errors.",
    "",
    formatFlagHelp(TOP_FLAGS),
    "",
    "On a terminal the screen is redrawn every SECONDS; q or Ctrl-C quits. With -b, or",
    "when the output is not a terminal, frames are printed one after the other,",
    "separated by a blank line. Example:",
    "  denbd top -b -n 2 -d 0.5 /run/qsd.sock",
  ].join("\n");
}

/** Settings of one `top` run, validated. */
interface TopSettings {
  readonly target: string;
  readonly delaySeconds: number;
  readonly iterations: number;
  readonly batch: boolean;
}

function resolveSettings(
  values: ReturnType<typeof parseFlags>["values"],
  positionals: readonly string[],
): TopSettings {
  if (positionals.length !== 1) throw new UsageError("expected SOCKET|HOST:PORT");
  const delayText = values.delay as string;
  const delaySeconds = /^\d+(\.\d+)?$/.test(delayText) ? Number(delayText) : NaN;
  if (!(delaySeconds > 0 && delaySeconds <= MAX_DELAY_SECONDS)) {
    throw new UsageError(
      `invalid delay '${delayText}' (expected seconds, more than 0, at most ${MAX_DELAY_SECONDS})`,
    );
  }
  const iterationsText = values.iterations as string | undefined;
  return {
    target: positionals[0],
    delaySeconds,
    iterations: iterationsText === undefined
      ? Infinity
      : parseIntegerFlag(iterationsText, "number of iterations", 1, 0x7fff_ffff),
    batch: Boolean(values.batch) || !Deno.stdout.isTerminal(),
  };
}

/** Ask for the statistics; a reply that is an error or not DenbdStats throws. */
async function poll(client: QmpClient): Promise<DenbdStatsValue> {
  const reply = await client.execute("x-denbd-query-stats");
  if ("error" in reply) {
    const error = reply.error as JsonObject;
    throw new DenbdError("invalid", `x-denbd-query-stats failed: ${String(error.desc)}`);
  }
  return validateInput(DenbdStats, reply.return ?? null, "json");
}

/**
 * The interactive screen: raw keys, the alternate screen without a cursor,
 * restored by {@linkcode restore}. `quit` resolves on q or Ctrl-C.
 */
class Screen {
  /** Resolves when the user asks to quit. */
  readonly quit: Promise<void>;
  #restored = false;

  constructor() {
    Deno.stdin.setRaw(true);
    this.quit = this.#readKeys();
  }

  /** Leave the screen as it was. */
  async restore(): Promise<void> {
    if (this.#restored) return;
    this.#restored = true;
    Deno.stdin.setRaw(false);
    await writeStdout(TERMINAL.leave);
  }

  async #readKeys(): Promise<void> {
    const buffer = new Uint8Array(64);
    for (;;) {
      const count = await Deno.stdin.read(buffer);
      if (count === null) return;
      if (buffer.subarray(0, count).some((key) => QUIT_KEYS.has(key))) return;
    }
  }
}

/** Resolves after `seconds`, or when `cut` settles first (its timer is cleared then). */
async function pause(seconds: number, cut: Promise<void> | null): Promise<"timeout" | "cut"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), seconds * 1000);
  });
  try {
    return await Promise.race([elapsed, ...(cut ? [cut.then(() => "cut" as const)] : [])]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll and draw until the iterations are done or the user quits. */
async function watch(client: QmpClient, settings: TopSettings, screen: Screen | null) {
  let previous: { sample: DenbdStatsValue; at: number } | null = null;
  for (let frame = 1;; frame++) {
    const sample = await poll(client);
    const at = performance.now();
    const title = `denbd top - ${settings.target} - ${new Date().toISOString().slice(11, 19)} UTC` +
      ` - every ${settings.delaySeconds}s`;
    const lines = renderFrame({
      title,
      sample,
      previous: previous?.sample ?? null,
      seconds: previous ? (at - previous.at) / 1000 : 0,
      width: screen ? Deno.consoleSize().columns : undefined,
    });
    if (screen) {
      const rows = Deno.consoleSize().rows;
      await writeStdout(TERMINAL.home + lines.slice(0, rows).join("\r\n"));
    } else {
      await writeStdout((frame > 1 ? "\n" : "") + lines.join("\n") + "\n");
    }
    previous = { sample, at };
    if (frame >= settings.iterations) return;
    if (await pause(settings.delaySeconds, screen?.quit ?? null) === "cut") return;
  }
}

/** Run `denbd top` with `args`; resolves to the exit code. */
async function runTop(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(TOP_FLAGS, args);
  if (values.help) {
    console.log(topHelp());
    return 0;
  }
  const settings = resolveSettings(values, positionals);
  const client = await connectMonitor(settings.target);
  let screen: Screen | null = null;
  try {
    const negotiation = await client.execute("qmp_capabilities");
    if ("error" in negotiation) {
      const error = negotiation.error as JsonObject;
      throw new DenbdError("invalid", `qmp_capabilities failed: ${String(error.desc)}`);
    }
    if (!settings.batch && Deno.stdin.isTerminal()) {
      await writeStdout(TERMINAL.enter);
      screen = new Screen();
    }
    await watch(client, settings, screen);
  } finally {
    await screen?.restore();
    client.close();
  }
  return 0;
}

/** `denbd top`, for the dispatcher. */
export const topCommand: Subcommand = {
  summary: "watch the exports and clients of a daemon or serve --qmp, live (QMP)",
  run: runTop,
  help: topHelp,
  flags: TOP_FLAGS,
};
