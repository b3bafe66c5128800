/**
 * Command-line flags described as a table: one entry per flag gives its
 * spellings, value, choices, default and help. Parsing (via `node:util`
 * parseArgs), validation of choices and the --help text are all derived
 * from that table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags } from "./flags.ts";
 * const table = { port: { short: "p", value: "PORT", help: "port", default: "10809" } };
 * const { values } = parseFlags(table, ["-p", "10810"]);
 * assert.equal(values.port, "10810");
 * ```
 * @module
 */

import { parseArgs } from "node:util";
import { didYouMean } from "./did-you-mean.ts";

/** One flag. Without `value` it is a boolean switch. */
export interface FlagSpec {
  /** One-letter spelling, e.g. "p" for -p. */
  readonly short?: string;
  /** Name of the value in help ("PORT"); absent for switches. */
  readonly value?: string;
  /** What the flag does. */
  readonly help: string;
  /** Accepted values (aliases included); others are a usage error. */
  readonly choices?: readonly string[];
  /**
   * Values a shell completion offers where `choices` does not apply (the
   * command checks the value itself, with its peer's message).
   */
  readonly suggested?: readonly string[];
  /** Value used when the flag is absent. */
  readonly default?: string;
  /** The flag may be given several times; its value is then the list of them, in order. */
  readonly multiple?: boolean;
  /**
   * A peer's flag denbd knows but has not built: using it is refused with
   * "not supported yet" and this advice, instead of "Unknown option".
   */
  readonly notBuilt?: string;
}

/** Flags keyed by their long spelling (without the dashes). */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** Parsed values: strings for flags with values (lists for `multiple` ones), booleans for switches. */
export type FlagValues = Record<string, string | string[] | boolean | undefined>;

/** A mistake on the command line; reported with a hint to see --help. */
export class UsageError extends Error {
  /** Describe what is wrong with the command line. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Parse `args` against `table`; throws {@linkcode UsageError} on any mistake. */
export function parseFlags(
  table: FlagTable,
  args: readonly string[],
): { values: FlagValues; positionals: string[] } {
  const options = Object.fromEntries(
    Object.entries(table).map(([long, spec]) => [
      long,
      {
        type: spec.value ? "string" as const : "boolean" as const,
        ...(spec.short ? { short: spec.short } : {}),
        ...(spec.default !== undefined ? { default: spec.default } : {}),
        ...(spec.multiple ? { multiple: true } : {}),
      },
    ]),
  );
  let parsed;
  try {
    parsed = parseArgs({
      args: attachValues(table, args),
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(withSuggestion(table, simplifyParseError((error as Error).message)));
  }
  for (const [long, spec] of Object.entries(table)) {
    const value = parsed.values[long];
    if (spec.notBuilt && value !== undefined && value !== false) {
      const spelling = spec.short ? `-${spec.short}/--${long}` : `--${long}`;
      throw new UsageError(`${spelling} is not supported yet: ${spec.notBuilt}`);
    }
    if (spec.choices && typeof value === "string" && !spec.choices.includes(value)) {
      throw new UsageError(
        `invalid ${spec.value?.toLowerCase() ?? long} '${value}' for --${long} ` +
          `(expected ${spec.choices.join(", ")})`,
      );
    }
  }
  return { values: parsed.values as FlagValues, positionals: parsed.positionals };
}

/**
 * Rewrite "-e VALUE" and "--shared VALUE" as "--shared=VALUE", so a value
 * that starts with a dash is taken as the value (as getopt does) instead of
 * being mistaken for another flag.
 */
function attachValues(table: FlagTable, args: readonly string[]): string[] {
  const longBySpelling = new Map<string, string>();
  for (const [long, spec] of Object.entries(table)) {
    if (!spec.value) continue;
    longBySpelling.set(`--${long}`, long);
    if (spec.short) longBySpelling.set(`-${spec.short}`, long);
  }
  const result: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const long = longBySpelling.get(args[i]);
    if (args[i] === "--") {
      result.push(...args.slice(i));
      break;
    }
    if (long !== undefined && i + 1 < args.length) result.push(`--${long}=${args[++i]}`);
    else result.push(args[i]);
  }
  return result;
}

/** An unknown long flag's message with the nearest flag of `table`, when one is close. */
function withSuggestion(table: FlagTable, message: string): string {
  const unknown = /^Unknown option '--([^'=]+)'/.exec(message);
  return unknown ? message + didYouMean(unknown[1], Object.keys(table), "--") : message;
}

/** parseArgs' message without its advice about "--", which does not apply here. */
function simplifyParseError(message: string): string {
  return message.replace(/\. To specify a positional argument.*$/s, "");
}

/** Help lines for every flag, aligned, in table order. */
export function formatFlagHelp(table: FlagTable): string {
  const rows = Object.entries(table).map(([long, spec]) => {
    const spelling = (spec.short ? `-${spec.short}, ` : "    ") + `--${long}` +
      (spec.value ? `=${spec.value}` : "");
    const notes = [
      spec.choices ? `one of ${spec.choices.join(", ")}` : "",
      spec.default ? `default '${spec.default}'` : "",
      spec.multiple ? "may be repeated" : "",
      spec.notBuilt ? "not supported yet" : "",
    ].filter(Boolean);
    return [spelling, spec.help + (notes.length ? ` (${notes.join("; ")})` : "")];
  });
  const width = Math.max(...rows.map(([spelling]) => spelling.length)) + 2;
  return rows.map(([spelling, help]) => `  ${spelling.padEnd(width)}${help}`).join("\n");
}

/** Parse a decimal integer flag value within [min, max]; throws UsageError otherwise. */
export function parseIntegerFlag(value: string, what: string, min: number, max: number): number {
  const number = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) {
    throw new UsageError(`invalid ${what} '${value}' (expected an integer from ${min} to ${max})`);
  }
  return number;
}
