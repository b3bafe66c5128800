/**
 * `denbd copy [OPTIONS] SOURCE DESTINATION`: copy to, from or between NBD
 * servers, as libnbd's nbdcopy does. SOURCE and DESTINATION are NBD URIs,
 * local files or block devices, or `-` for standard input or output;
 * DESTINATION `null:` throws the data away.
 *
 * @module
 */

import { BUFFER_BYTES, copy, COPY_DEFAULTS } from "../copy/copy.ts";
import { ProgressBar } from "../copy/progress.ts";
import {
  type FlagTable,
  formatFlagHelp,
  parseFlags,
  parseIntegerFlag,
  UsageError,
} from "./flags.ts";
import type { Subcommand } from "./subcommand.ts";
import { NBD_URI_HELP } from "./uri-help.ts";

/** The flags of `denbd copy`, spelled as nbdcopy spells them. */
export const COPY_FLAGS = {
  connections: {
    short: "C",
    value: "N",
    help: "connections to an NBD server that allows several (multi-conn) " +
      `(default ${COPY_DEFAULTS.connections}, or the CPUs if fewer)`,
  },
  requests: {
    short: "R",
    value: "N",
    help: "requests in flight per connection (data requests together hold at most " +
      `${BUFFER_BYTES / 2 ** 20} MiB of buffers)`,
    default: String(COPY_DEFAULTS.requests),
  },
  progress: {
    short: "p",
    help: "show a progress bar on stderr even when it is not a terminal",
  },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** Largest --connections accepted. */
const MAX_CONNECTIONS = 64;
/** Largest --requests accepted. */
const MAX_REQUESTS = 1024;

/** The --help text of `denbd copy`. */
export function copyHelp(): string {
  return [
    "Usage: denbd copy [OPTIONS] SOURCE DESTINATION",
    "Copy to, from or between NBD servers, as nbdcopy does. SOURCE and DESTINATION are each",
    "an NBD URI (below), a local file or block device, or '-' for standard input (SOURCE)",
    "or standard output (DESTINATION). DESTINATION 'null:' reads the source's data and",
    "throws it away (for benchmarking).",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(COPY_FLAGS),
    "",
    "Holes in the source are not read: they become zero requests on an NBD destination and",
    "holes in a file. A destination file is created if missing and truncated to the source's",
    "size; an NBD destination must be at least as large as the source. The destination is",
    "flushed at the end. A pipe ('-' or a FIFO) is copied in order and has no holes; '-'",
    "redirected from or to a regular file is used as that file.",
    "A progress bar is shown on stderr when it is a terminal.",
  ].join("\n");
}

/** Run `denbd copy` with `args`; resolves to the exit code (errors are thrown). */
export async function runCopy(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(COPY_FLAGS, args);
  if (values.help) {
    console.log(copyHelp());
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(`expected SOURCE and DESTINATION, got ${positionals.length} argument(s)`);
  }
  const [source, destination] = positionals;
  const showProgress = Boolean(values.progress) || Deno.stderr.isTerminal();
  const connections = values.connections as string | undefined;
  await copy(source, destination, {
    connections: connections === undefined
      ? undefined
      : parseIntegerFlag(connections, "number of connections", 1, MAX_CONNECTIONS),
    requests: parseIntegerFlag(values.requests as string, "number of requests", 1, MAX_REQUESTS),
    progress: showProgress ? new ProgressBar(Deno.stderr) : undefined,
  });
  return 0;
}

/** `denbd copy`, for the dispatcher. */
export const copyCommand: Subcommand = {
  summary: "copy to, from or between NBD servers (an nbdcopy drop-in)",
  run: runCopy,
  help: copyHelp,
  flags: COPY_FLAGS,
};
