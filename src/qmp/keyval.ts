/**
 * QEMU's keyval syntax (util/keyval.c) as qemu-storage-daemon 7.2 reads it,
 * with QEMU's exact error messages. qsd parses `--blockdev` (implied key
 * `driver`), `--export` (`type`), `--monitor` (`chardev`), `--object`
 * (`qom-type`) and `--nbd-server` (no implied key) with it: dotted keys build
 * nested objects (`addr.type=unix`), numeric key fragments build lists
 * (`bitmaps.0=a,bitmaps.1=b`), `,,` is a literal comma in a value, and every
 * leaf is a string: the input visitor converts leaves to the schema's types
 * later. `--chardev` uses the older QemuOpts syntax instead (./qemu-opts.ts),
 * which reports its errors with the same {@link KeyvalError}.
 *
 * qsd reads an option argument that starts with `{` as JSON instead
 * ({@link isJsonArgument}); every option but `--chardev` accepts that form.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseKeyval } from "./keyval.ts";
 * assert.deepEqual(parseKeyval("nbd,id=e0,node-name=n0,bitmaps.0=b0", "type"), {
 *   type: "nbd",
 *   id: "e0",
 *   "node-name": "n0",
 *   bitmaps: ["b0"],
 * });
 * assert.deepEqual(parseKeyval("addr.type=unix,addr.path=/tmp/nbd.sock"), {
 *   addr: { type: "unix", path: "/tmp/nbd.sock" },
 * });
 * assert.throws(() => parseKeyval("a.b=1,a=2"), /Parameters 'a\.\*' used inconsistently/);
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import { qdictBucket } from "./json-value.ts";

/** A node of a parsed keyval tree: a string leaf, an object or a list. */
export type KeyvalValue = string | KeyvalObject | KeyvalValue[];

/** An object of a parsed keyval tree; keys appear in the order first written. */
export interface KeyvalObject {
  [key: string]: KeyvalValue;
}

/** What {@link parseKeyvalHelp} returns: the tree and whether help was asked for. */
export interface KeyvalParseResult {
  /** The parsed options, without the `help` / `?` elements. */
  readonly tree: KeyvalObject;
  /** True when an element was `help` or `?` without a value. */
  readonly help: boolean;
}

/** A warning QEMU prints while parsing and carries on: a message and an optional hint line. */
export interface OptionWarning {
  /** Printed after the location prefix, e.g. `short-form boolean option 'server' deprecated`. */
  readonly message: string;
  /** Printed on the next line without a prefix, e.g. `Please use server=on instead`. */
  readonly hint?: string;
}

/**
 * An option string QEMU rejects, in keyval or QemuOpts syntax. `message` is
 * QEMU's text without the `qemu-storage-daemon: --blockdev ARG: ` prefix,
 * which the caller adds.
 */
export class KeyvalError extends DenbdError {
  /** A line QEMU prints after the message (without a prefix), if any. */
  readonly hint?: string;
  /** Warnings QEMU printed (each with the prefix) before it hit this error. */
  readonly warnings: readonly OptionWarning[];

  /** Create the error QEMU reports as `message`, optionally with a hint and earlier warnings. */
  constructor(message: string, hint?: string, warnings: readonly OptionWarning[] = []) {
    super("invalid", message);
    this.name = "KeyvalError";
    this.hint = hint;
    this.warnings = warnings;
  }
}

/**
 * The implied first key of each qsd 7.2 option parsed with keyval:
 * `--blockdev file,filename=x` means `driver=file,...`. `--nbd-server` has none
 * (`--nbd-server unix,...` fails with "Expected '=' after parameter 'unix'").
 * `--chardev` is QemuOpts (./qemu-opts.ts), whose implied name is `backend`.
 */
export const QSD_IMPLIED_KEYS: Readonly<Record<string, string | undefined>> = {
  blockdev: "driver",
  export: "type",
  monitor: "chardev",
  object: "qom-type",
  "nbd-server": undefined,
};

/** The message keyval gives when `help` or `?` appears where help is not offered. */
export const HELP_NOT_AVAILABLE = "Help is not available for this option";

/**
 * True when qsd would parse `text` as JSON rather than as key=value options:
 * it starts with `{` (no leading blanks allowed). The JSON must be an object;
 * its errors are the JSON parser's ("JSON parse error, premature EOI").
 */
export function isJsonArgument(text: string): boolean {
  return text.startsWith("{");
}

