/**
 * `denbd qmp SOCKET|HOST:PORT [COMMAND [JSON-ARGS]]`: talk QMP to a monitor
 * (denbd daemon's or QEMU's) by hand or from scripts.
 *
 * With COMMAND: negotiate capabilities, run the command, print its return
 * value as indented JSON and exit 0, or print the error's description on
 * standard error and exit 1. Without: a shell. Each input line is a JSON
 * object sent as it is, or `COMMAND [JSON-ARGS]`; every reply and event is
 * printed as it arrives. On a terminal the shell has a prompt, line editing
 * and the session's history on the arrow keys.
 *
 * @module
 */

import { type FlagTable, formatFlagHelp, parseFlags, UsageError } from "./flags.ts";
import { LineEditor } from "./line-editor.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { DenbdError, kindOf, messageOf } from "../errors.ts";
import { QmpClient } from "../qmp/client.ts";
import { JsonStreamParser } from "../qmp/json-stream.ts";
import { formatJson, isJsonObject, type JsonObject } from "../qmp/json-value.ts";

/** The flags of `denbd qmp`. */
export const QMP_FLAGS = {
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The --help text of `denbd qmp`. */
export function qmpHelp(): string {
  return [
    "Usage: denbd qmp [OPTIONS] SOCKET|HOST:PORT [COMMAND [JSON-ARGS]]",
    "Talk QMP to the monitor listening on a Unix socket or at HOST:PORT.",
    "",
    formatFlagHelp(QMP_FLAGS),
    "",
    "With COMMAND, run it (capabilities are negotiated first) and print its return value",
    "as JSON; if it fails, print the error on standard error and exit 1. Example:",
    `  denbd qmp /run/qsd.sock block-export-del '{"id": "export0"}'`,
    "",
    "Without COMMAND, start a shell: each line is a JSON object, sent as it is, or",
    "COMMAND [JSON-ARGS]; replies and events are printed as they arrive. End with Ctrl-D.",
  ].join("\n");
}

/** Where to connect: `HOST:PORT` or `[IPV6]:PORT` is TCP, anything else a Unix socket path. */
export function parseQmpAddress(text: string): Deno.ConnectOptions | Deno.UnixConnectOptions {
  const tcp = text.includes("/") ? null : /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  if (!tcp) return { transport: "unix", path: text };
  const port = Number(tcp[3]);
  if (port > 65535) throw new UsageError(`invalid port in '${text}'`);
  return { transport: "tcp", hostname: tcp[1] ?? tcp[2], port };
}

/** Parse `text` as one JSON object (QEMU's JSON syntax), or return why not. */
function parseObject(text: string): JsonObject | string {
  const items = new JsonStreamParser().feed(new TextEncoder().encode(text + "\n"));
  if (items.length !== 1) return "expected one JSON object";
  const [item] = items;
  if ("error" in item) return item.error;
  return isJsonObject(item.value) ? item.value : "expected a JSON object";
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
  if (positionals.length < 1 || positionals.length > 3) {
    throw new UsageError("expected SOCKET|HOST:PORT [COMMAND [JSON-ARGS]]");
  }
  const [target, command, argsText] = positionals;
  const commandArgs = argsText === undefined ? undefined : parseObject(argsText);
  if (typeof commandArgs === "string") {
    throw new UsageError(`invalid JSON-ARGS '${argsText}': ${commandArgs}`);
  }
  const address = parseQmpAddress(target);
  const client = await QmpClient.connect(address).catch((error) => {
    throw new DenbdError(kindOf(error), `cannot connect to '${target}': ${messageOf(error)}`);
  });
  try {
    const negotiation = await client.execute("qmp_capabilities");
    if ("error" in negotiation) return failed(negotiation);
    if (command === undefined) return await shell(client);
    const reply = await client.execute(command, commandArgs);
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

/** The request an input line stands for, or why it stands for none; null for a blank line. */
function request(line: string): JsonObject | string | null {
  const text = line.trim();
  if (!text) return null;
  if (text.startsWith("{")) return parseObject(text);
  const [, name, argsText] = /^(\S+)\s*(.*)$/.exec(text)!;
  if (!argsText) return { execute: name };
  const args = parseObject(argsText);
  return typeof args === "string"
    ? `invalid arguments: ${args}`
    : { execute: name, arguments: args };
}

/** Lines of standard input (without line ends). */
async function* stdinLines(): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    yield* lines;
  }
  if (rest) yield rest;
}

/**
 * The interactive (or scripted) shell: send each input line, print every
 * message; after the input ends, wait for the replies still due.
 */
async function shell(client: QmpClient): Promise<number> {
  const editor = Deno.stdin.isTerminal() ? new LineEditor("(QMP) ") : null;
  const show = async (message: JsonObject) => {
    if (editor) editor.print(pretty(message));
    else await writeStdout(pretty(message) + "\n");
  };
  let due = 0;
  let allAnswered = () => {};
  const receiving = (async () => {
    for (let message; (message = await client.receive()) !== null;) {
      if ("return" in message || "error" in message) due--;
      await show(message);
      if (due === 0) allAnswered();
    }
  })();
  const ended = receiving.then(() => null, () => null);
  const lines = editor ? null : stdinLines();
  for (;;) {
    const input = editor ? editor.readLine() : lines!.next().then((next) => next.value ?? null);
    const line = await Promise.race([input, ended.then(() => undefined)]);
    if (line === undefined) {
      editor?.abandon();
      return serverClosed(due);
    }
    if (line === null) break;
    const message = request(line);
    if (message === null) continue;
    if (typeof message === "string") {
      console.error(message);
      continue;
    }
    due++;
    await client.send(line.trim().startsWith("{") ? line.trim() : message);
  }
  if (due > 0) {
    const answered = new Promise<void>((resolve) => allAnswered = resolve);
    if (await Promise.race([answered.then(() => true), ended.then(() => false)]) === false) {
      return serverClosed(due);
    }
  }
  client.close();
  await ended;
  return 0;
}

/** The server hung up: an error only if replies were still due. */
function serverClosed(due: number): number {
  if (due === 0) return 0;
  console.error("denbd qmp: the server closed the connection");
  return 1;
}

/** The `qmp` subcommand. */
export const qmpCommand: Subcommand = {
  summary: "send QMP commands to a storage daemon's monitor, or start a QMP shell",
  run: runQmp,
  help: qmpHelp,
  flags: QMP_FLAGS,
};
