/**
 * denbd: an NBD toolkit in one program. `denbd serve` exports a disk image
 * as qemu-nbd does; more subcommands (daemon, client tools) follow.
 *
 * @module
 */

import { runServe, serveHelp } from "./src/cli/serve.ts";
import { UsageError } from "./src/cli/flags.ts";
import { messageOf } from "./src/errors.ts";
import { VERSION } from "./src/version.ts";

/** A subcommand: what it is for, how to run it, its help text. */
interface Subcommand {
  readonly summary: string;
  readonly run: (args: readonly string[]) => Promise<number>;
  readonly help: () => string;
}

/** Every subcommand of denbd. */
const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  serve: {
    summary: "export a disk image over NBD (a qemu-nbd drop-in)",
    run: runServe,
    help: serveHelp,
  },
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
    "Run 'denbd COMMAND --help' for the options of a command.",
  ].join("\n");
}

/** Run denbd with command-line `args`; resolves to the process exit code. */
export async function main(args: readonly string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "-h" || name === "--help") {
    console.log(mainHelp());
    return name === undefined ? 1 : 0;
  }
  if (name === "-V" || name === "--version") {
    console.log(`denbd ${VERSION}`);
    return 0;
  }
  const command = SUBCOMMANDS[name];
  if (!command) {
    console.error(`denbd: unknown command '${name}'\nTry 'denbd --help' for more information.`);
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
