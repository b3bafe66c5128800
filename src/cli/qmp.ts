/**
 * `denbd qmp SOCKET|HOST:PORT [COMMAND [JSON-ARGS | KEY=VALUE ...]]`: talk
 * QMP to a monitor (denbd daemon's or QEMU's) by hand or from scripts.
 *
 * With COMMAND: negotiate capabilities, run the command, print its return
 * value as indented JSON and exit 0, or print the error's description on
 * standard error and exit 1. Without: the shell (qmp-shell.ts), in
 * qmp-shell's syntax. HOST may be a name: each of its addresses is tried.
 *
 * @module
 */

import { type FlagTable, formatFlagHelp, parseFlags, UsageError } from "./flags.ts";
import { runHelp, runShell } from "./qmp-shell.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { DenbdError, kindOf, messageOf } from "../errors.ts";
import { QmpClient } from "../qmp/client.ts";
import { formatJson, isJsonObject, type JsonObject } from "../qmp/json-value.ts";
import { ShellParser } from "../qmp/shell-syntax.ts";

/** The flags of `denbd qmp`. */
export const QMP_FLAGS = {
  help: { short: "h", help: "show this help and exit" },
  pretty: {
    short: "p",
    help: "shell: print replies and events indented, keys sorted (qmp-shell -p)",
  },
  verbose: { short: "v", help: "shell: print each request before sending it (qmp-shell -v)" },
} as const satisfies FlagTable;

/** The --help text of `denbd qmp`. */
export function qmpHelp(): string {
  return [
    "Usage: denbd qmp [OPTIONS] SOCKET|HOST:PORT [COMMAND [JSON-ARGS | KEY=VALUE ...]]",
    "Talk QMP to the monitor listening on a Unix socket or at HOST:PORT (every address",
    "of a host name is tried in turn).",
    "",
    formatFlagHelp(QMP_FLAGS),
    "",
    "With COMMAND, run it (capabilities are negotiated first) and print its return value",
    "as JSON; if it fails, print the error on standard error and exit 1. COMMAND help",
    "[COMMAND] lists the commands, or one command's arguments. Examples:",
    `  denbd qmp /run/qsd.sock block-export-del '{"id": "export0"}'`,
    "  denbd qmp localhost:4444 blockdev-add driver=file node-name=n0 filename=/tmp/x",
    "",
    "Without COMMAND, start a shell in qmp-shell's syntax: COMMAND [KEY=VALUE ...] (dotted",
    "keys nest: addr.type=unix), COMMAND {JSON-ARGS}, a JSON request, transaction( ... ),",
    "help [COMMAND]. Replies and events are printed as they arrive. On a terminal: Tab",
    "completion and history ($XDG_STATE_HOME/denbd/qmp_history); end with Ctrl-D. With",
    "input from a pipe or file, exit 1 if any line failed.",
  ].join("\n");
}

/** Where a monitor listens: a TCP host (an address or a name) and port, or a Unix socket. */
export type QmpAddress =
  | { readonly transport: "tcp"; readonly hostname: string; readonly port: number }
  | { readonly transport: "unix"; readonly path: string };

/** Where to connect: `HOST:PORT` or `[IPV6]:PORT` is TCP, anything else a Unix socket path. */
export function parseQmpAddress(text: string): QmpAddress {
  const tcp = text.includes("/") ? null : /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  if (!tcp) return { transport: "unix", path: text };
  const port = Number(tcp[3]);
  if (port > 65535) throw new UsageError(`invalid port in '${text}'`);
  return { transport: "tcp", hostname: tcp[1] ?? tcp[2], port };
}

/**
 * Connect to the monitor at `target` (SOCKET or HOST:PORT, each address of a
 * host name in turn) and read its greeting; a failure says where it was.
 */
export async function connectMonitor(target: string): Promise<QmpClient> {
  return await QmpClient.connect(parseQmpAddress(target)).catch((error) => {
    throw new DenbdError(kindOf(error), `cannot connect to '${target}': ${messageOf(error)}`);
  });
}

/** Indented JSON, members in the order the server sent them. */
function pretty(value: unknown): string {
  return formatJson(value, { order: "insertion", indent: 4 });
}

/** Run `denbd qmp` with `args`; resolves to the exit code. */
async function runQmp(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(QMP_FLAGS, args);
  if (values.help) {
    console.log(qmpHelp());
    return 0;
  }
  if (positionals.length < 1) {
    throw new UsageError("expected SOCKET|HOST:PORT [COMMAND [JSON-ARGS | KEY=VALUE ...]]");
  }
  const [target, ...words] = positionals;
  const oneShot = words.length ? new ShellParser().parseWords(words) : null;
  if (oneShot?.kind === "error") throw new UsageError(oneShot.message);
  const client = await connectMonitor(target);
  try {
    const negotiation = await client.execute("qmp_capabilities");
    if ("error" in negotiation) return failed(negotiation);
    if (oneShot === null) {
      return await runShell(client, {
        pretty: Boolean(values.pretty),
        verbose: Boolean(values.verbose),
      });
    }
    if (oneShot.kind !== "request") {
      return await runHelp(client, oneShot.kind === "help" ? oneShot.command : undefined);
    }
    const { execute, arguments: commandArgs } = oneShot.request;
    const reply = await client.execute(String(execute), commandArgs as JsonObject);
    if ("error" in reply) return failed(reply);
    await writeStdout(pretty(reply.return) + "\n");
    return 0;
  } finally {
    client.close();
  }
}

/** Print an error reply's description; exit code 1. */
function failed(reply: JsonObject): number {
  const error = reply.error;
  console.error(isJsonObject(error) ? String(error.desc) : pretty(reply));
  return 1;
}

/** The `qmp` subcommand. */
export const qmpCommand: Subcommand = {
  summary: "send QMP commands to a storage daemon's monitor, or start a QMP shell",
  run: runQmp,
  help: qmpHelp,
  flags: QMP_FLAGS,
};
