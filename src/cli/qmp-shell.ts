/**
 * The shell of `denbd qmp`: qmp-shell's syntax (src/qmp/shell-syntax.ts),
 * one request at a time, every reply printed as JSON (one line, or indented
 * with sorted keys with `pretty`, as qmp-shell's `-p`), events printed as
 * they arrive.
 *
 * On a terminal: a banner, a prompt (`TRANS> ` inside a transaction), line
 * editing, Tab completion and `help` from the server's schema (fetched once:
 * `query-qmp-schema`, or `query-commands` where the server lacks it), and
 * history kept across sessions in the user's state directory. A failing
 * command is shown by its error reply and the shell goes on.
 *
 * From a pipe or file (a script): the lines run in order and the exit
 * status is 1 if any line failed (an error reply, a malformed line, an
 * unknown command for `help`), each failure named on standard error with its
 * line number; 0 otherwise.
 *
 * @module
 */

import { formatColumns, terminalColumns } from "./columns.ts";
import { historyPath, loadHistory, saveHistory } from "./history-file.ts";
import { LineEditor } from "./line-editor.ts";
import { writeStdout } from "./stdout.ts";
import { messageOf } from "../errors.ts";
import type { QmpClient } from "../qmp/client.ts";
import { QmpIntrospection } from "../qmp/introspected-schema.ts";
import { formatJson, isJsonObject, type JsonObject, type JsonValue } from "../qmp/json-value.ts";
import { completeShellLine } from "../qmp/shell-completion.ts";
import { ShellParser } from "../qmp/shell-syntax.ts";

/** How the shell prints. */
export interface ShellOptions {
  /** Indent replies and events (qmp-shell's `-p`). */
  readonly pretty: boolean;
  /** Print each request before sending it (qmp-shell's `-v`). */
  readonly verbose: boolean;
}

/** The file name of the QMP shell's history in the state directory. */
const HISTORY_NAME = "qmp_history";

/** The prompt outside and inside a transaction. */
const PROMPTS = { command: "(QMP) ", transaction: "TRANS> " } as const;

/** The shell's own help: its syntax (the command list follows it). */
const SYNTAX_HELP = [
  "Type COMMAND [KEY=VALUE ...]: dotted keys nest (addr.type=unix addr.path=/s), a value is",
  "an integer, true or false, a [...] or {...} literal, a quoted string, or else a string.",
  "Also COMMAND {JSON-ARGS}, a whole {JSON request}, and transaction( ACTION ... ) over",
  "several lines. help COMMAND shows a command's arguments; Tab completes.",
].join("\n");

/**
 * The replies of one connection, one request at a time, in order (QMP
 * answers in order). Events, and the replies asked to be shown, go to
 * `show` as they arrive, so they are printed in the server's order.
 */
class Conversation {
  readonly #client: QmpClient;
  readonly #waiting: { resolve: (reply: JsonObject | null) => void; shown: boolean }[] = [];
  /** Resolves once the server has closed the connection (or broken the protocol). */
  readonly ended: Promise<void>;
  #closed = false;

