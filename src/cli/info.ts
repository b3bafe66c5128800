/**
 * `denbd info URI`: describe one export as `nbdinfo URI` does, in its text
 * or JSON layout, with what file(1) says of its first bytes unless
 * --no-content; or answer one question about it as `nbdinfo --size` and
 * `nbdinfo --can/--is` do (exit status 0 yes, 2 no).
 *
 * @module
 */

import { DenbdError, kindOf } from "../errors.ts";
import { NbdClient } from "../nbd/client/client.ts";
import { BASE_ALLOCATION, NBD_FLAG } from "../nbd/protocol.ts";
import { failureMessage, libnbdFlags, probeServer } from "./export-probe.ts";
import {
  EXPORT_BOOLEANS,
  formatReportJson,
  formatReportText,
  withoutUris,
} from "./export-report.ts";
import {
  type FlagTable,
  type FlagValues,
  formatFlagHelp,
  parseFlags,
  UsageError,
} from "./flags.ts";
import { withServerUri } from "./export-target.ts";
import type { ActivatedServer } from "../nbd/client/subprocess.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { NBD_URI_HELP } from "./uri-help.ts";
import { listCommand } from "./list.ts";
import { mapCommand } from "./map.ts";

/** What a --can/--is question is answered from. */
interface Capabilities {
  /** Transmission flags as libnbd reports them. */
  readonly flags: number;
  /** Structured replies were negotiated. */
  readonly structured: boolean;
  /** TLS was negotiated. */
  readonly tls: boolean;
}

/** The words of a field name joined as nbdinfo accepts them: "fast_zero", "fast-zero", "fastzero". */
function spellings(field: string): string[] {
  const words = field.replace(/^(can|is)_/, "").split("_");
  return [...new Set(["_", "-", ""].map((joiner) => words.join(joiner)))];
}

/** Every question --can and --is answer (case-insensitively), as nbdinfo names them. */
const QUESTIONS: readonly { names: readonly string[]; answer: (c: Capabilities) => boolean }[] = [
  { names: ["connect", "read"], answer: () => true },
  { names: ["tls"], answer: (c) => c.tls },
  {
    names: [
      "sr",
      "structured",
      ...["reply", "replies"].flatMap((noun) =>
        [" ", "-", "_"].map((joiner) => `structured${joiner}${noun}`)
      ),
    ],
    answer: (c) => c.structured,
  },
  { names: ["write"], answer: (c) => (c.flags & NBD_FLAG.READ_ONLY) === 0 },
  ...EXPORT_BOOLEANS.map(({ field, flag }) => ({
    names: spellings(field),
    answer: (c: Capabilities) => (c.flags & flag) !== 0,
  })),
];

