/**
 * `denbd copy [OPTIONS] SOURCE DESTINATION`: copy to, from or between NBD
 * servers, as libnbd's nbdcopy does, with nbdcopy's options. SOURCE and
 * DESTINATION are NBD URIs, local files or block devices, `-` for standard
 * input or output, or `[ CMD ARGS ... ]`, an NBD server run as a
 * subprocess; DESTINATION `null:` throws the data away.
 *
 * @module
 */

import {
  BUFFER_BYTES,
  copy,
  COPY_DEFAULTS,
  type CopyPlan,
  REQUEST_SIZE,
  SPARSE_BLOCK,
} from "../copy/copy.ts";
import type { CopyEnd } from "../copy/endpoints.ts";
import { serverEnds } from "./export-target.ts";
import { ProgressLines } from "../copy/progress-fd.ts";
import { ProgressBar, type ProgressReporter } from "../copy/progress.ts";
import { VERSION } from "../version.ts";
import { type FlagTable, formatFlagHelp, parseFlags, UsageError } from "./flags.ts";
import { humanSize } from "./human-size.ts";
import { scanInt, scanUnsigned } from "./scanf-number.ts";
import type { Subcommand } from "./subcommand.ts";
import { NBD_URI_HELP } from "./uri-help.ts";

/** Smallest and largest --request-size (nbdcopy's bounds; the largest is the NBD limit). */
const REQUEST_SIZE_BOUNDS = { min: 4096, max: 32 * 1024 * 1024 } as const;
/** Smallest --sparse block other than 0. */
const MIN_SPARSE_BLOCK = 512;
/** Largest --connections accepted. */
const MAX_CONNECTIONS = 64;
/** Largest --requests accepted. */
const MAX_REQUESTS = 1024;

/** The flags of `denbd copy`, spelled as nbdcopy spells them. */
export const COPY_FLAGS = {
  allocated: {
    help: "zero ranges are zeroed allocated (no trim) and all-zero blocks are written as " +
      "data (a file made for the copy keeps the source's holes, as with nbdcopy)",
  },
  connections: {
    short: "C",
    value: "N",
    help: "connections to an NBD server that allows several (multi-conn) " +
      `(default ${COPY_DEFAULTS.connections}, or the CPUs if fewer)`,
  },
  "destination-is-zero": {
    help: "the destination already reads as zeroes: skip zeroing it",
  },
  "target-is-zero": { help: "the same as --destination-is-zero (qemu-img's name)" },
  flush: { help: "flush the destination to persistent storage before exiting" },
  "no-extents": { help: "do not ask the source where its holes are: read all of it" },
  progress: {
    short: "p",
    help: "show a progress bar on stderr even when it is not a terminal; --progress=FD " +
      "instead writes lines 'N/100' to descriptor FD",
  },
  "queue-size": {
    value: "N",
    help: "bytes of data requests in flight per connection " +
      `(default ${BUFFER_BYTES / 2 ** 20} MiB in all)`,
  },
  "request-size": {
    value: "N",
    help: `bytes per request, a power of 2 from ${REQUEST_SIZE_BOUNDS.min} to ` +
      `${REQUEST_SIZE_BOUNDS.max} (default ${REQUEST_SIZE})`,
  },
  requests: {
    short: "R",
    value: "N",
    help: "requests in flight per connection",
    default: String(COPY_DEFAULTS.requests),
  },
  sparse: {
    short: "S",
    value: "N",
    help: `all-zero blocks of N bytes (a power of 2, at least ${MIN_SPARSE_BLOCK}) become ` +
      `holes; 0 turns this off (default ${SPARSE_BLOCK})`,
  },
  synchronous: {
    help: "one request at a time, in order, over one connection",
  },
  threads: {
    short: "T",
    value: "N",
    help: "denbd runs on one thread; as in nbdcopy, no more than N connections are used " +
      "(0: the CPUs)",
  },
  verbose: { short: "v", help: "describe both ends and the settings on stderr" },
  "long-options": { help: "list the long options, one a line (for shell completion)" },
  "short-options": { help: "list the short options, one a line (for shell completion)" },
  version: { short: "V", help: "show the version and exit" },
  help: { short: "h", help: "show this help and exit" },
} as const satisfies FlagTable;

