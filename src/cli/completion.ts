/**
 * `denbd completion bash|zsh`: print the shell's completion script, built
 * at run time from the subcommands' flag tables and synopses.
 *
 * @module
 */

import { type FlagTable, formatFlagHelp, parseFlags, UsageError } from "./flags.ts";
import { bashCompletionScript } from "./completion-bash.ts";
import { zshCompletionScript } from "./completion-zsh.ts";
import { type CompletionModel, completionModel } from "./completion-model.ts";
import { writeStdout } from "./stdout.ts";
import type { CommandSuite, Subcommand } from "./subcommand.ts";

/** The flags of `denbd completion`. */
const COMPLETION_FLAGS = {
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The script generator of each shell, by the shell's name. */
const SCRIPTS: Readonly<Record<string, (model: CompletionModel) => string>> = {
  bash: bashCompletionScript,
  zsh: zshCompletionScript,
};

function completionHelp(): string {
  return [
    `Usage: denbd completion ${Object.keys(SCRIPTS).join("|")}`,
    "Print the completion script of a shell: subcommands, flags, the choices of flags",
    "that have them, and files where a flag or argument is a path.",
    "",
    formatFlagHelp(COMPLETION_FLAGS),
    "",
    "bash: source the script (from ~/.bashrc, or install it as",
    "/usr/share/bash-completion/completions/denbd). zsh: write it as _denbd into a",
    "directory of $fpath before compinit runs. Examples:",
    "  source <(denbd completion bash)",
    '  denbd completion zsh > "${fpath[1]}/_denbd"',
  ].join("\n");
}

/** `denbd completion`, completing the commands `suite` gives when it runs. */
export function completionCommand(suite: () => CommandSuite): Subcommand {
  return {
    summary: "print a bash or zsh completion script",
    run: async (args) => {
      const { values, positionals } = parseFlags(COMPLETION_FLAGS, args);
      if (values.help) return (console.log(completionHelp()), 0);
      const shells = Object.keys(SCRIPTS).join(" or ");
      if (positionals.length !== 1) throw new UsageError(`expected one shell: ${shells}`);
      const script = Object.hasOwn(SCRIPTS, positionals[0]) ? SCRIPTS[positionals[0]] : undefined;
      if (!script) throw new UsageError(`unknown shell '${positionals[0]}' (expected ${shells})`);
      await writeStdout(script(completionModel(suite())));
      return 0;
    },
    help: completionHelp,
    flags: COMPLETION_FLAGS,
  };
}