/** The flags of `denbd info`. */
const INFO_FLAGS = {
  json: { help: "print the description as JSON (as nbdinfo --json)" },
  size: { help: "print only the size of the export in bytes" },
  can: {
    value: "WHAT",
    help: "exit 0 if the export can WHAT, 2 if not (e.g. connect, write, trim, zero, flush, " +
      "fua, cache, df, fast-zero, multi-conn, structured-reply, tls)",
  },
  is: { value: "WHAT", help: "exit 0 if the export is WHAT, 2 if not (read-only, rotational)" },
  map: {
    value: "CONTEXT",
    help: `print the extent map of CONTEXT (bare --map: ${BASE_ALLOCATION}), as 'denbd map'`,
  },
  totals: { help: "with --map: print the bytes and share of each type instead" },
  list: { short: "L", help: "list the server's exports, as 'denbd list'" },
  content: {
    help: "describe the first 8 KiB with file(1) " +
      "(the default, except with --list; never with --size, --can, --is or --map)",
  },
  "no-content": { help: "do not read the export to describe its content" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** nbdinfo's --map takes its context only attached (`--map=CONTEXT`); bare, it maps base:allocation. */
function withMapContext(args: readonly string[]): string[] {
  const end = args.indexOf("--");
  return args.map((arg, i) =>
    arg === "--map" && (end < 0 || i < end) ? `--map=${BASE_ALLOCATION}` : arg
  );
}

/** The --help text of `denbd info`. */
function infoHelp(): string {
  return [
    "Usage: denbd info [--json] [--no-content] URI",
    "       denbd info --size URI",
    "       denbd info --can WHAT | --is WHAT URI",
    "       denbd info --map[=CONTEXT] [--totals] [--json] URI",
    "       denbd info -L|--list [--content] [--json] URI",
    "Describe the export URI names, as 'nbdinfo URI' does: protocol, size, content (what",
    "file(1) says of its first 8 KiB), metadata contexts, capabilities and block sizes.",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(INFO_FLAGS),
    "",
    "Exit status: 0 on success (--can/--is: yes), 2 for --can/--is: no, 1 on errors.",
  ].join("\n");
}

/** Run `denbd info` with `args`; resolves to the exit code. */
async function runInfo(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(INFO_FLAGS, withMapContext(args));
  if (values.help) {
    console.log(infoHelp());
    return 0;
  }
  const mapping = values.map !== undefined;
  if (values.totals && !mapping) {
    throw new UsageError("you must use --totals only with --map option (as nbdinfo)");
  }
  if ([values.size, values.can, values.is, mapping, values.list].filter(Boolean).length > 1) {
    throw new UsageError("--size, --can, --is, --map and --list cannot be used together");
  }
  if (values.content && values["no-content"]) {
    throw new UsageError("you cannot use --content and --no-content together (as nbdinfo)");
  }
  const json = values.json ? ["--json"] : [];
  if (values.list) {
    const content = values.content ? ["--content"] : [];
    return await listCommand.run([...json, ...content, "--", ...positionals]);
  }
  if (mapping) {
    const context = (values.map as string | undefined) ?? BASE_ALLOCATION;
    const totals = values.totals ? ["--totals"] : [];
    return await mapCommand.run(["--context", context, ...totals, ...json, "--", ...positionals]);
  }
  return await withServerUri(positionals, (uri, server) => describe(uri, server, values));
}

/**
 * What `denbd info` prints of the server at `uri` (run for the tool when
 * `server` is set), as `values` ask; resolves to the exit code.
 */
async function describe(
  uri: string,
  server: ActivatedServer | null,
  values: FlagValues,
): Promise<number> {
  const question = (values.can ?? values.is) as string | undefined;
  if (question !== undefined) return await answer(uri, question);
  if (values.size) {
    const client = await NbdClient.connect(uri);
    await client.disconnect();
    await writeStdout(`${client.size}\n`);
    return 0;
  }
  const content = !values["no-content"];
  const { report, failures } = await probeServer(uri, { all: false, content });
  if (failures.length) {
    const [failure] = failures;
    throw new DenbdError(
      kindOf(failure.error),
      `${failureMessage(failure)}; to list the server's exports, use 'denbd list'`,
    );
  }
  const shown = server ? withoutUris(report) : report;
  await writeStdout(values.json ? formatReportJson(shown) : formatReportText(shown));
  return 0;
}

/** Exit 0 if the export has capability `question`, 2 if not. */
async function answer(uri: string, question: string): Promise<number> {
  const wanted = question.toLowerCase();
  const entry = QUESTIONS.find(({ names }) => names.includes(wanted));
  if (!entry) throw new UsageError(`unknown --can or --is question '${question}'`);
  const client = await NbdClient.connect(uri);
  await client.disconnect();
  const { structuredReplies: structured, tls } = client;
  return entry.answer({ flags: libnbdFlags(client.flags, structured), structured, tls }) ? 0 : 2;
}

/** `denbd info`, for the dispatcher. */
export const infoCommand: Subcommand = {
  summary: "describe an NBD export (like nbdinfo)",
  run: runInfo,
  help: infoHelp,
  flags: INFO_FLAGS,
};