/** The --help text of `denbd copy`. */
export function copyHelp(): string {
  return [
    "Usage: denbd copy [OPTIONS] SOURCE DESTINATION",
    "Copy to, from or between NBD servers, as nbdcopy does. SOURCE and DESTINATION are each",
    "an NBD URI or [ CMD ARGS ... ] (below), a local file or block device, or '-' for",
    "standard input (SOURCE) or standard output (DESTINATION). DESTINATION 'null:' reads",
    "the source's data and throws it away (for benchmarking).",
    "",
    ...NBD_URI_HELP,
    "",
    formatFlagHelp(COPY_FLAGS),
    "",
    "Numbers are read as nbdcopy reads them: decimal, anything after the digits ignored.",
    "Holes in the source are not read: they become zero requests on an NBD destination and",
    "holes in a file. A destination file is created if missing and truncated to the source's",
    "size; an NBD destination must be at least as large as the source. A pipe ('-' or a",
    "FIFO) is copied in order and has no holes; '-' redirected from or to a regular file is",
    "used as that file. A progress bar is shown on stderr when it is a terminal.",
  ].join("\n");
}

/** Run `denbd copy` with `args`; resolves to the exit code (errors are thrown). */
export async function runCopy(args: readonly string[]): Promise<number> {
  const { args: rest, progressFd } = takeProgressFd(args);
  const { values, positionals } = parseFlags(COPY_FLAGS, rest);
  if (values.help) {
    console.log(copyHelp());
    return 0;
  }
  if (values.version) {
    console.log(`denbd copy ${VERSION}`);
    return 0;
  }
  if (values["long-options"] || values["short-options"]) {
    console.log(optionList(values["long-options"] ? "long" : "short").join("\n"));
    return 0;
  }
  const [source, destination] = copyEnds(positionals);
  const connections = typeof values.connections === "string"
    ? withinBound(
      unsignedFlag(values.connections, "connections", false),
      "connections",
      MAX_CONNECTIONS,
    )
    : undefined;
  const requests = withinBound(
    unsignedFlag(values.requests as string, "requests", false),
    "requests",
    MAX_REQUESTS,
  );
  await copy(source, destination, {
    connections,
    requests,
    threads: optionalNumber(values.threads, "threads", (value) => value),
    requestSize: optionalNumber(values["request-size"], "request-size", checkRequestSize),
    queueSize: optionalNumber(values["queue-size"], "queue-size", (value) => value),
    sparseBlock: optionalNumber(values.sparse, "sparse", checkSparseBlock),
    allocated: Boolean(values.allocated),
    destinationIsZero: Boolean(values["destination-is-zero"] || values["target-is-zero"]),
    extents: !values["no-extents"],
    flush: Boolean(values.flush),
    synchronous: Boolean(values.synchronous),
    progress: progressReporter(Boolean(values.progress), progressFd),
    onStart: values.verbose ? describePlan : undefined,
  });
  return 0;
}

/** The options' spellings of one kind, in table order, as nbdcopy's --long-options/--short-options. */
function optionList(kind: "long" | "short"): string[] {
  const listing = new Set(["long-options", "short-options"]);
  return Object.entries(COPY_FLAGS as FlagTable).flatMap(([long, spec]) => {
    if (listing.has(long)) return [];
    if (kind === "long") return [`--${long}`];
    return spec.short ? [`-${spec.short}`] : [];
  });
}

/**
 * Take nbdcopy's `--progress=FD` out of `args` (before any "--"): the flag
 * table's `--progress` is a switch, and only this spelling takes a value.
 */
function takeProgressFd(args: readonly string[]): { args: string[]; progressFd?: number } {
  const end = args.indexOf("--");
  let progressFd: number | undefined;
  const rest = args.map((arg, i) => {
    if ((end !== -1 && i > end) || !arg.startsWith("--progress=")) return arg;
    const text = arg.slice("--progress=".length);
    const fd = scanInt(text);
    if (fd === undefined || fd < 0) throw couldNotParse("progress", text);
    progressFd = fd;
    return "--progress";
  });
  return { args: rest, progressFd };
}

