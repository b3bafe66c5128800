/**
 * `denbd daemon`: qemu-storage-daemon's command line over the Daemon.
 * Arguments are read as qsd reads them: a first pass for -h, -V, --pidfile
 * and unknown options, then every option strictly in the order given
 * (--blockdev, --chardev, --export, --monitor, --nbd-server, --object), so
 * things must be defined before use. An error in an option prints
 * `denbd daemon: --OPTION ARG: MESSAGE` and exits 1. The daemon then runs
 * until QMP `quit` or SIGTERM/SIGINT/SIGHUP (exit 0), deleting its exports
 * (an event each to the monitors) on the way out.
 *
 * @module
 */

import { DenbdError, messageOf, osErrorText } from "../errors.ts";
import {
  isLogFormat,
  isLogLevel,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFlags,
  Logger,
  loggerOptionsOf,
} from "../log.ts";
import { Daemon } from "../daemon/daemon.ts";
import { MonitorHost } from "../daemon/monitors.ts";
import { daemonCommands } from "../daemon/qmp-commands.ts";
import {
  BlockdevOptions,
  BlockExportOptions,
  MonitorOptions,
  NbdServerOptions,
  OBJECT_TYPES,
  ObjectOptions,
  ObjectType,
  SERVED_EXPORT_TYPES,
} from "../daemon/qapi-types.ts";
import { validateInput } from "../qmp/input.ts";
import { JsonStreamParser } from "../qmp/json-stream.ts";
import type { JsonValue } from "../qmp/json-value.ts";
import {
  HELP_NOT_AVAILABLE,
  isJsonArgument,
  KeyvalError,
  parseKeyval,
  parseKeyvalHelp,
  QSD_IMPLIED_KEYS,
} from "../qmp/keyval.ts";
import type { QapiStruct, QapiType, QapiUnion, QapiValue } from "../qmp/schema.ts";
import { keyvalSyntax, wrapSyntax } from "../qmp/schema-help.ts";
import {
  CHARDEV_BACKENDS,
  chardevHelp,
  parseChardevOptions,
  QEMU_CHARDEV_BACKENDS,
  socketChardev,
} from "./chardev.ts";
import { writePidFile } from "./pid-file.ts";
import { flagTableOfOptions, type GetoptOption } from "./daemon-flags.ts";
import { isForkChild, runForkParent, signalForkReady } from "./fork.ts";
import type { Subcommand } from "./subcommand.ts";
import { VERSION } from "../version.ts";

/** How the program names itself in messages. */
const PROGRAM = "denbd daemon";

/** qemu-storage-daemon's options, in its help order. */
const DAEMON_OPTIONS: Readonly<Record<string, GetoptOption>> = {
  "help": { short: "h", argument: false, early: true, help: "display this help and exit" },
  "version": {
    short: "V",
    argument: false,
    early: true,
    help: "output version information and exit",
  },
  "trace": {
    short: "T",
    argument: true,
    value: "ARG",
    early: false,
    help: "tracing options (accepted; denbd has no trace events)",
  },
  "blockdev": {
    argument: true,
    early: false,
    syntax: keyvalSyntax(BlockdevOptions, { impliedKey: QSD_IMPLIED_KEYS.blockdev }),
    help: "configure a block node",
  },
  "chardev": {
    argument: true,
    early: false,
    syntax: [["socket,id=ID,path=PATH|host=HOST,port=PORT,server=on", "[,wait=off]"]],
    help: "configure a character device (a QMP socket)",
  },
  "export": {
    argument: true,
    early: false,
    syntax: keyvalSyntax(BlockExportOptions, {
      impliedKey: QSD_IMPLIED_KEYS.export,
      only: SERVED_EXPORT_TYPES,
    }),
    help: "export a block node over NBD (needs --nbd-server first)",
  },
  "monitor": {
    argument: true,
    early: false,
    syntax: keyvalSyntax(MonitorOptions, { impliedKey: QSD_IMPLIED_KEYS.monitor }),
    help: "a QMP monitor on a character device",
  },
  "nbd-server": {
    argument: true,
    early: false,
    syntax: keyvalSyntax(NbdServerOptions, { impliedKey: QSD_IMPLIED_KEYS["nbd-server"] }),
    help: "start the NBD server",
  },
  "object": {
    argument: true,
    early: false,
    syntax: [["[qom-type=]TYPE,id=ID", "[,PROP=VALUE...]"]],
    help: "create an object (iothread, tls-creds-*, authz-*, secret);\n" +
      "'help' lists the types, TYPE,help its properties",
  },
  "daemonize": {
    argument: false,
    early: true,
    help: "run in the background: the command returns once the daemon has started",
  },
  "pidfile": { argument: true, value: "FILE", early: true, help: "write the process id to FILE" },
  "log-level": {
    argument: true,
    value: "LEVEL",
    early: true,
    help: `denbd extension: the least severe records logged (${LOG_LEVELS.join(", ")}),\n` +
      "with times; default info",
  },
  "log-format": {
    argument: true,
    value: "FORMAT",
    early: true,
    help: "denbd extension: text lines (default) or json: one object per line with\n" +
      "time, level, msg, and client, peer, export for NBD clients",
  },
};

