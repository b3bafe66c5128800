/**
 * What a shell may complete for denbd, read off the subcommands' flag tables
 * and synopses at run time: the shell script generators (bash, zsh) only
 * spell this model in their shell's language, so a flag added to a table is
 * completed without regenerating anything.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { completionModel } from "./completion-model.ts";
 * const model = completionModel({
 *   name: "denbd",
 *   help: () => "Usage: denbd COMMAND",
 *   flags: {},
 *   helpCommand: "help",
 *   commands: {
 *     serve: {
 *       summary: "serve",
 *       run: () => Promise.resolve(0),
 *       help: () => "Usage: denbd serve [OPTIONS] [FILE]",
 *       flags: { "pid-file": { value: "PATH", help: "write the pid" } },
 *     },
 *   },
 * });
 * assert.deepEqual(model.commands[0].flags[0].value, { kind: "files" });
 * assert.deepEqual(model.commands[0].positionals, [{ name: "FILE", value: { kind: "files" } }]);
 * ```
 * @module
 */

import type { FlagSpec, FlagTable } from "./flags.ts";
import { positionalsOf, readHelp } from "./help-text.ts";
import type { CommandSuite } from "./subcommand.ts";

/** What may be offered for a flag's value or a positional argument. */
export type ValueCompletion =
  | { readonly kind: "none" }
  | { readonly kind: "files" }
  | { readonly kind: "directories" }
  | { readonly kind: "words"; readonly words: readonly string[] };

/** One flag a shell offers. */
export interface FlagCompletion {
  /** Long spelling without the dashes. */
  readonly long: string;
  /** One-letter spelling, if any. */
  readonly short?: string;
  /** Name of its value ("PORT"); absent for a switch. */
  readonly valueName?: string;
  /** What its value may be completed with (`none` for a switch or a free value). */
  readonly value: ValueCompletion;
  /** The flag may be given more than once. */
  readonly multiple: boolean;
  /** The first line of its help, for shells that show descriptions. */
  readonly help: string;
}

/** One positional argument a shell completes. */
export interface PositionalCompletion {
  /** As the synopsis names it ("FILE", "SOCKET|HOST:PORT"). */
  readonly name: string;
  /** What it may be completed with. */
  readonly value: ValueCompletion;
}

/** One subcommand as a shell completes it. */
export interface CommandCompletion {
  /** Its name ("serve"). */
  readonly name: string;
  /** Its one-line summary. */
  readonly summary: string;
  /** Its flags, in table order, without those not built yet. */
  readonly flags: readonly FlagCompletion[];
  /** Its positional arguments in order (from the first form of its synopsis). */
  readonly positionals: readonly PositionalCompletion[];
}

/** Everything a completion script needs. */
export interface CompletionModel {
  /** The program's name ("denbd"). */
  readonly program: string;
  /** The options before any subcommand. */
  readonly flags: readonly FlagCompletion[];
  /** The subcommands, in help order. */
  readonly commands: readonly CommandCompletion[];
  /** The pseudo-command taking a subcommand's name ("help"). */
  readonly helpCommand: string;
}

/** Value names that stand for a path, and what to complete them with. */
const PATH_VALUE_NAMES: Readonly<Record<string, "files" | "directories">> = {
  FILE: "files",
  PATH: "files",
  SOCKET: "files",
  IMAGE: "files",
  SOURCE: "files",
  DESTINATION: "files",
  DIR: "directories",
  DIRECTORY: "directories",
};

/** The positional name that stands for one of the program's own subcommands. */
const SUBCOMMAND_NAME = "SUBCOMMAND";

/** A positional alternative that is a literal word ("bash" in "bash|zsh"). */
const LITERAL_WORD = /^[a-z][a-z0-9-]*$/;

/** The completion model of `suite`. */
export function completionModel(suite: CommandSuite): CompletionModel {
  const commandNames = Object.keys(suite.commands);
  return {
    program: suite.name,
    flags: flagCompletions(suite.flags),
    commands: Object.entries(suite.commands).map(([name, command]) => {
      const [form] = readHelp(command.help()).synopsis;
      return {
        name,
        summary: command.summary,
        flags: flagCompletions(command.flags),
        positionals: (form ? positionalsOf(form, command.flags) : []).map((alternatives) => ({
          name: alternatives.join("|"),
          value: positionalCompletion(alternatives, commandNames),
        })),
      };
    }),
    helpCommand: suite.helpCommand,
  };
}

function flagCompletions(table: FlagTable): FlagCompletion[] {
  return Object.entries(table).filter(([, spec]) => !spec.notBuilt).map(([long, spec]) => ({
    long,
    ...(spec.short ? { short: spec.short } : {}),
    ...(spec.value ? { valueName: spec.value } : {}),
    value: flagValueCompletion(spec),
    multiple: spec.multiple ?? false,
    help: spec.help.split("\n")[0],
  }));
}

function flagValueCompletion(spec: FlagSpec): ValueCompletion {
  if (!spec.value) return { kind: "none" };
  const words = spec.choices ?? spec.suggested;
  if (words) return { kind: "words", words };
  const path = PATH_VALUE_NAMES[spec.value];
  return path ? { kind: path } : { kind: "none" };
}

/** The union of what `alternatives` (one positional's) may be: paths win over words. */
function positionalCompletion(
  alternatives: readonly string[],
  commandNames: readonly string[],
): ValueCompletion {
  const path = alternatives.map((name) => PATH_VALUE_NAMES[name]).find(Boolean);
  if (path) return { kind: path };
  const words = alternatives.flatMap((name) =>
    name === SUBCOMMAND_NAME ? commandNames : LITERAL_WORD.test(name) ? [name] : []
  );
  return words.length ? { kind: "words", words } : { kind: "none" };
}

/** `name` as part of a shell function name ("_denbd", "_denbd_serve"). */
export function shellIdentifier(name: string): string {
  return name.replace(/[^A-Za-z0-9_]/g, "_");
}

/** `text` as one single-quoted word of bash or zsh. */
export function shellWord(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}
