/**
 * `denbd list URI`: list the server's exports and describe each, as
 * `nbdinfo --list URI` does, in its text or JSON layout. An export the
 * server lists but will not describe is reported on stderr, the others are
 * still shown, and the exit status is 1.
 *
 * @module
 */

import { failureMessage, probeServer } from "./export-probe.ts";
import { formatReportJson, formatReportText, withoutUris } from "./export-report.ts";
import { type FlagTable, formatFlagHelp, parseFlags } from "./flags.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { withServerUri } from "./export-target.ts";
import { NBD_URI_HELP } from "./uri-help.ts";

/** The flags of `denbd list`. */
const LIST_FLAGS = {
  json: { help: "print the list as JSON (as nbdinfo --list --json)" },
  content: { help: "describe each export's first 8 KiB with file(1) (as nbdinfo --content)" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The --help text of `denbd list`. */
function listHelp(): string {
  return [
    "Usage: denbd list [--json] [--content] URI",
    "List the exports of the server URI names and describe each, as 'nbdinfo --list URI'",
    "does. The export name in URI is ignored. Sizes are what the server answers to",
    "NBD_OPT_INFO (nbd-server, for one, answers 0).",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(LIST_FLAGS),
  ].join("\n");
}

/** Run `denbd list` with `args`; resolves to the exit code. */
async function runList(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(LIST_FLAGS, args);
  if (values.help) {
    console.log(listHelp());
    return 0;
  }
  const { report, failures } = await withServerUri(positionals, async (uri, server) => {
    const probed = await probeServer(uri, { all: true, content: values.content === true });
    return server ? { ...probed, report: withoutUris(probed.report) } : probed;
  });
  await writeStdout(values.json ? formatReportJson(report) : formatReportText(report));
  for (const failure of failures) console.error(`denbd list: ${failureMessage(failure)}`);
  return failures.length ? 1 : 0;
}

/** `denbd list`, for the dispatcher. */
export const listCommand: Subcommand = {
  summary: "list a server's exports and describe each (like nbdinfo --list)",
  run: runList,
  help: listHelp,
  flags: LIST_FLAGS,
};