/** One element of the command line, in order. */
type CommandLineItem =
  | {
    readonly kind: "option";
    readonly name: string;
    /** As typed, for messages: "--blockd", "-T". */
    readonly spelling: string;
    /** The `=` form was used (messages then say "--blockdev=ARG"). */
    readonly attached: boolean;
    readonly value?: string;
  }
  | { readonly kind: "argument"; readonly value: string };

/** A mistake found while splitting the command line (getopt's wording). */
class CommandLineError extends Error {}

/**
 * Split `args` like getopt_long: options (long ones may be abbreviated) and
 * arguments, in order, up to the first mistake, which is returned beside
 * them (options before it, -h and -V, still act first, as with getopt).
 */
function splitCommandLine(
  args: readonly string[],
): { items: CommandLineItem[]; error?: CommandLineError } {
  const items: CommandLineItem[] = [];
  try {
    splitInto(args, items);
  } catch (error) {
    if (!(error instanceof CommandLineError)) throw error;
    return { items, error };
  }
  return { items };
}

function splitInto(args: readonly string[], items: CommandLineItem[]): void {
  for (let i = 0; i < args.length; i++) {
    const text = args[i];
    if (text === "--") break;
    if (text.startsWith("--")) {
      const [typed, attachedValue] = splitOnce(text.slice(2), "=");
      const name = resolveLongOption(typed);
      const spec = DAEMON_OPTIONS[name];
      if (!spec.argument && attachedValue !== undefined) {
        throw new CommandLineError(`option '--${name}' doesn't allow an argument`);
      }
      let value = attachedValue;
      if (spec.argument && value === undefined) {
        if (i + 1 >= args.length) {
          throw new CommandLineError(`option '--${name}' requires an argument`);
        }
        value = args[++i];
      }
      items.push({
        kind: "option",
        name,
        spelling: `--${typed}`,
        attached: attachedValue !== undefined,
        value,
      });
    } else if (text.startsWith("-") && text.length > 1) {
      i = splitShortOptions(args, i, items);
    } else {
      items.push({ kind: "argument", value: text });
    }
  }
}

/** Add the short options of `args[i]` (e.g. "-hV", "-Tfoo", "-T foo"); returns the last index used. */
function splitShortOptions(args: readonly string[], i: number, items: CommandLineItem[]): number {
  const text = args[i];
  for (let at = 1; at < text.length; at++) {
    const letter = text[at];
    const name = Object.keys(DAEMON_OPTIONS).find((long) => DAEMON_OPTIONS[long].short === letter);
    if (!name) throw new CommandLineError(`invalid option -- '${letter}'`);
    if (!DAEMON_OPTIONS[name].argument) {
      items.push({ kind: "option", name, spelling: `-${letter}`, attached: false });
      continue;
    }
    const rest = text.slice(at + 1);
    if (rest) {
      items.push({ kind: "option", name, spelling: `-${letter}`, attached: false, value: rest });
      return i;
    }
    if (i + 1 >= args.length) {
      throw new CommandLineError(`option requires an argument -- '${letter}'`);
    }
    items.push({
      kind: "option",
      name,
      spelling: `-${letter}`,
      attached: false,
      value: args[i + 1],
    });
    return i + 1;
  }
  return i;
}

/** The long option `typed` names, exactly or as an unambiguous prefix. */
function resolveLongOption(typed: string): string {
  if (typed in DAEMON_OPTIONS) return typed;
  const matches = Object.keys(DAEMON_OPTIONS).filter((name) => name.startsWith(typed));
  if (matches.length === 1 && typed) return matches[0];
  if (matches.length > 1 && typed) {
    throw new CommandLineError(
      `option '--${typed}' is ambiguous; possibilities: ${
        matches.map((m) => `'--${m}'`).join(" ")
      }`,
    );
  }
  throw new CommandLineError(`unrecognized option '--${typed}'`);
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + separator.length)];
}

