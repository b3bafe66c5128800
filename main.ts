/**
 * denbd: an NBD toolkit in one program. `denbd serve` exports a disk image
 * as qemu-nbd does; `list`, `info`, `map`, `dump` and `copy` inspect and
 * move what any NBD server exports, as libnbd's tools do.
 *
 * @module
 */

import { serveCommand } from "./src/cli/serve.ts";
import { daemonCommand } from "./src/cli/daemon.ts";
import { listCommand } from "./src/cli/list.ts";
import { infoCommand } from "./src/cli/info.ts";
import { mapCommand } from "./src/cli/map.ts";
import { dumpCommand } from "./src/cli/dump.ts";
import { copyCommand } from "./src/cli/copy.ts";
import { qmpCommand } from "./src/cli/qmp.ts";
import { topCommand } from "./src/cli/top.ts";
import { completionCommand } from "./src/cli/completion.ts";
import { manCommand } from "./src/cli/man.ts";
import { commandNamed, type CommandSuite, type Subcommand } from "./src/cli/subcommand.ts";
import { type FlagTable, formatFlagHelp, UsageError } from "./src/cli/flags.ts";
import { didYouMean } from "./src/cli/did-you-mean.ts";
import { messageOf } from "./src/errors.ts";
import { VERSION } from "./src/version.ts";

/** Every subcommand of denbd. */
const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  serve: serveCommand,
  daemon: daemonCommand,
  list: listCommand,
  info: infoCommand,
  map: mapCommand,
  dump: dumpCommand,
  copy: copyCommand,
  qmp: qmpCommand,
  top: topCommand,
  completion: completionCommand(() => DENBD),
  man: manCommand(() => DENBD),
};

/** The options of denbd itself, before any command. */
const DENBD_FLAGS = {
  help: { short: "h", help: "show the commands and exit" },
  version: { short: "V", help: "show the version and exit" },
} as const satisfies FlagTable;

/** The pseudo-command printing a command's help. */
const HELP_COMMAND = "help";

/** denbd as a whole, for the completion scripts and man pages. */
export const DENBD: CommandSuite = {
  name: "denbd",
  help: mainHelp,
  flags: DENBD_FLAGS,
  commands: SUBCOMMANDS,
  helpCommand: HELP_COMMAND,
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(SUBCOMMANDS).map((name) => name.length)) + 2;
  return [
    "Usage: denbd COMMAND [OPTIONS] [ARGS]",
    "An NBD server, storage daemon and client toolkit in one program.",
    "",
    "Commands:",
    ...Object.entries(SUBCOMMANDS).map(([name, command]) =>
      `  ${name.padEnd(width)}${command.summary}`
    ),
    "",
    formatFlagHelp(DENBD_FLAGS),
    "",
    "Run 'denbd COMMAND --help' or 'denbd help COMMAND' for the options of a command.",
  ].join("\n");
}

/** The refusal of a command name denbd does not have, with the nearest one it has. */
function unknownCommand(name: string): string {
  return `denbd: unknown command '${name}'${didYouMean(name, Object.keys(SUBCOMMANDS))}\n` +
    "Try 'denbd --help' for more information.";
}

/** Run denbd with command-line `args`; resolves to the process exit code. */
export async function main(args: readonly string[]): Promise<number> {
  const [name, ...rest] = args;
  const spelled = (long: keyof typeof DENBD_FLAGS) =>
    name === `--${long}` || name === `-${DENBD_FLAGS[long].short}`;
  if (name === undefined || spelled("help")) {
    console.log(mainHelp());
    return name === undefined ? 1 : 0;
  }
  if (spelled("version")) {
    console.log(`denbd ${VERSION}`);
    return 0;
  }
  if (name === HELP_COMMAND) {
    if (rest.length === 0) {
      console.log(mainHelp());
      return 0;
    }
    const about = commandNamed(SUBCOMMANDS, rest[0]);
    if (!about) {
      console.error(unknownCommand(rest[0]));
      return 1;
    }
    console.log(about.help());
    return 0;
  }
  const command = commandNamed(SUBCOMMANDS, name);
  if (!command) {
    console.error(unknownCommand(name));
    return 1;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`denbd ${name}: ${error.message}`);
      console.error(`Try 'denbd ${name} --help' for more information.`);
    } else {
      console.error(`denbd ${name}: ${messageOf(error)}`);
    }
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
