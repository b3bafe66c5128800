/**
 * QEMU's QemuOpts syntax (util/qemu-option.c), the older of the two
 * `key=value,...` syntaxes of qemu-storage-daemon 7.2, which qsd uses for
 * `--chardev`, with QEMU's exact messages: flat names, repeated names (the
 * last one wins), short-form booleans (`server` = `server=on`, `nowait` =
 * `wait=off`, each with a deprecation warning), `id` pulled out up front and
 * checked as an identifier ({@link isWellFormedId}), and values checked
 * against a table of option types. Errors are the {@link KeyvalError}s of the
 * keyval parser (./keyval.ts).
 *
 * @example
 * ```ts
 * import { parseQemuOpts } from "./qemu-opts.ts";
 * const chardev = parseQemuOpts("socket,id=c0,path=/tmp/q.sock,server=on", {
 *   impliedName: "backend",
 *   types: { backend: "string", path: "string", server: "bool" },
 * });
 * // chardev.id: "c0"; chardev.values: { backend: "socket", path: "/tmp/q.sock", server: "on" }
 * ```
 * @module
 */

import { isHexSizeWithSuffix, parseCInteger, parseSize } from "./c-number.ts";
import { KeyvalError, type OptionWarning } from "./keyval.ts";

/** How QemuOpts checks a value: QEMU's QEMU_OPT_STRING, _BOOL, _NUMBER, _SIZE. */
export type QemuOptType = "string" | "bool" | "number" | "size";

/** One `name=value` of a QemuOpts string, in the order given (`id` excluded). */
export interface QemuOpt {
  /** The option name (`server` for both `server=on` and the flag `server`). */
  readonly name: string;
  /** The value as written; `on`/`off` for short-form booleans. */
  readonly value: string;
}

/** What {@link parseQemuOpts} returns. */
export interface QemuOptsResult {
  /** The first `id=` value (QemuOpts takes the first one), if any. */
  readonly id?: string;
  /** Every other element, in order; a repeated name keeps every occurrence. */
  readonly opts: readonly QemuOpt[];
  /** Each name's last value: what QEMU's qemu_opt_get returns. */
  readonly values: Readonly<Record<string, string>>;
  /** True when a `help` or `?` flag asked for the option list (parsing stopped there). */
  readonly help: boolean;
  /** Warnings to print (deprecated short-form booleans, hex sizes with a suffix). */
  readonly warnings: readonly OptionWarning[];
}

/** Options of {@link parseQemuOpts}. */
export interface QemuOptsOptions {
  /** The name a first element without `=` stands for (`backend` for `--chardev`). */
  readonly impliedName?: string;
  /** Option types to check names and values against; absent: accept anything. */
  readonly types?: Readonly<Record<string, QemuOptType>>;
}

/** The hint QEMU prints under an id it rejects. */
export const ID_HINT =
  "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.";

const SIZE_HINT = "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
  "and exabytes, respectively.";

/** QEMU's id_wellformed: a letter, then letters, digits, `-`, `.` and `_`. */
export function isWellFormedId(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9._-]*$/.test(id);
}

/** Length of the name at `pos`: up to the next `=` or `,`, or the end. */
function nameLength(text: string, pos: number): number {
  const end = text.slice(pos).search(/[=,]/);
  return end < 0 ? text.length - pos : end;
}

/** QemuOpts' value reader: up to a single comma, `,,` standing for one. */
function readOptValue(text: string, pos: number): { value: string; next: number } {
  let value = "";
  let s = pos;
  while (s < text.length) {
    if (text[s] === ",") {
      if (text[s + 1] !== ",") break;
      s++;
    }
    value += text[s++];
  }
  return { value, next: s };
}

interface RawOpt {
  name: string;
  value: string;
  /** Set for a short-form boolean: the flag as written (`nowait`). */
  flag?: string;
  /** Set when the flag is `help` or `?`. */
  help?: boolean;
}

/** Split one QemuOpts element at `pos`, as QEMU's get_opt_name_value does. */
function readOpt(
  text: string,
  pos: number,
  firstName: string | undefined,
): { opt: RawOpt; next: number } {
  const len = nameLength(text, pos);
  let opt: RawOpt;
  let next: number;
  if (text[pos + len] !== "=") {
    if (firstName !== undefined) {
      const v = readOptValue(text, pos);
      opt = { name: firstName, value: v.value };
      next = v.next;
    } else {
      const written = text.slice(pos, pos + len);
      if (written.startsWith("no")) {
        opt = { name: written.slice(2), value: "off", flag: written };
      } else {
        const help = written === "help" || written === "?";
        opt = { name: written, value: "on", flag: written, help };
      }
      next = pos + len;
    }
  } else {
    const v = readOptValue(text, pos + len + 1);
    opt = { name: text.slice(pos, pos + len), value: v.value };
    next = v.next;
  }
  if (text[next] === ",") next++;
  return { opt, next };
}

