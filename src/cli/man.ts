/**
 * `denbd man [SUBCOMMAND]`: print the man page of denbd or of one of its
 * subcommands (troff; `denbd man serve | man -l -` shows it), generated at
 * run time from the help texts and flag tables.
 *
 * @module
 */

import { didYouMean } from "./did-you-mean.ts";
import { type FlagTable, formatFlagHelp, parseFlags, UsageError } from "./flags.ts";
import { commandManPage, programManPage } from "./man-page.ts";
import { writeStdout } from "./stdout.ts";
import { commandNamed, type CommandSuite, type Subcommand } from "./subcommand.ts";
import { VERSION } from "../version.ts";

/** The flags of `denbd man`. */
const MAN_FLAGS = {
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

function manHelp(): string {
  return [
    "Usage: denbd man [SUBCOMMAND]",
    "Print the man page of denbd, or of SUBCOMMAND, as troff source. 'deno task man'",
    "writes them all to dist/man/man1/ for packaging.",
    "",
    formatFlagHelp(MAN_FLAGS),
    "",
    "Examples:",
    "  denbd man serve | man -l -",
  ].join("\n");
}

/** `denbd man`, documenting the commands `suite` gives when it runs. */
export function manCommand(suite: () => CommandSuite): Subcommand {
  return {
    summary: "print the man page of denbd or of a subcommand",
    run: async (args) => {
      const { values, positionals } = parseFlags(MAN_FLAGS, args);
      if (values.help) return (console.log(manHelp()), 0);
      if (positionals.length > 1) throw new UsageError("expected at most one subcommand");
      const program = suite();
      const [name] = positionals;
      if (name === undefined) {
        await writeStdout(programManPage(program, VERSION));
        return 0;
      }
      const command = commandNamed(program.commands, name);
      if (!command) {
        throw new UsageError(
          `unknown subcommand '${name}'${didYouMean(name, Object.keys(program.commands))}`,
        );
      }
      await writeStdout(commandManPage(program.name, VERSION, name, command));
      return 0;
    },
    help: manHelp,
    flags: MAN_FLAGS,
  };
}
