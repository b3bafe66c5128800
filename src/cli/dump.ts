/**
 * `denbd dump URI`: hex dump an export as nbddump does, byte for byte, from
 * the start (or --offset) up to --length bytes, in nbddump's colours when
 * standard output is a terminal or --color asks for them. Stretches that base:allocation reports as
 * zero are not read, and are dumped without being materialised, so sparse
 * exports of any size dump quickly; everything else is read in bounded
 * chunks.
 *
 * @module
 */

import { NbdClient } from "../nbd/client/client.ts";
import { BASE_ALLOCATION, NBD_STATE } from "../nbd/protocol.ts";
import {
  type FlagTable,
  formatFlagHelp,
  parseFlags,
  parseIntegerFlag,
  UsageError,
} from "./flags.ts";
import { walkExtents } from "./extent-walk.ts";
import { scanUnsignedLong } from "./scanf-number.ts";
import { Hexdump } from "./hexdump.ts";
import { writeStdout } from "./stdout.ts";
import type { Subcommand } from "./subcommand.ts";
import { withServerUri } from "./export-target.ts";
import { NBD_URI_HELP } from "./uri-help.ts";

/** Bytes read (and dumped) per request. */
const READ_CHUNK = 1024 * 1024;
/** Zero extents shorter than this are read with their neighbours rather than skipped. */
const MIN_SKIPPED_ZEROES = READ_CHUNK;