/** Width of the option column of --help. */
const HELP_OPTION_WIDTH = 20;
/** Width of the syntax lines of --help (80 columns in all, with their indent). */
const HELP_SYNTAX_WIDTH = 56;

/** The --help text. */
function daemonHelp(): string {
  const indent = " ".repeat(HELP_OPTION_WIDTH + 2);
  const rows = Object.entries(DAEMON_OPTIONS).map(([name, spec]) => {
    const spelling = (spec.short ? `-${spec.short}, ` : "    ") + `--${name}` +
      (spec.value ? ` ${spec.value}` : "");
    const syntax = (spec.syntax ?? []).flatMap((form) =>
      wrapSyntax(form, HELP_SYNTAX_WIDTH).map((line, i) => (i ? "  " : "") + line)
    );
    const lines = [...syntax, ...spec.help.split("\n")];
    // A spelling too long for its column has its text start on the next line.
    const [first, ...more] = spelling.length < HELP_OPTION_WIDTH ? lines : ["", ...lines];
    return [
      `  ${spelling.padEnd(HELP_OPTION_WIDTH)}${first}`.trimEnd(),
      ...more.map((line) => indent + line),
    ]
      .join("\n");
  });
  return [
    `Usage: denbd daemon [options]`,
    "A storage daemon with qemu-storage-daemon 7.2's command line and QMP interface:",
    "block nodes exported over NBD, driven from QMP monitors (see `denbd qmp`).",
    "",
    ...rows,
    "",
    "The forms of --blockdev, --export, --monitor and --nbd-server come from the QAPI",
    "schema that checks them: [,KEY=VALUE] is optional, <type> stands for a value of",
    "that type, A|B for a choice, KEY.N for the elements of a list, and KEY.*=<Type>",
    "for the members of Type under KEY (file.driver=file,file.filename=PATH).",
    "Each of them also takes a JSON object.",
    "",
    "Options are applied in the order given. QMP `quit`, SIGTERM, SIGINT or SIGHUP delete the",
    "exports (BLOCK_EXPORT_DELETED to the monitors) and exit 0.",
  ].join("\n");
}

/** Parse an option argument that is JSON (it starts with '{'), with QEMU's errors. */
function parseJsonArgument(text: string): JsonValue {
  const items = new JsonStreamParser().feed(new TextEncoder().encode(text));
  const first = items[0];
  if (!first) throw new DenbdError("invalid", "JSON parse error, premature EOI");
  if ("error" in first) throw new DenbdError("invalid", first.error);
  return first.value;
}

/** An option argument as a value for the input visitor: JSON, or keyval with `implied`. */
function optionValue(
  text: string,
  implied: string | undefined,
): { value: JsonValue; mode: "json" | "keyval" } {
  if (isJsonArgument(text)) return { value: parseJsonArgument(text), mode: "json" };
  const help = parseKeyvalHelp(text, implied);
  if (help.help) throw new DenbdError("invalid", HELP_NOT_AVAILABLE);
  return { value: parseKeyval(text, implied) as JsonValue, mode: "keyval" };
}

/** The value of an option's `text`, checked against its schema `type`. */
function validated<T extends QapiType>(
  type: T,
  text: string,
  implied: string | undefined,
): QapiValue<T> {
  const { value, mode } = optionValue(text, implied);
  return validateInput(type, value, mode);
}

/** Thrown to end with a printed text and an exit code (help of --object). */
class EarlyExit {
  constructor(readonly text: string, readonly code: number) {}
}

/** Apply the options of the command line to the daemon, in order. */
class CommandLineRunner {
  readonly #daemon: Daemon;
  readonly #monitors: MonitorHost;
  readonly #log: Logger;

  constructor(daemon: Daemon, monitors: MonitorHost, log: Logger) {
    this.#daemon = daemon;
    this.#monitors = monitors;
    this.#log = log;
  }