/**
 * Parse `text` in QEMU's keyval syntax, as qsd does for an option argument.
 * `impliedKey` names the value of a first element without `=`. A `help` or `?`
 * element throws "Help is not available for this option" (as for every qsd
 * option but `--object`; use {@link parseKeyvalHelp} there).
 *
 * @throws {KeyvalError} with QEMU's message for any malformed input.
 */
export function parseKeyval(text: string, impliedKey?: string): KeyvalObject {
  const { tree, help } = parse(text, impliedKey, false);
  if (help) throw new KeyvalError(HELP_NOT_AVAILABLE);
  return tree;
}

/**
 * Like {@link parseKeyval}, but a `help` or `?` element (anywhere, without a
 * value) sets `help` instead of failing, as `--object` needs: `--object help`
 * lists the types, `--object iothread,help` the properties of one type.
 *
 * @throws {KeyvalError} with QEMU's message for any malformed input.
 */
export function parseKeyvalHelp(text: string, impliedKey?: string): KeyvalParseResult {
  return parse(text, impliedKey, true);
}

/** Keys longer than this (in bytes, so characters: valid keys are ASCII) are rejected. */
const MAX_KEY_FRAGMENT = 127;
/** List indexes are capped here, as QEMU converts them to an int. */
const INT_MAX = 2147483647;

/** One member of an object under construction; `order` numbers first insertions. */
interface Entry {
  value: Node;
  readonly order: number;
}

/** An object under construction: members by key, in first-insertion order. */
type Dict = Map<string, Entry>;
type Node = string | Dict;

interface ParseState {
  help: boolean;
  order: number;
}

function parse(text: string, impliedKey: string | undefined, allowHelp: boolean) {
  const root: Dict = new Map();
  const state: ParseState = { help: false, order: 0 };
  let pos = 0;
  let implied = impliedKey;
  while (pos < text.length) {
    pos = parseOne(root, text, pos, implied, state);
    implied = undefined;
  }
  if (state.help && !allowHelp) throw new KeyvalError(HELP_NOT_AVAILABLE);
  const tree = listify(root, []);
  if (Array.isArray(tree)) throw new Error("keyval: the root cannot be a list");
  return { tree, help: state.help };
}

/** Length of the run of characters from `pos` that are not in `stops`. */
function spanUntil(text: string, pos: number, stops: string): number {
  let end = pos;
  while (end < text.length && !stops.includes(text[end])) end++;
  return end - pos;
}

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "9";
}

function isAlpha(c: string | undefined): boolean {
  return c !== undefined && ((c >= "a" && c <= "z") || (c >= "A" && c <= "Z"));
}

function isAlnum(c: string | undefined): boolean {
  return isAlpha(c) || isDigit(c);
}

/**
 * Length of the QAPI name at `pos` (QEMU's parse_qapi_name, not requiring the
 * name to fill the string), or 0 if there is none: a letter, then letters,
 * digits, `-` and `_`; optionally behind a downstream prefix `__RFQDN_`, whose
 * RFQDN may contain dots (so `__com.redhat_x` is one fragment).
 */
function qapiNameLength(key: string, pos: number): number {
  let p = pos;
  if (key[p] === "_") {
    p++;
    if (key[p] !== "_") return 0;
    p++;
    while (p < key.length && (isAlnum(key[p]) || key[p] === "-" || key[p] === ".")) p++;
    if (key[p] !== "_") return 0;
    p++;
  }
  if (!isAlpha(key[p])) return 0;
  p++;
  while (p < key.length && (isAlnum(key[p]) || key[p] === "-" || key[p] === "_")) p++;
  return p - pos;
}

/** Length of the run of decimal digits at `pos`. */
function digitsLength(key: string, pos: number): number {
  let p = pos;
  while (isDigit(key[p])) p++;
  return p - pos;
}

/** Length of a help request at `pos`: 1 for `?`, 4 for a leading `help`, else 0. */
function helpPrefixLength(text: string, pos: number): number {
  if (text[pos] === "?") return 1;
  return text.startsWith("help", pos) ? 4 : 0;
}

function put(cur: Dict, key: string, value: Node, state: ParseState, errorKey: string): Node {
  const old = cur.get(key);
  if (old === undefined) {
    cur.set(key, { value, order: state.order++ });
    return value;
  }
  if (typeof old.value !== typeof value) {
    throw new KeyvalError(`Parameters '${errorKey}.*' used inconsistently`);
  }
  if (typeof value === "string") old.value = value; // the last one wins, in place
  return old.value;
}

