/**
 * Log records on standard error: a level, a time, a message and the context
 * it belongs to (which client, from where, using which export), written as
 * one line of text or one JSON object per record.
 *
 * Text (the default) is `[TIME ]PROGRAM: [client ID (PEER): ]MESSAGE`, the
 * time (ISO 8601, UTC, milliseconds) only when asked for. JSON lines are
 * objects with `time`, `level` and `msg`, then `client`, `peer` and `export`
 * when the record has them; the text format names the export in the
 * messages that concern it. A record below the logger's level costs one
 * comparison: callers that build an expensive message ask
 * {@linkcode Logger.enabled} first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Logger } from "./log.ts";
 * const lines: string[] = [];
 * const log = new Logger({ format: "json", write: (line) => lines.push(line) });
 * log.child({ client: 3, peer: "127.0.0.1:5555" }).info("connected");
 * log.debug("not shown at the default level, info");
 * const record = JSON.parse(lines[0]);
 * assert.equal(record.msg, "connected");
 * assert.equal(record.client, 3);
 * assert.equal(lines.length, 1);
 * ```
 * @module
 */

/** The levels, least severe first; a logger prints its own level and those after it. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** How severe a record is. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The ways a record is written: a line of text, or a JSON object on one line. */
export const LOG_FORMATS = ["text", "json"] as const;

/** How records are written. */
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * The longest a piece of peer-controlled text (an export name a client
 * asked for) is logged; the rest is cut and counted.
 */
export const MAX_LOGGED_TEXT_LENGTH = 256;

/** What a record is about, besides its message; every field is optional. */
export interface LogFields {
  /** The client's number, unique within its server. */
  readonly client?: number;
  /** The client's address ("127.0.0.1:5555", "[::1]:5555", "unix"). */
  readonly peer?: string;
  /** The export the record is about: the one the client uses, or the one refused. */
  readonly export?: string;
}

/** How a {@linkcode Logger} writes. */
export interface LoggerOptions {
  /** The program's name, first on every text line ("denbd" by default). */
  readonly prefix?: string;
  /** The least severe level written ("info" by default). */
  readonly level?: LogLevel;
  /** Text lines or JSON objects ("text" by default). */
  readonly format?: LogFormat;
  /** Text lines start with the time (JSON records always have it). */
  readonly timestamps?: boolean;
  /** Where each line goes, without its newline (standard error by default). */
  readonly write?: (line: string) => void;
}

/** The rank of each level, for comparisons. */
const RANK: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

const encoder = new TextEncoder();

/** Writes `line` and a newline to standard error, if it is still there. */
function writeToStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(`${line}\n`));
  } catch {
    // Standard error is gone (closed pipe): there is nowhere left to report to.
  }
}

/** Writes log records. */
export class Logger {
  readonly #options: LoggerOptions;
  readonly #least: number;
  readonly #fields: LogFields;

  /** A logger writing as `options` say, its records carrying `fields`. */
  constructor(options: LoggerOptions = {}, fields: LogFields = {}) {
    this.#options = options;
    this.#least = RANK[options.level ?? "info"];
    this.#fields = fields;
  }