  async apply(name: string, text: string): Promise<void> {
    switch (name) {
      case "blockdev":
        return await this.#daemon.blockdevAdd(
          validated(BlockdevOptions, text, QSD_IMPLIED_KEYS.blockdev),
        );
      case "export":
        return this.#daemon.blockExportAdd(
          validated(BlockExportOptions, text, QSD_IMPLIED_KEYS.export),
        );
      case "nbd-server":
        this.#daemon.nbdServerStart(
          validated(NbdServerOptions, text, QSD_IMPLIED_KEYS["nbd-server"]),
        );
        return;
      case "object":
        return await this.#object(text);
      case "monitor":
        return this.#monitor(text);
      case "chardev":
        return await this.#chardev(text);
      case "trace":
        this.#log.warn(`-T ${text}: warning: denbd has no trace events; ignored`);
        return;
    }
  }

  async #object(text: string): Promise<void> {
    if (!isJsonArgument(text)) {
      const { tree, help } = parseKeyvalHelp(text, QSD_IMPLIED_KEYS.object);
      if (help) throw new EarlyExit(objectHelp(tree["qom-type"]), 0);
    }
    await this.#daemon.objectAdd(validated(ObjectOptions, text, QSD_IMPLIED_KEYS.object));
  }

  #monitor(text: string): void {
    const options = validated(MonitorOptions, text, QSD_IMPLIED_KEYS.monitor);
    if (options.mode === "readline") throw new DenbdError("not-supported", "Only QMP is supported");
    this.#monitors.addMonitor(options.chardev, { pretty: options.pretty });
  }

  async #chardev(text: string): Promise<void> {
    const parsed = parseChardevOptions(text);
    for (const warning of parsed.warnings) {
      this.#log.warn(`--chardev ${text}: warning: ${warning.message}`);
      if (warning.hint) this.#log.verbatim("warn", warning.hint);
    }
    if (parsed.help) throw new EarlyExit(chardevHelp(), 1);
    const backend = parsed.values.backend;
    if (backend === "help" || backend === "?") {
      const lines = CHARDEV_BACKENDS.map((name) => `  ${name}`);
      throw new EarlyExit(["Available chardev backend types: ", ...lines].join("\n"), 0);
    }
    if (parsed.id === undefined) throw new DenbdError("invalid", "chardev: no id specified");
    if (backend === undefined) {
      throw new DenbdError("invalid", `chardev: "${parsed.id}" missing backend`);
    }
    if (backend === "null") return this.#monitors.addNull(parsed.id);
    if (!QEMU_CHARDEV_BACKENDS.includes(backend)) {
      throw new DenbdError("invalid", `'${backend}' is not a valid char driver name`);
    }
    if (backend !== "socket") {
      throw new DenbdError(
        "not-supported",
        `chardev backend '${backend}' is not supported by denbd (supported: ${
          CHARDEV_BACKENDS.join(", ")
        })`,
      );
    }
    await this.#monitors.addSocket(
      socketChardev(parsed.id, parsed),
      (where) =>
        this.#log.info(`--chardev ${text}: info: QEMU waiting for connection on: ${where}`),
    );
  }
}

/** `--object help` and `--object TYPE,help`. */
function objectHelp(type: unknown): string {
  const objectTypes = ObjectOptions as QapiUnion;
  if (typeof type === "string" && type in objectTypes.branches) {
    const members = (objectTypes.branches[type] as QapiStruct).members;
    return [`${type} options:`, ...members.map((m) => `  ${m.name}=<${typeName(m.type)}>`)].join(
      "\n",
    );
  }
  const creatable = ObjectType.values.filter((name) => OBJECT_TYPES[name] === "created");
  return ["List of user creatable objects:", ...creatable.map((name) => `  ${name}`)].join("\n");
}

function typeName(type: QapiType): string {
  return type.kind === "builtin" ? type.name : type.kind === "enum" ? type.name : type.kind;
}