/** The flags of `denbd dump`, spelled as nbddump spells them. */
const DUMP_FLAGS = {
  length: {
    short: "n",
    value: "N",
    help: "dump only N bytes (read as nbddump reads it: a leading decimal number, no suffixes)",
  },
  limit: { value: "N", help: "the same as --length" },
  offset: { value: "N", help: "start at byte N (not in nbddump 1.14; addresses stay absolute)" },
  color: {
    help: "colour the dump with ANSI escapes and Unicode marks " +
      "(the default when standard output is a terminal; of --color and --no-color, the last wins)",
  },
  colors: { help: "the same as --color" },
  colour: { help: "the same as --color" },
  colours: { help: "the same as --color" },
  "no-color": { help: "plain ASCII (the default when standard output is not a terminal)" },
  "no-colors": { help: "the same as --no-color" },
  "no-colour": { help: "the same as --no-color" },
  "no-colours": { help: "the same as --no-color" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/**
 * Whether to colour: as the last of nbddump's spellings of --color and
 * --no-color in `args` says, else whether standard output is a terminal.
 */
function wantsColour(args: readonly string[]): boolean {
  let colour = Deno.stdout.isTerminal();
  for (const arg of args) {
    if (arg === "--") break;
    const spelling = /^--(no-)?colou?rs?$/.exec(arg);
    if (spelling) colour = spelling[1] === undefined;
  }
  return colour;
}

/**
 * The number of bytes -n/--length asks for, read as nbddump 1.14 reads it
 * (`1k` is 1: no size suffixes; `-1` is no limit); Infinity when larger than
 * any export can be.
 */
function lengthLimit(text: string): number {
  const scanned = scanUnsignedLong(text);
  if (scanned === undefined) {
    throw new UsageError(`invalid length '${text}' (expected a number of bytes, as nbddump)`);
  }
  return scanned > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(scanned);
}

/** The signals nbddump ends on with a newline and, in colour, a reset of the terminal's colours. */
const ENDING_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP"];

/** The --help text of `denbd dump`. */
function dumpHelp(): string {
  return [
    "Usage: denbd dump [-n N] [--offset N] [--color|--no-color] URI",
    "Hex dump the content of the export URI names, as 'nbddump URI' does: 16 bytes a line,",
    "repeated lines shown once as '*'. In colour (by default on a terminal) the marks are",
    "Unicode ('\u2502', '\u00b7', '\u2606') as nbddump's.",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(DUMP_FLAGS),
  ].join("\n");
}

/** A stretch of the export that reads as zeroes, or is to be read. */
interface Stretch {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
}

/** Run `denbd dump` with `args`; resolves to the exit code. */
async function runDump(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(DUMP_FLAGS, args);
  if (values.help) {
    console.log(dumpHelp());
    return 0;
  }
  const limitText = (values.length ?? values.limit) as string | undefined;
  const limit = limitText === undefined ? Infinity : lengthLimit(limitText);
  const start = values.offset === undefined
    ? 0
    : parseIntegerFlag(values.offset as string, "offset", 0, Number.MAX_SAFE_INTEGER);
  const colour = wantsColour(args);
  return await withServerUri(
    positionals,
    (uri, server) => dumpExport(uri, { start, limit, colour }, () => server?.stop()),
  );
}

/**
 * Dump the export at `uri` from `start`, at most `limit` bytes; on a signal,
 * `stopServer` runs before the exit.
 */
async function dumpExport(
  uri: string,
  { start, limit, colour }: { start: number; limit: number; colour: boolean },
  stopServer: () => Promise<void> | undefined,
): Promise<number> {
  const client = await NbdClient.connect(uri, { metaContexts: [BASE_ALLOCATION] });
  // As nbddump: a dump cut short by a signal ends its line and restores the
  // colours (after the write under way), and the exit status is 1.
  let writing = Promise.resolve();
  const write = (text: Uint8Array) => writing = writeStdout(text);
  const interrupted = () => {
    writing.finally(() => writeStdout(colour ? "\n\x1b[0m" : "\n")).finally(stopServer)
      .finally(() => Deno.exit(1));
  };
  for (const signal of ENDING_SIGNALS) Deno.addSignalListener(signal, interrupted);
  try {
    if (start > client.size) {
      throw new UsageError(`offset ${start} is beyond the end of the export (${client.size})`);
    }
    const end = start + Math.min(client.size - start, limit);
    const dump = new Hexdump(client.size, { start, colour });
    for await (const { offset, length, zero } of stretches(client, start, end)) {
      if (zero) await write(dump.zeroes(length));
      else {
        for (let done = 0; done < length; done += READ_CHUNK) {
          const bytes = await readAligned(
            client,
            offset + done,
            Math.min(READ_CHUNK, length - done),
          );
          await write(dump.data(bytes));
        }
      }
    }
    await write(dump.end());
  } finally {
    for (const signal of ENDING_SIGNALS) Deno.removeSignalListener(signal, interrupted);
    await client.disconnect();
  }
  return 0;
}

/**
 * Consecutive stretches covering bytes `start` up to `end`: long zero runs
 * from base:allocation when the server has it, and what lies between them.
 */
async function* stretches(client: NbdClient, start: number, end: number): AsyncGenerator<Stretch> {
  if (!client.contexts.includes(BASE_ALLOCATION)) {
    if (end > start) yield { offset: start, length: end - start, zero: false };
    return;
  }
  let pending = null as Stretch | null;
  const extents = walkExtents(client, BASE_ALLOCATION, end, start);
  for await (const { offset, flags, ...extent } of extents) {
    const length = Math.min(extent.length, end - offset);
    const zero = (flags & NBD_STATE.ZERO) !== 0 && length >= MIN_SKIPPED_ZEROES;
    if (pending?.zero === zero) pending = { ...pending, length: pending.length + length };
    else {
      if (pending) yield pending;
      pending = { offset, length, zero };
    }
  }
  if (pending) yield pending;
}

/** Read `length` bytes at `offset`, widening the request to the server's block size. */
async function readAligned(client: NbdClient, offset: number, length: number): Promise<Uint8Array> {
  const block = client.minimumBlock;
  const start = offset - offset % block;
  const end = Math.min(alignUp(offset + length, block), client.size);
  const bytes = await client.read(start, end - start);
  return bytes.subarray(offset - start, offset - start + length);
}

function alignUp(value: number, block: number): number {
  return Math.ceil(value / block) * block;
}

/** `denbd dump`, for the dispatcher. */
export const dumpCommand: Subcommand = {
  summary: "hex dump the content of an NBD export (like nbddump)",
  run: runDump,
  help: dumpHelp,
  flags: DUMP_FLAGS,
};
