/**
 * The input syntax of `denbd qmp`'s shell, which is qmp-shell's (QEMU's
 * python/qemu/qmp/qmp_shell.py) plus whole JSON requests:
 *
 * - `COMMAND [KEY=VALUE ...]`: each KEY names an argument, dotted keys build
 *   nested objects (`addr.type=unix addr.path=/s` is
 *   `{"addr": {"type": "unix", "path": "/s"}}`). A VALUE that is an integer
 *   is a number, `true`/`false` (any case) a boolean, a `{...}` or `[...]`
 *   literal the object or list it spells (JSON, or Python's notation:
 *   single quotes, `True`/`False`/`None`), a quoted string (`"a b"`, `'a b'`,
 *   where a space may appear) the string inside the quotes, and anything
 *   else the string as written (`null` and `1.5` are strings, as in
 *   qmp-shell). A literal may not contain unquoted spaces.
 * - `COMMAND {JSON-ARGS}` and `{JSON-REQUEST}`: sent as written.
 * - `transaction(` opens a transaction: each following line is an action
 *   `TYPE [KEY=VALUE ...]` and `)` closes it and yields one `transaction`
 *   request (`transaction( TYPE ... )` on one line works too).
 * - `help [COMMAND]`: asks for the shell's help.
 *
 * Differences from qmp-shell: a malformed `{...}`/`[...]` value is an error
 * (qmp-shell sends it as a string), and a quoted value loses its quotes
 * (qmp-shell keeps them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ShellParser } from "./shell-syntax.ts";
 * const parser = new ShellParser();
 * assert.deepEqual(parser.parse("blockdev-add driver=file node-name=n0 filename=/tmp/x"), {
 *   kind: "request",
 *   request: {
 *     execute: "blockdev-add",
 *     arguments: { driver: "file", "node-name": "n0", filename: "/tmp/x" },
 *   },
 * });
 * assert.deepEqual(parser.parse("x a.b=1 a.c=[true,'s']").kind, "request");
 * assert.deepEqual(parser.parse("x a=1 a.b=2"), {
 *   kind: "error",
 *   message: 'Cannot use "a" as both leaf and non-leaf key',
 * });
 * ```
 * @module
 */

import { JsonStreamParser, SIMPLE_ESCAPES } from "./json-stream.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "./json-value.ts";

/** What one input line amounts to. */
export type ShellLine =
  /** A request to send. */
  | { readonly kind: "request"; readonly request: JsonObject }
  /** Nothing to send yet: a blank line, or an action added to an open transaction. */
  | { readonly kind: "nothing" }
  /** `help` (no command) or `help COMMAND`. */
  | { readonly kind: "help"; readonly command?: string }
  /** The line is malformed; `message` says how. */
  | { readonly kind: "error"; readonly message: string };

/** A malformed line; caught inside {@linkcode ShellParser.parse}. */
class ShellSyntaxError extends Error {}

/**
 * Turns input lines into requests. Stateful only for transactions: between
 * `transaction(` and `)` lines are collected as actions.
 */
export class ShellParser {
  #actions: JsonObject[] | null = null;

  /** Whether a transaction is open (its actions are being collected). */
  get inTransaction(): boolean {
    return this.#actions !== null;
  }

