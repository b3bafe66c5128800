/**
 * `denbd map URI`: the extent map of an export for one metadata context
 * (base:allocation unless --context says otherwise), as `nbdinfo --map`
 * prints it, with --totals and --json as nbdinfo has them.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { NbdClient } from "../nbd/client/client.ts";
import { BASE_ALLOCATION } from "../nbd/protocol.ts";
import {
  ExtentRuns,
  formatMapJson,
  formatMapText,
  formatTotalsJson,
  formatTotalsText,
  totalsOf,
} from "./extent-map.ts";
import { walkExtents } from "./extent-walk.ts";
import { type FlagTable, formatFlagHelp, parseFlags } from "./flags.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { withServerUri } from "./export-target.ts";
import { NBD_URI_HELP } from "./uri-help.ts";

/** The flags of `denbd map`. */
const MAP_FLAGS = {
  context: {
    value: "NAME",
    help: "metadata context to map, e.g. qemu:allocation-depth or qemu:dirty-bitmap:NAME",
    default: BASE_ALLOCATION,
  },
  totals: { help: "print the bytes and share of the export of each type instead" },
  json: { help: "print JSON (as nbdinfo --map --json)" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The --help text of `denbd map`. */
function mapHelp(): string {
  return [
    "Usage: denbd map [--context NAME] [--totals] [--json] URI",
    "Print the extent map of the export URI names, as 'nbdinfo --map[=NAME] URI' does:",
    "offset, length, type and its description, adjacent extents of one type merged.",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(MAP_FLAGS),
  ].join("\n");
}

/** Run `denbd map` with `args`; resolves to the exit code. */
async function runMap(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(MAP_FLAGS, args);
  if (values.help) {
    console.log(mapHelp());
    return 0;
  }
  const context = values.context as string;
  const { runs, size } = await withServerUri(positionals, (uri) => mapExport(uri, context));
  let output: string;
  if (values.totals) {
    const totals = totalsOf(runs.runs, size);
    output = values.json ? formatTotalsJson(context, totals) : formatTotalsText(context, totals);
  } else {
    output = values.json ? formatMapJson(context, runs.runs) : formatMapText(context, runs.runs);
  }
  await writeStdout(output);
  return 0;
}

/** The extents of `context` over the whole export, and the export's size. */
async function mapExport(
  uri: string,
  context: string,
): Promise<{ runs: ExtentRuns; size: number }> {
  const client = await NbdClient.connect(uri, { metaContexts: [context] });
  try {
    if (!client.contexts.includes(context)) {
      throw new DenbdError(
        "not-supported",
        `server does not support metadata context "${context}"`,
      );
    }
    const runs = new ExtentRuns();
    for await (const { length, flags } of walkExtents(client, context, client.size)) {
      runs.add(length, flags);
    }
    return { runs, size: client.size };
  } finally {
    await client.disconnect();
  }
}

/** `denbd map`, for the dispatcher. */
export const mapCommand: Subcommand = {
  summary: "print the extent map of an NBD export (like nbdinfo --map)",
  run: runMap,
  help: mapHelp,
  flags: MAP_FLAGS,
};