  /** A logger like this one whose records also carry `fields` (they win over this one's). */
  child(fields: LogFields): Logger {
    return new Logger(this.#options, { ...this.#fields, ...fields });
  }

  /** Whether records of `level` are written. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#least;
  }

  /** Detail that helps debugging (-v). */
  debug(message: string, fields?: LogFields): void {
    this.#write("debug", message, fields);
  }

  /** Something an operator should know about. */
  info(message: string, fields?: LogFields): void {
    this.#write("info", message, fields);
  }

  /** Something went wrong but the program carries on. */
  warn(message: string, fields?: LogFields): void {
    this.#write("warn", message, fields);
  }

  /** Something failed that the program could not do for its user (a storage error). */
  error(message: string, fields?: LogFields): void {
    this.#write("error", message, fields);
  }

  /**
   * A message a peer prints as it is (qemu-nbd's warning about a probed raw
   * image, a hint under a warning): written as it is in text, without time,
   * program or client; a record of `level` in JSON.
   */
  verbatim(level: LogLevel, message: string): void {
    if (this.#options.format === "json") this.#write(level, message, undefined);
    else if (this.enabled(level)) (this.#options.write ?? writeToStderr)(message);
  }

  /** Write a record of `level`, unless the level is below this logger's. */
  #write(level: LogLevel, message: string, fields: LogFields | undefined): void {
    if (RANK[level] < this.#least) return;
    const record = fields ? { ...this.#fields, ...fields } : this.#fields;
    const time = new Date();
    const line = this.#options.format === "json"
      ? formatJsonRecord(time, level, message, record)
      : formatTextRecord(this.#options.timestamps ? time : null, this.#prefix, message, record);
    (this.#options.write ?? writeToStderr)(line);
  }

  get #prefix(): string {
    return this.#options.prefix ?? "denbd";
  }
}

/**
 * A text line: the time when given, the program, the client and its
 * address when known, then the message.
 */
function formatTextRecord(
  time: Date | null,
  prefix: string,
  message: string,
  fields: LogFields,
): string {
  const stamp = time ? `${time.toISOString()} ` : "";
  const client = fields.client === undefined
    ? fields.peer === undefined ? "" : `${fields.peer}: `
    : `client ${fields.client}${fields.peer === undefined ? "" : ` (${fields.peer})`}: `;
  return `${stamp}${prefix}: ${client}${message}`;
}

/** A JSON line with `time`, `level`, `msg`, then the fields the record has, in that order. */
function formatJsonRecord(
  time: Date,
  level: LogLevel,
  message: string,
  fields: LogFields,
): string {
  return JSON.stringify({
    time: time.toISOString(),
    level,
    msg: message,
    client: fields.client,
    peer: fields.peer,
    export: fields.export === undefined ? undefined : bounded(fields.export),
  });
}

/**
 * `text` (a name a peer sent) between single quotes, safe to print: control
 * characters, quotes and backslashes escaped (`\n`, `\'`, `\\`, `\x1b`,
 * `\u2028`), cut after {@linkcode MAX_LOGGED_TEXT_LENGTH} characters with
 * the number left out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { quoted } from "./log.ts";
 * assert.equal(quoted("disk\n\x1b[2J"), "'disk\\n\\x1b[2J'");
 * ```
 */
export function quoted(text: string): string {
  return `'${escapeText(bounded(text))}'`;
}

/** `text` cut after {@linkcode MAX_LOGGED_TEXT_LENGTH} characters, saying how many more there were. */
function bounded(text: string): string {
  if (text.length <= MAX_LOGGED_TEXT_LENGTH) return text;
  const left = text.length - MAX_LOGGED_TEXT_LENGTH;
  return `${text.slice(0, MAX_LOGGED_TEXT_LENGTH)}... (${left} more characters)`;
}

/** Escapes of the characters that have a short one. */
const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "'": "\\'",
  "\\": "\\\\",
};

/** Control characters (C0, DEL, C1), the line and paragraph separators, quotes and backslashes. */
// deno-lint-ignore no-control-regex
const NEEDS_ESCAPE = /[\x00-\x1f\x7f-\x9f\u2028\u2029'\\]/g;

function escapeText(text: string): string {
  return text.replace(NEEDS_ESCAPE, (char) => {
    const short = SHORT_ESCAPES[char];
    if (short) return short;
    const code = char.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** What the log options of a command line say: -v, --log-level, --log-format. */
export interface LogFlags {
  /** -v: debug records too, with times. */
  readonly verbose?: boolean;
  /** --log-level: the least severe level written; wins over -v. */
  readonly level?: LogLevel;
  /** --log-format. */
  readonly format?: LogFormat;
}

/**
 * The logger options of a command line: the level is --log-level if given,
 * else debug with -v, else info; text lines carry times once any of the
 * three is given, so the plain lines without them stay as they were.
 */
export function loggerOptionsOf(flags: LogFlags, prefix?: string): LoggerOptions {
  return {
    prefix,
    level: flags.level ?? (flags.verbose ? "debug" : "info"),
    format: flags.format ?? "text",
    timestamps: Boolean(flags.verbose) || flags.level !== undefined ||
      flags.format !== undefined,
  };
}

/** Whether `text` names a log level. */
export function isLogLevel(text: string): text is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(text);
}

/** Whether `text` names a log format. */
export function isLogFormat(text: string): text is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(text);
}