  constructor(client: QmpClient, show: (message: JsonObject) => Promise<void>) {
    this.#client = client;
    this.ended = (async () => {
      try {
        for (let message; (message = await client.receive()) !== null;) {
          if (!("return" in message || "error" in message)) {
            await show(message);
            continue;
          }
          const waiter = this.#waiting.shift();
          if (waiter?.shown !== false) await show(message);
          waiter?.resolve(message);
        }
      } catch (error) {
        // A reset is the server hanging up (as qsd does after quit), not a protocol error.
        const hungUp = error instanceof Deno.errors.ConnectionReset;
        if (!this.#closed && !hungUp) console.error(`denbd qmp: ${messageOf(error)}`);
      }
      this.#closed = true;
      for (const waiter of this.#waiting.splice(0)) waiter.resolve(null);
    })();
  }

  /** Hang up (the shell is done) and wait until the receiving has stopped. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#client.close();
    await this.ended;
  }

  /**
   * Send `request`; its reply (once shown, if `shown`), or null if the
   * connection ended first.
   */
  execute(request: JsonObject, shown = true): Promise<JsonObject | null> {
    if (this.#closed) return Promise.resolve(null);
    const reply = new Promise<JsonObject | null>((resolve) =>
      this.#waiting.push({ resolve, shown })
    );
    this.#client.send(request).catch(() => {});
    return reply;
  }
}

/** `value` with the members of every object in key order (Python's `sort_keys`). */
function withSortedKeys(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.map(withSortedKeys);
  if (!isJsonObject(value)) return value;
  const sorted: JsonObject = {};
  for (const key of Object.keys(value).sort()) sorted[key] = withSortedKeys(value[key]);
  return sorted;
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

/** The server's commands and, if it describes them, their arguments. */
async function introspect(conversation: Conversation): Promise<QmpIntrospection> {
  const schema = await conversation.execute({ execute: "query-qmp-schema" }, false);
  if (schema && "return" in schema) return QmpIntrospection.fromSchemaInfo(schema.return);
  const commands = await conversation.execute({ execute: "query-commands" }, false);
  const list = commands && Array.isArray(commands.return) ? commands.return : [];
  return QmpIntrospection.fromCommandNames(
    list.filter(isJsonObject).map((command) => String(command.name)),
  );
}

/** What `help [COMMAND]` prints, or the error if COMMAND is unknown. */
function helpText(
  schema: QmpIntrospection,
  command: string | undefined,
  width: number,
): { text: string } | { error: string } {
  if (command === undefined) {
    const names = formatColumns(schema.commandNames(), width).replace(/^/gm, "  ");
    return { text: `${SYNTAX_HELP}\n\nCommands:\n${names}` };
  }
  if (!schema.commandNames().includes(command)) {
    return { error: `help: the command ${command} has not been found` };
  }
  if (!schema.knowsArguments) {
    return { text: `${command}: the server does not describe its arguments (no query-qmp-schema)` };
  }
  return { text: schema.commandHelp(command)!.join("\n") };
}

/** The terminal side of an interactive shell: the editor and where its history is kept. */
interface TerminalSession {
  readonly editor: LineEditor;
  /** The history file, or null where the environment names no state directory. */
  readonly historyFile: string | null;
}

/** One run of the shell: reads lines, sends their requests, counts what failed. */
class Shell {
  readonly #client: QmpClient;
  readonly #options: ShellOptions;
  readonly #conversation: Conversation;
  readonly #parser = new ShellParser();
  /** Set on a terminal (see {@linkcode Shell.startTerminal}); null for a script. */
  #terminal: TerminalSession | null = null;
  #schema: QmpIntrospection | undefined;
  #failures = 0;
  #historyWarned = false;

  constructor(client: QmpClient, options: ShellOptions) {
    this.#client = client;
    this.#options = options;
    this.#conversation = new Conversation(client, (message) => this.#show(message));
  }

  /** Prepare the terminal: schema for completion, history, banner. */
  async startTerminal(): Promise<void> {
    const schema = this.#schema ??= await introspect(this.#conversation);
    const historyFile = historyPath(HISTORY_NAME);
    const editor = new LineEditor(PROMPTS.command, {
      complete: (beforeCursor) => completeShellLine(schema, beforeCursor),
      history: historyFile ? await loadHistory(historyFile).catch(() => []) : [],
    });
    this.#terminal = { editor, historyFile };
    const greeting = this.#client.greeting.QMP as { version?: { qemu?: JsonObject } };
    const qemu = greeting.version?.qemu;
    await this.#show("Welcome to the QMP low-level shell!");
    await this.#show(
      qemu ? `Connected to QEMU ${qemu.major}.${qemu.minor}.${qemu.micro}\n` : "Connected\n",
    );
  }

  /** Run every line of the input; resolves to the exit code. */
  async run(): Promise<number> {
    const lines = this.#terminal ? this.#terminalLines(this.#terminal) : this.#scriptLines();
    let lineNumber = 0;
    for await (const line of lines) {
      if (!await this.#runLine(line, ++lineNumber)) break;
    }
    await this.#conversation.close();
    return this.#failures > 0 && !this.#terminal ? 1 : 0;
  }

  /**
   * The lines typed at the prompt, each saved to the history file; they end
   * with the input, or at once when the server hangs up.
   */
  async *#terminalLines({ editor, historyFile }: TerminalSession): AsyncGenerator<string> {
    const typed = () => {
      editor.prompt = this.#parser.inTransaction ? PROMPTS.transaction : PROMPTS.command;
      return editor.readLine();
    };
    const hungUp = () => {
      editor.abandon();
      console.error("denbd qmp: the server closed the connection");
    };
    for await (const line of this.#untilHangUp(typed, hungUp)) {
      if (historyFile && line.trim()) {
        await saveHistory(historyFile, editor.history).catch((error) => {
          if (!this.#historyWarned) {
            console.error(`denbd qmp: cannot save history: ${messageOf(error)}`);
          }
          this.#historyWarned = true;
        });
      }
      yield line;
    }
  }

  /** The lines of a script on standard input, until its end or the server hanging up. */
  #scriptLines(): AsyncGenerator<string> {
    const input = stdinLines();
    return this.#untilHangUp(() => input.next().then((next) => next.done ? null : next.value));
  }

  /**
   * The lines `next` gives (null at the end of the input) until the end, or
   * at once when the server hangs up, even while waiting for a line that may
   * never come: then `onHangUp` runs. A script says nothing then: no reply
   * is due between two lines, so nothing was lost.
   */
  async *#untilHangUp(
    next: () => Promise<string | null>,
    onHangUp: () => void = () => {},
  ): AsyncGenerator<string> {
    const hungUp = this.#conversation.ended.then(() => undefined);
    for (;;) {
      const line = await Promise.race([next(), hungUp]);
      if (line === undefined) onHangUp();
      if (line === undefined || line === null) return;
      yield line;
    }
  }

  /** Run one input line; false once the connection is gone. */
  async #runLine(line: string, lineNumber: number): Promise<boolean> {
    const parsed = this.#parser.parse(line);
    switch (parsed.kind) {
      case "nothing":
        return true;
      case "error":
        this.#fail(lineNumber, `Error while parsing command line: ${parsed.message}`);
        return true;
      case "help": {
        this.#schema ??= await introspect(this.#conversation);
        const help = helpText(this.#schema, parsed.command, terminalColumns());
        if ("error" in help) this.#fail(lineNumber, help.error);
        else await this.#show(help.text);
        return true;
      }
    }
    const command = parsed.request.execute;
    if (this.#options.verbose) await this.#show(parsed.request);
    const reply = await this.#conversation.execute(parsed.request);
    if (reply === null) {
      this.#fail(lineNumber, `${command}: the server closed the connection`);
      return false;
    }
    // At a prompt the error reply says it all; a script also names the line.
    if ("error" in reply && !this.#terminal) {
      this.#fail(lineNumber, `${command}: ${(reply.error as JsonObject).desc}`);
    }
    return true;
  }

  /** Report a failed line: on a terminal the message, in a script with its line number. */
  #fail(lineNumber: number, message: string): void {
    this.#failures++;
    console.error(this.#terminal ? message : `denbd qmp: line ${lineNumber}: ${message}`);
  }

  /**
   * Print a text, or a message as JSON as qmp-shell does (one line in the
   * server's order, or indented with sorted keys), above the prompt if any.
   */
  async #show(message: JsonValue | string): Promise<void> {
    const text = typeof message === "string"
      ? message
      : this.#options.pretty
      ? formatJson(withSortedKeys(message), { order: "insertion", indent: 4 })
      : formatJson(message, { order: "insertion" });
    if (this.#terminal) this.#terminal.editor.print(text);
    else await writeStdout(text + "\n");
  }
}

/**
 * Run the shell on `client` (capabilities already negotiated) until the
 * input ends; resolves to the exit code.
 */
export async function runShell(client: QmpClient, options: ShellOptions): Promise<number> {
  const shell = new Shell(client, options);
  if (Deno.stdin.isTerminal()) await shell.startTerminal();
  return await shell.run();
}

/**
 * `help [COMMAND]` without a shell: print it (capabilities already
 * negotiated on `client`); resolves to the exit code (1 for an unknown
 * command).
 */
export async function runHelp(client: QmpClient, command: string | undefined): Promise<number> {
  const conversation = new Conversation(client, () => Promise.resolve());
  const help = helpText(await introspect(conversation), command, terminalColumns());
  await conversation.close();
  if ("error" in help) {
    console.error(help.error);
    return 1;
  }
  await writeStdout(help.text + "\n");
  return 0;
}