  /** What `line` asks for. */
  parse(line: string): ShellLine {
    return caught(() => this.#parse(line.trim()));
  }

  /**
   * What a command given as separate words asks for, as on a command line
   * (whose shell has split the words and removed their quotes):
   * `COMMAND [{JSON-ARGS} | KEY=VALUE ...]` or `help [COMMAND]`.
   */
  parseWords(words: readonly string[]): ShellLine {
    const json = words.length === 2 && words[1].trimStart().startsWith("{") ? words[1] : undefined;
    return caught(() => this.#command(words, json));
  }

  #parse(text: string): ShellLine {
    if (this.#actions === null && text.startsWith("{")) {
      return { kind: "request", request: jsonObject(text, "request") };
    }
    const tokens = tokenize(text);
    if (tokens[0] === "transaction(") {
      this.#actions = [];
      tokens.shift();
    }
    if (this.#actions === null) {
      const rest = text.slice(tokens[0]?.length ?? 0).trim();
      return this.#command(tokens, rest.startsWith("{") ? rest : undefined);
    }
    if (tokens[0] === ")") {
      if (tokens.length > 1) throw new ShellSyntaxError("Unexpected input after ')'");
      return this.#closeTransaction();
    }
    if (tokens.length === 0) return { kind: "nothing" };
    const closes = tokens.at(-1) === ")";
    if (closes) tokens.pop();
    const [type, ...pairs] = tokens;
    this.#actions.push({ type, data: keyValues(pairs) });
    return closes ? this.#closeTransaction() : { kind: "nothing" };
  }

  /** `tokens` as a command and its `KEY=VALUE` words, or with `json` as its arguments. */
  #command(tokens: readonly string[], json: string | undefined): ShellLine {
    if (tokens.length === 0) return { kind: "nothing" };
    const [name, ...pairs] = tokens;
    if (name === "help") {
      if (pairs.length > 1) throw new ShellSyntaxError("usage: help [COMMAND]");
      return pairs.length ? { kind: "help", command: pairs[0] } : { kind: "help" };
    }
    const args = json === undefined ? keyValues(pairs) : jsonObject(json, "arguments");
    return { kind: "request", request: { execute: name, arguments: args } };
  }

  #closeTransaction(): ShellLine {
    const actions = this.#actions ?? [];
    this.#actions = null;
    return { kind: "request", request: { execute: "transaction", arguments: { actions } } };
  }
}

/** What `parse` returns, a syntax error becoming an "error" line. */
function caught(parse: () => ShellLine): ShellLine {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ShellSyntaxError) return { kind: "error", message: error.message };
    throw error;
  }
}

/**
 * The words of `text`: runs of characters other than white space, where a
 * quoted string (with `\` escapes) may hold white space.
 */