/** Resolves with why the daemon should stop: quit, or a signal. */
function stopRequest(): {
  requested: Promise<string>;
  request: (why: string) => void;
  dispose: () => void;
} {
  let request!: (why: string) => void;
  const requested = new Promise<string>((resolve) => request = resolve);
  const signals = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
  const handlers = signals.map((signal) => [signal, () => request(signal)] as const);
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return {
    requested,
    request,
    dispose: () => {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}

/** --log-level and --log-format (the last of each wins), checked. */
function logFlagsOf(items: readonly CommandLineItem[]): LogFlags {
  let level: LogFlags["level"];
  let format: LogFlags["format"];
  for (const item of items) {
    if (item.kind !== "option") continue;
    const value = item.value!;
    if (item.name === "log-level") {
      if (!isLogLevel(value)) throw invalidChoice(item.spelling, value, LOG_LEVELS);
      level = value;
    } else if (item.name === "log-format") {
      if (!isLogFormat(value)) throw invalidChoice(item.spelling, value, LOG_FORMATS);
      format = value;
    }
  }
  return { level, format };
}

function invalidChoice(spelling: string, value: string, choices: readonly string[]): DenbdError {
  return new DenbdError(
    "invalid",
    `${spelling} ${value}: expected one of ${choices.join(", ")}`,
  );
}

/** Print `error` as qsd does for an option: the location, the message, then its hint. */
function reportOptionError(location: string, error: unknown, json: Logger | null): void {
  if (json) {
    const warnings = error instanceof KeyvalError ? error.warnings : [];
    for (const warning of warnings) json.warn(`${location}: warning: ${warning.message}`);
    const hint = error instanceof KeyvalError && error.hint ? `\n${error.hint}` : "";
    json.error(`${location}: ${messageOf(error)}${hint}`);
    return;
  }
  if (error instanceof KeyvalError) {
    for (const warning of error.warnings) {
      console.error(`${PROGRAM}: ${location}: warning: ${warning.message}`);
      if (warning.hint) console.error(warning.hint);
    }
  }
  console.error(`${PROGRAM}: ${location}: ${messageOf(error)}`);
  if (error instanceof KeyvalError && error.hint) console.error(error.hint);
}

/** Run `denbd daemon` with `args`; resolves to the exit code. */
export async function runDaemon(args: readonly string[]): Promise<number> {
  const { items, error } = splitCommandLine(args);
  let pidFilePath: string | undefined;
  let daemonize = false;
  for (const item of items) {
    if (item.kind !== "option" || !DAEMON_OPTIONS[item.name].early) continue;
    if (item.name === "help") return (console.log(daemonHelp()), 0);
    if (item.name === "version") {
      return (console.log(`denbd daemon version ${VERSION} (qemu-storage-daemon 7.2 interfaces)`),
        0);
    }
    if (item.name === "pidfile") pidFilePath = item.value;
    if (item.name === "daemonize") daemonize = true;
  }
  let logFlags: LogFlags;
  try {
    logFlags = logFlagsOf(items);
  } catch (problem) {
    console.error(`${PROGRAM}: ${messageOf(problem)}`);
    return 1;
  }
  if (error) {
    console.error(`${PROGRAM}: ${error.message}`);
    return 1;
  }
  if (daemonize && !isForkChild()) return await runForkParent(["daemon", ...args]);
  const log = new Logger(loggerOptionsOf(logFlags, PROGRAM));
  const daemon = new Daemon(log);
  const stop = stopRequest();
  const monitors = new MonitorHost(daemon, daemonCommands(), () => stop.request("quit"));
  const runner = new CommandLineRunner(daemon, monitors, log);
  // From here failures are log records: one JSON object each with --log-format=json.
  const json = logFlags.format === "json" ? log : null;
  const fail = (message: string) => {
    if (json) json.error(message);
    else console.error(`${PROGRAM}: ${message}`);
    return 1;
  };
  let pidFile: Awaited<ReturnType<typeof writePidFile>> | undefined;
  try {
    for (const item of items) {
      if (item.kind === "argument") return fail(`${item.value}: Unexpected argument`);
      if (DAEMON_OPTIONS[item.name].early) continue;
      const location = item.attached
        ? `${item.spelling}=${item.value}`
        : `${item.spelling} ${item.value}`;
      try {
        await runner.apply(item.name, item.value!);
      } catch (error) {
        if (error instanceof EarlyExit) {
          (error.code ? console.error : console.log)(error.text);
          return error.code;
        }
        reportOptionError(location, error, json);
        return 1;
      }
    }
    if (pidFilePath !== undefined) {
      try {
        pidFile = await writePidFile(pidFilePath);
      } catch (error) {
        return fail(messageOf(error));
      }
    }
    if (daemonize) signalForkReady();
    log.debug(`stopping: ${await stop.requested}`);
    return 0;
  } finally {
    stop.dispose();
    // Exports go first so the monitors still see their BLOCK_EXPORT_DELETED events.
    await daemon.stopExporting().catch((error) => log.warn(messageOf(error)));
    await monitors.close();
    await daemon.shutdown();
    try {
      pidFile?.release(true);
    } catch (error) {
      log.warn(`removing the pid file failed: ${osErrorText(error)}`);
    }
  }
}

/** `denbd daemon`, for the dispatcher. */
export const daemonCommand: Subcommand = {
  summary: "a storage daemon with qemu-storage-daemon's command line and QMP",
  run: runDaemon,
  help: daemonHelp,
  flags: flagTableOfOptions(DAEMON_OPTIONS),
};
