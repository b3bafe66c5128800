/**
 * What every subcommand of denbd provides to the dispatcher in main.ts, and
 * the program as a whole as the completion and man page generators see it.
 *
 * @module
 */

import type { FlagTable } from "./flags.ts";

/** A subcommand: what it is for, how to run it, its help text and its flags. */
export interface Subcommand {
  /** One line for `denbd --help`. */
  readonly summary: string;
  /** Run with the arguments after the subcommand's name; resolves to the exit code. */
  readonly run: (args: readonly string[]) => Promise<number>;
  /**
   * The text of `denbd NAME --help`: "Usage: denbd NAME ..." lines (the synopsis the
   * completion reads its positionals from), the description, the flag lines, notes.
   */
  readonly help: () => string;
  /** The flags it takes: completion and man pages are generated from them. */
  readonly flags: FlagTable;
}

/** The whole program: its own options and its subcommands, for the generators. */
export interface CommandSuite {
  /** The program's name, "denbd". */
  readonly name: string;
  /** The text of `denbd --help`: usage, description, the command list. */
  readonly help: () => string;
  /** The options taken before any subcommand (--help, --version). */
  readonly flags: FlagTable;
  /** Every subcommand by name, in help order. */
  readonly commands: Readonly<Record<string, Subcommand>>;
  /** The pseudo-command printing a subcommand's help (`denbd help serve`). */
  readonly helpCommand: string;
}

/**
 * The subcommand called `name` among `commands`, if it is one of them (an
 * own key: not a member every object has, such as "constructor").
 */
export function commandNamed(
  commands: Readonly<Record<string, Subcommand>>,
  name: string,
): Subcommand | undefined {
  return Object.hasOwn(commands, name) ? commands[name] : undefined;
}