export function tokenize(text: string): string[] {
  const tokens: string[] = [];
  // The last alternative takes an unterminated quote and the rest of the line.
  const word = /(?:[^\s"']|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|(["'])[^]*)+/y;
  for (let at = 0; at < text.length;) {
    if (/\s/.test(text[at])) {
      at++;
      continue;
    }
    word.lastIndex = at;
    const match = word.exec(text)!;
    if (match[1] !== undefined) throw new ShellSyntaxError(`Unterminated string in '${match[0]}'`);
    tokens.push(match[0]);
    at = word.lastIndex;
  }
  return tokens;
}

/** The object `KEY=VALUE` words build, dotted keys nesting. */
function keyValues(pairs: readonly string[]): JsonObject {
  const result: JsonObject = {};
  for (const pair of pairs) {
    const equals = pair.indexOf("=");
    if (equals < 0) throw new ShellSyntaxError(`Expected a key=value pair, got '${pair}'`);
    const key = pair.slice(0, equals);
    const path = key.split(".");
    if (path.some((part) => part === "")) {
      throw new ShellSyntaxError(`Invalid key '${key}' in '${pair}'`);
    }
    let parent = result;
    for (const [depth, part] of path.slice(0, -1).entries()) {
      const child = parent[part] ??= {};
      if (!isJsonObject(child)) {
        const prefix = path.slice(0, depth + 1).join(".");
        throw new ShellSyntaxError(`Cannot use "${prefix}" as both leaf and non-leaf key`);
      }
      parent = child;
    }
    const last = path.at(-1)!;
    if (Object.hasOwn(parent, last)) {
      throw new ShellSyntaxError(
        isJsonObject(parent[last])
          ? `Cannot use "${key}" as both leaf and non-leaf key`
          : `Cannot set "${key}" multiple times`,
      );
    }
    parent[last] = shellValue(pair.slice(equals + 1), key);
  }
  return result;
}

/** The value a VALUE word of `KEY=VALUE` stands for (see the module's description). */
export function shellValue(text: string, key = "value"): JsonValue {
  if (/^[+-]?\d+$/.test(text)) {
    const big = BigInt(text);
    return Number.isSafeInteger(Number(big)) ? Number(big) : big;
  }
  const lower = text.toLowerCase();
  if (lower === "true" || lower === "false") return lower === "true";
  if (/^[{["']/.test(text)) {
    const literal = new LiteralParser(text);
    try {
      return literal.parseWhole();
    } catch (error) {
      if (!(error instanceof ShellSyntaxError)) throw error;
      throw new ShellSyntaxError(`Invalid value for '${key}': ${error.message} in ${text}`);
    }
  }
  return text;
}

/** Parse `text`, which starts with `{`, as one JSON object (QEMU's JSON syntax); `what` names it in errors. */
function jsonObject(text: string, what: string): JsonObject {
  const items = new JsonStreamParser().feed(new TextEncoder().encode(text + "\n"));
  if (items.length === 0) throw new ShellSyntaxError(`Invalid ${what}: unterminated JSON object`);
  if (items.length > 1) throw new ShellSyntaxError(`Invalid ${what}: expected one JSON object`);
  const [item] = items;
  if ("error" in item) throw new ShellSyntaxError(`Invalid ${what}: ${item.error}`);
  return item.value as JsonObject; // text starts with "{": the one value is an object
}

/** Python's and JSON's spellings of the keyword literals. */
const KEYWORDS: Readonly<Record<string, JsonValue>> = {
  true: true,
  false: false,
  null: null,
  True: true,
  False: false,
  None: null,
};

/** A recursive-descent parser of one literal: JSON, or Python's notation of the same values. */
class LiteralParser {
  readonly #text: string;
  #at = 0;

  constructor(text: string) {
    this.#text = text;
  }

  parseWhole(): JsonValue {
    const value = this.#value();
    this.#space();
    if (this.#at < this.#text.length) this.#fail("unexpected text");
    return value;
  }

  #fail(what: string): never {
    throw new ShellSyntaxError(`${what} at offset ${this.#at}`);
  }

  #space(): void {
    while (/\s/.test(this.#text[this.#at] ?? "")) this.#at++;
  }

  #value(): JsonValue {
    this.#space();
    const char = this.#text[this.#at];
    if (char === "{") return this.#object();
    if (char === "[") return this.#list();
    if (char === '"' || char === "'") return this.#string();
    const number = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(this.#text.slice(this.#at));
    if (number) {
      this.#at += number[0].length;
      if (number[1] || number[2]) return Number(number[0]);
      const big = BigInt(number[0]);
      return Number.isSafeInteger(Number(big)) ? Number(big) : big;
    }
    const word = /^[A-Za-z]+/.exec(this.#text.slice(this.#at))?.[0];
    if (word && Object.hasOwn(KEYWORDS, word)) {
      this.#at += word.length;
      return KEYWORDS[word];
    }
    return this.#fail(char === undefined ? "expected a value" : `unexpected '${char}'`);
  }

  /** Items up to `close`, separated by commas (a trailing comma allowed, as in Python). */
  #items(close: string, item: () => void): void {
    this.#at++;
    for (;;) {
      this.#space();
      if (this.#text[this.#at] === close) break;
      item();
      this.#space();
      if (this.#text[this.#at] === ",") this.#at++;
      else if (this.#text[this.#at] !== close) this.#fail(`expected ',' or '${close}'`);
    }
    this.#at++;
  }

  #object(): JsonObject {
    const object: JsonObject = {};
    this.#items("}", () => {
      const quote = this.#text[this.#at];
      if (quote !== '"' && quote !== "'") this.#fail("expected a quoted key");
      const key = this.#string();
      this.#space();
      if (this.#text[this.#at] !== ":") this.#fail("expected ':'");
      this.#at++;
      object[key] = this.#value();
    });
    return object;
  }

  #list(): JsonValue[] {
    const list: JsonValue[] = [];
    this.#items("]", () => list.push(this.#value()));
    return list;
  }

  #string(): string {
    const quote = this.#text[this.#at++];
    let result = "";
    for (;;) {
      const char = this.#text[this.#at++];
      if (char === undefined) this.#fail("unterminated string");
      if (char === quote) return result;
      if (char !== "\\") {
        result += char;
        continue;
      }
      const escape = this.#text[this.#at++];
      if (escape === "u") {
        const hex = this.#text.slice(this.#at, this.#at + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.#fail("invalid \\u escape");
        result += String.fromCharCode(parseInt(hex, 16));
        this.#at += 4;
      } else if (escape !== undefined && Object.hasOwn(SIMPLE_ESCAPES, escape)) {
        result += SIMPLE_ESCAPES[escape];
      } else {
        this.#fail(`invalid escape '\\${escape ?? ""}'`);
      }
    }
  }
}