function flagWarning(opt: RawOpt): OptionWarning {
  const flag = opt.flag!;
  const hint = opt.name === "delay"
    ? `Please use nodelay=${flag.startsWith("no") ? "on" : "off"} instead`
    : `Please use ${opt.name}=${opt.value} instead`;
  return { message: `short-form boolean option '${flag}' deprecated`, hint };
}

/** A boolean option's value: QAPI's spellings (qapi_bool_parse), or undefined for others. */
export function parseQemuOptBool(value: string): boolean | undefined {
  if (["on", "yes", "true", "y"].includes(value)) return true;
  if (["off", "no", "false", "n"].includes(value)) return false;
  return undefined;
}

/** Check one option against `types` the way QEMU's opt_validate does; returns warnings. */
function validateOpt(opt: RawOpt, types: Readonly<Record<string, QemuOptType>>): string[] {
  const type = Object.hasOwn(types, opt.name) ? types[opt.name] : undefined;
  if (type === undefined) throw new KeyvalError(`Invalid parameter '${opt.name}'`);
  switch (type) {
    case "string":
      return [];
    case "bool":
      if (parseQemuOptBool(opt.value) === undefined) {
        throw new KeyvalError(`Parameter '${opt.name}' expects 'on' or 'off'`);
      }
      return [];
    case "number": {
      const n = parseCInteger(opt.value, "unsigned");
      if (n === "range") {
        throw new KeyvalError(`Value '${opt.value}' is too large for parameter '${opt.name}'`);
      }
      if (n === "invalid") throw new KeyvalError(`Parameter '${opt.name}' expects a number`);
      return [];
    }
    case "size": {
      const s = parseSize(opt.value);
      if (s === "range") {
        throw new KeyvalError(`Value '${opt.value}' is out of range for parameter '${opt.name}'`);
      }
      if (s === "invalid") {
        throw new KeyvalError(
          `Parameter '${opt.name}' expects a non-negative number below 2^64`,
          SIZE_HINT,
        );
      }
      return isHexSizeWithSuffix(opt.value)
        ? [`Using a multiplier suffix on hex numbers is deprecated: ${opt.value}`]
        : [];
    }
  }
}

/**
 * Parse `text` in QEMU's QemuOpts syntax, as qsd does for `--chardev`
 * (`impliedName` `backend`, `types` the chardev options).
 *
 * The steps and their order are QEMU's: the first `id=` is taken out and
 * checked first ("Parameter 'id' expects an identifier", with {@link ID_HINT});
 * then each element in turn: a first element without `=` is the implied name's
 * value (`,,` escapes work there); any other element without `=` is a
 * short-form boolean (`server` = on, `noserver` = off) that earns a
 * deprecation warning, unless it is `help` or `?`, which stops parsing with
 * `help` set; with `types`, an unknown name or a bad value throws at once.
 *
 * @throws {KeyvalError} with QEMU's message (plus its hint and the warnings
 * printed before it) for a bad id, name or value.
 */
export function parseQemuOpts(text: string, options: QemuOptsOptions = {}): QemuOptsResult {
  let id: string | undefined;
  for (let pos = 0; pos < text.length && id === undefined;) {
    const { opt, next } = readOpt(text, pos, undefined);
    if (opt.name === "id") id = opt.value;
    pos = next;
  }
  if (id !== undefined && !isWellFormedId(id)) {
    throw new KeyvalError("Parameter 'id' expects an identifier", ID_HINT);
  }

  const opts: QemuOpt[] = [];
  const values: Record<string, string> = {};
  const warnings: OptionWarning[] = [];
  let firstName = options.impliedName;
  for (let pos = 0; pos < text.length;) {
    const { opt, next } = readOpt(text, pos, firstName);
    pos = next;
    firstName = undefined;
    if (opt.help) return { id, opts, values, help: true, warnings };
    if (opt.flag !== undefined) warnings.push(flagWarning(opt));
    if (opt.name === "id") continue;
    if (options.types) {
      try {
        for (const message of validateOpt(opt, options.types)) warnings.push({ message });
      } catch (e) {
        if (!(e instanceof KeyvalError)) throw e;
        throw new KeyvalError(e.message, e.hint, warnings);
      }
    }
    opts.push({ name: opt.name, value: opt.value });
    setValue(values, opt.name, opt.value);
  }
  return { id, opts, values, help: false, warnings };
}

function setValue(values: Record<string, string>, name: string, value: string): void {
  Object.defineProperty(values, name, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}