/** SOURCE and DESTINATION from the positional arguments: each one word or `[ CMD ARGS ... ]`. */
export function copyEnds(positionals: readonly string[]): [CopyEnd, CopyEnd] {
  const ends = serverEnds(positionals);
  if (ends.length !== 2) {
    throw new UsageError(`expected SOURCE and DESTINATION, got ${ends.length} argument(s)`);
  }
  return [ends[0], ends[1]];
}

/** nbdcopy's message for a value it cannot read. */
function couldNotParse(flag: string, value: string): UsageError {
  return new UsageError(`--${flag}: could not parse: ${value}`);
}

/** An unsigned flag value read as nbdcopy reads it ("%u"); 0 refused unless `zeroAllowed`. */
function unsignedFlag(value: string, flag: string, zeroAllowed: boolean): number {
  const number = scanUnsigned(value);
  if (number === undefined || (number === 0 && !zeroAllowed)) throw couldNotParse(flag, value);
  return number;
}

/** The flag's value read and checked by `check`, or undefined when it was not given. */
function optionalNumber(
  value: string | string[] | boolean | undefined,
  flag: string,
  check: (value: number) => number,
): number | undefined {
  return typeof value === "string" ? check(unsignedFlag(value, flag, true)) : undefined;
}

/** `value` when at most `max` (denbd's bound on what it holds in memory). */
function withinBound(value: number, flag: string, max: number): number {
  if (value > max) throw new UsageError(`--${flag}: at most ${max}, not ${value}`);
  return value;
}

function isPowerOf2(value: number): boolean {
  return value > 0 && (value & (value - 1)) === 0;
}

/** A --request-size within nbdcopy's bounds. */
function checkRequestSize(value: number): number {
  const { min, max } = REQUEST_SIZE_BOUNDS;
  if (value < min || value > max || !isPowerOf2(value)) {
    throw new UsageError(`--request-size: must be a power of 2 within ${min}-${max}`);
  }
  return value;
}

/** A --sparse block size: 0, or a power of 2 of at least 512. */
function checkSparseBlock(value: number): number {
  if (value !== 0 && (value < MIN_SPARSE_BLOCK || !isPowerOf2(value))) {
    throw new UsageError(`--sparse: must be a power of 2 and >= ${MIN_SPARSE_BLOCK}`);
  }
  return value;
}

/**
 * Lines on descriptor `fd` with --progress=FD, a bar with -p or when stderr
 * is a terminal, nothing otherwise. The descriptor is reached through
 * /proc/self/fd, opened to append (so `3>>log` adds to the log, as writes to
 * the descriptor itself would); one that cannot be opened gets nothing, as
 * nbdcopy ignores its failed writes.
 */
function progressReporter(
  asked: boolean,
  fd: number | undefined,
): ProgressReporter | undefined {
  if (fd !== undefined) {
    try {
      return new ProgressLines(Deno.openSync(`/proc/self/fd/${fd}`, { append: true }));
    } catch {
      return undefined;
    }
  }
  return asked || Deno.stderr.isTerminal() ? new ProgressBar(Deno.stderr) : undefined;
}

/** --verbose: both ends and the settings, as nbdcopy -v prints them. */
function describePlan(plan: CopyPlan): void {
  const end = (prefix: string, endpoint: CopyPlan["source"]) => {
    const size = endpoint.size ?? -1;
    return [
      `denbd copy: ${prefix}: ${endpoint.kind} "${endpoint.name}"`,
      `denbd copy: ${prefix}: size=${size} (${size < 0 ? size : humanSize(size).text})`,
    ];
  };
  console.error(
    [
      ...end("src", plan.source),
      ...end("dst", plan.destination),
      `denbd copy: connections=${plan.connections} requests=${plan.requests} threads=1 ` +
      `synchronous=${plan.synchronous} request-size=${plan.requestSize}`,
    ].join("\n"),
  );
}

/** `denbd copy`, for the dispatcher. */
export const copyCommand: Subcommand = {
  summary: "copy to, from or between NBD servers (an nbdcopy drop-in)",
  run: runCopy,
  help: copyHelp,
  flags: COPY_FLAGS,
};
