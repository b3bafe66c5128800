/**
 * What every subcommand of denbd provides to the dispatcher in main.ts.
 *
 * @module
 */

/** A subcommand: what it is for, how to run it, its help text. */
export interface Subcommand {
  /** One line for `denbd --help`. */
  readonly summary: string;
  /** Run with the arguments after the subcommand's name; resolves to the exit code. */
  readonly run: (args: readonly string[]) => Promise<number>;
  /** The text of `denbd NAME --help`. */
  readonly help: () => string;
}