/** Parse one element at `pos` into `root`; return where the next one starts. */
function parseOne(
  root: Dict,
  text: string,
  pos: number,
  impliedKey: string | undefined,
  state: ParseState,
): number {
  const len = spanUntil(text, pos, "=,");
  let key = text.slice(pos, pos + len);
  let implied = false;
  if (len > 0 && text[pos + len] !== "=") {
    if (helpPrefixLength(text, pos) === len) {
      state.help = true;
      const next = pos + len;
      return text[next] === "," ? next + 1 : next;
    }
    if (impliedKey !== undefined) {
      key = impliedKey;
      implied = true;
    }
  }

  // Walk the key's fragments: each but the last names an object (created on demand).
  let cur = root;
  let i = 0;
  let fragment = "";
  for (;;) {
    const flen = i !== 0 && isDigit(key[i]) ? digitsLength(key, i) : qapiNameLength(key, i);
    if (flen === 0 || (i + flen < key.length && key[i + flen] !== ".")) {
      throw new KeyvalError(`Invalid parameter '${key}'`);
    }
    if (flen > MAX_KEY_FRAGMENT) {
      const kind = i !== 0 || i + flen !== key.length ? " fragment" : "";
      throw new KeyvalError(`Parameter${kind} '${key.slice(i, i + flen)}' is too long`);
    }
    if (i !== 0) {
      cur = put(cur, fragment, new Map(), state, key.slice(0, i - 1)) as Dict;
    }
    fragment = key.slice(i, i + flen);
    i += flen;
    if (key[i] !== ".") break;
    i++;
  }

  let value: string;
  let next: number;
  if (implied) {
    // The implied key's value ends at the first comma: ",," cannot escape one here.
    value = text.slice(pos, pos + len);
    next = pos + len;
    if (text[next] === ",") next++;
  } else {
    if (text[pos + len] !== "=") {
      throw new KeyvalError(`Expected '=' after parameter '${key}'`);
    }
    let s = pos + len + 1;
    value = "";
    for (;;) {
      if (s >= text.length) break;
      if (text[s] === ",") {
        s++;
        if (text[s] !== ",") break;
      }
      value += text[s++];
    }
    next = s;
  }
  put(cur, fragment, value, state, key);
  return next;
}

/**
 * The order QEMU walks a QDict in (tdb_hash bucket, newest entry first within
 * one): it decides which of two spellings of one list index wins (`list.1`
 * against `list.01`) and which error is reported first.
 */
function qdictOrder(dict: Dict): [string, Entry][] {
  const entries = [...dict.entries()].map((e) => ({ e, bucket: qdictBucket(e[0]) }));
  entries.sort((a, b) => a.bucket - b.bucket || b.e[1].order - a.e[1].order);
  return entries.map((x) => x.e);
}

/** A list index from an all-digit key, capped at INT_MAX as QEMU does. */
function keyToIndex(key: string): number {
  const digits = key.replace(/^0+(?=.)/, "");
  if (digits.length > 10) return INT_MAX;
  return Math.min(Number(digits), INT_MAX);
}

function setMember(obj: KeyvalObject, key: string, value: KeyvalValue): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Turn objects whose keys are all list indexes into lists, depth first, with
 * QEMU's checks: no mix of indexes and names, no missing index.
 */
function listify(dict: Dict, path: readonly string[]): KeyvalObject | KeyvalValue[] {
  let hasIndex = false;
  let hasMember = false;
  const converted = new Map<string, KeyvalValue>();
  for (const [key, entry] of qdictOrder(dict)) {
    if (isDigit(key[0])) hasIndex = true;
    else hasMember = true;
    const value = entry.value;
    converted.set(key, typeof value === "string" ? value : listify(value, [...path, key]));
  }
  const prefix = path.map((p) => p + ".").join("");
  if (hasIndex && hasMember) {
    throw new KeyvalError(`Parameters '${prefix}*' used inconsistently`);
  }
  if (!hasIndex) {
    const obj: KeyvalObject = {};
    for (const key of dict.keys()) setMember(obj, key, converted.get(key)!);
    return obj;
  }
  // Several spellings of one index (1, 01): the one QEMU visits last wins.
  const elements: (KeyvalValue | undefined)[] = [];
  let maxIndex = -1;
  for (const [key] of qdictOrder(dict)) {
    const index = keyToIndex(key);
    if (index > maxIndex) maxIndex = index;
    if (index < dict.size) elements[index] = converted.get(key);
  }
  const list: KeyvalValue[] = [];
  for (let i = 0; i <= maxIndex; i++) {
    const element = elements[i];
    if (element === undefined) throw new KeyvalError(`Parameter '${prefix}${i}' missing`);
    list.push(element);
  }
  return list;
}
