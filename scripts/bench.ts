/**
 * denbd speed benchmark, in two parts that share the command line, the rounds and the report:
 * - fio: denbd vs qemu-nbd vs nbdkit, driven by fio's `nbd` ioengine. Creates a pseudo-random
 *   image (one private copy per server), starts every server on a free loopback port, probes it
 *   once with nbdinfo (a full handshake), runs each workload against each server for several
 *   interleaved rounds, and reports median IOPS, median server CPU time per operation, and the
 *   server's resident memory at rest (after start-up and the probe, before any load) and at its
 *   peak under each workload (the highest over the rounds; VmHWM of the server process, reset
 *   before each fio run). The `-x4` workloads run 4 fio jobs at once, each with its own
 *   connection (fio's `--numjobs=4 --group_reporting`: IOPS summed), against the raw servers only;
 *   each of those must advertise multi-conn (nbdinfo's `can_multi_conn`), or the run stops.
 *   The qcow2 rows serve a fully allocated qcow2 image (`qemu-img convert` of the same data) with
 *   denbd and with qemu-nbd, in the same rounds. The TLS rows serve the raw image over TLS (X.509,
 *   the same server certificate for all) with denbd, qemu-nbd and nbdkit. fio's libnbd 1.14 cannot
 *   be given a certificate directory (it refuses `tls-certificates` in a URI unless the program
 *   allows local files, and as root it reads only /etc/pki/libnbd), so the servers do not ask for
 *   a client certificate (verify-peer=off) and fio's libnbd, left with the system's CAs, does not
 *   check the server's.
 * - copy: `denbd copy` vs nbdcopy moving a sparse image (half data in scattered 1 MiB regions,
 *   half holes) between a local file and qemu-nbd, interleaved the same way; reports the median
 *   throughput (image size per second, the whole command timed) and the ratio denbd/nbdcopy.
 * Targets (issue 12, `scripts/bench-targets.ts`), shown per denbd row with the reference and the
 * ratio: on every fio workload, denbd's IOPS at least 1.0x the best peer of its table (raw:
 * qemu-nbd or nbdkit; qcow2: qemu-nbd-qcow2, plus at least 0.8x denbd on raw; TLS: qemu-nbd-tls or
 * nbdkit-tls) and its CPU per operation at most nbdkit's (nbdkit-tls's over TLS); `denbd copy` at
 * least 1.0x nbdcopy both ways.
 * Charts: each run saves its raw results (`results.json`) and PNG charts of its tables
 * (`scripts/bench-chart.ts`) in a folder of its own, docs/bench/YYYY-MM-DD-HHMM/ unless
 * `--charts DIR` or `--no-charts`; `--markdown` links them.
 * Run with `--help` for options.
 * Exit codes: 0 done, 1 a target failed under `--check`, 2 the harness itself failed, 130 Ctrl-C.
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { dirname, join, relative, resolve } from "node:path";
import { tlsFixtures } from "../tests/interop/tls_fixtures.ts";
import {
  type Check,
  COPY_TARGET,
  describeCheck,
  describeRule,
  fioChecks,
  type Medians,
  passes,
  type TableRule,
  verdict,
} from "./bench-targets.ts";
import { processTree, resetPeakResident, residentMiB, treeCpuSeconds } from "./bench-proc.ts";
import {
  type BenchResults,
  type CopyResult,
  type CopySample,
  type FioResult,
  type FioSample,
  median,
  RESULTS_FORMAT,
  resultsToJson,
} from "./bench-results.ts";
import { writeCharts, type WrittenChart } from "./bench-chart.ts";
import { checkConverter, CONVERTER, CONVERTER_PACKAGE } from "./bench-chart-png.ts";

/**
 * The fio workloads; the read/write side of the fio JSON is derived from `rw`. `jobs` > 1 runs
 * that many fio jobs at once, one connection each, against the raw servers only.
 */
const WORKLOADS = [
  { name: "randread4k", rw: "randread", bs: "4k", iodepth: 16, jobs: 1 },
  { name: "seqread1m", rw: "read", bs: "1M", iodepth: 4, jobs: 1 },
  { name: "randwrite4k", rw: "randwrite", bs: "4k", iodepth: 16, jobs: 1 },
  { name: "seqwrite1m", rw: "write", bs: "1M", iodepth: 4, jobs: 1 },
  { name: "randread4k-x4", rw: "randread", bs: "4k", iodepth: 16, jobs: 4 },
  { name: "randwrite4k-x4", rw: "randwrite", bs: "4k", iodepth: 16, jobs: 4 },
];

/**
 * The servers: command templates ({port}, {file}, {tls}: the X.509 server directory), run by
 * `sh -c exec` in the repo root, the format of the image each serves (its own copy of the same
 * data, raw or a fully allocated qcow2), and the table it is reported in.
 */
const SERVERS: readonly Server[] = [
  {
    name: "denbd",
    cmd: "deno run --allow-all main.ts serve -f raw -b 127.0.0.1 -p {port} -t -e 0 {file}",
    format: "raw",
    table: "raw",
  },
  {
    name: "qemu-nbd",
    cmd: "qemu-nbd -f raw -b 127.0.0.1 -p {port} -t -e 0 --cache=writeback {file}",
    format: "raw",
    table: "raw",
  },
  {
    name: "nbdkit",
    cmd: "nbdkit -f --exit-with-parent -i 127.0.0.1 -p {port} file {file}",
    format: "raw",
    table: "raw",
  },
  {
    name: "denbd-qcow2",
    cmd: "deno run --allow-all main.ts serve -f qcow2 -b 127.0.0.1 -p {port} -t -e 0 {file}",
    format: "qcow2",
    table: "qcow2",
  },
  {
    name: "qemu-nbd-qcow2",
    cmd: "qemu-nbd -f qcow2 -b 127.0.0.1 -p {port} -t -e 0 --cache=writeback {file}",
    format: "qcow2",
    table: "qcow2",
  },
  {
    name: "denbd-tls",
    cmd: "deno run --allow-all main.ts serve -f raw -b 127.0.0.1 -p {port} -t -e 0 " +
      "--object tls-creds-x509,id=tls0,endpoint=server,dir={tls},verify-peer=off " +
      "--tls-creds tls0 {file}",
    format: "raw",
    table: "tls",
  },
  {
    name: "qemu-nbd-tls",
    cmd: "qemu-nbd -f raw -b 127.0.0.1 -p {port} -t -e 0 --cache=writeback " +
      "--object tls-creds-x509,id=tls0,endpoint=server,dir={tls},verify-peer=off " +
      "--tls-creds tls0 {file}",
    format: "raw",
    table: "tls",
  },
  {
    name: "nbdkit-tls",
    cmd: "nbdkit -f --exit-with-parent -i 127.0.0.1 -p {port} --tls=require " +
      "--tls-certificates={tls} file {file}",
    format: "raw",
    table: "tls",
  },
];

/**
 * The copy workloads: which end of the copy is a qemu-nbd export (read-only for a source,
 * a fresh sparse image for a destination) and which a local file (created by the copier).
 */
const COPY_WORKLOADS = [
  { name: "copy-nbd-to-file", from: "nbd", to: "file" },
  { name: "copy-file-to-nbd", from: "file", to: "nbd" },
] as const;

/** The copiers: command templates ({src}, {dst}), run by `sh -c exec` in the repo root. */
const COPIERS = [
  // Both flush the destination at the end, as they do with --flush (neither does without it).
  { name: "denbd", cmd: "deno run --allow-all main.ts copy --flush {src} {dst}" },
  { name: "nbdcopy", cmd: "nbdcopy --flush {src} {dst}" },
];

/** qemu-nbd serving an end of a copy ({port}, {file}, {mode}: -r for a source or nothing). */
const COPY_SERVER: Server = {
  name: "qemu-nbd",
  cmd: "qemu-nbd -f raw -b 127.0.0.1 -p {port} -t -e 0 --cache=writeback {mode} {file}",
  format: "raw",
  table: "raw",
};

/** The result tables of the fio part and what each checks on its denbd row. */
const TABLES = {
  raw: { mine: "denbd", iopsPeers: ["qemu-nbd", "nbdkit"], cpuPeer: "nbdkit" },
  qcow2: {
    mine: "denbd-qcow2",
    iopsPeers: ["qemu-nbd-qcow2"],
    vsOwn: { server: "denbd", min: 0.8 },
  },
  tls: { mine: "denbd-tls", iopsPeers: ["qemu-nbd-tls", "nbdkit-tls"], cpuPeer: "nbdkit-tls" },
} as const satisfies Record<string, TableRule>;
/** Defaults of the command line that the help text shows. */
const DEFAULTS = { size: "1G", runtime: 6, ramp: 1, rounds: 3 };
const STARTUP_MS = 60_000;
const STOP_MS = 5_000;
const FIO_SLACK_MS = 30_000;
const MIB = 1 << 20;
const REPO = fileURLToPath(new URL("..", import.meta.url));

type Workload = typeof WORKLOADS[number];
type CopyWorkload = typeof COPY_WORKLOADS[number];
type Server = { name: string; cmd: string; format: "raw" | "qcow2"; table: TableName };
type TableName = keyof typeof TABLES;
type Options = ReturnType<typeof parseOptions>;
/**
 * A started server: its spec, port, process, a tail of its output for error messages, and what
 * its probe found (resident MiB at rest, whether it advertises multi-conn).
 */
type Running = {
  spec: Server;
  port: number;
  /** The image the server serves. */
  file: string;
  child: Deno.ChildProcess;
  exited: boolean;
  log: string[];
  restMiB?: number;
  multiConn?: boolean;
};

const running: Running[] = [];
const helpers = new Set<Deno.ChildProcess>();
let stopping: Promise<void> | undefined;
let interrupted = false;

const USAGE = `Usage: deno run --allow-all scripts/bench.ts [options]
  --dir DIR            work dir for images (default: .bench/ in the repo)
  --size SIZE          image size, e.g. 64M, 1G (default ${DEFAULTS.size}; multiple of 1M)
  --fresh              recreate the images even if they exist
  --runtime SEC        fio time per run (default ${DEFAULTS.runtime})
  --ramp SEC           fio ramp_time per run (default ${DEFAULTS.ramp})
  --rounds N           rounds of every workload x server (default ${DEFAULTS.rounds})
  --only LIST          servers to run (default ${SERVERS.map((s) => s.name).join(",")})
  --workloads LIST     workloads (default all: ${WORKLOADS.map((w) => w.name).join(",")},
                       ${COPY_WORKLOADS.map((w) => w.name).join(",")});
                       the -x4 ones (4 connections at once) run on the raw servers only
  --denbd-cmd CMD      denbd command template with {port} and {file}
  --denbd-qcow2-cmd CMD
                       denbd-qcow2 command template with {port} and {file}
  --denbd-tls-cmd CMD  denbd-tls command template with {port}, {file} and {tls}
  --markdown FILE      append the results as a Markdown section to FILE (with the charts)
  --charts DIR         write the run's charts (PNG, drawn with ${CONVERTER} from Debian's
                       ${CONVERTER_PACKAGE}) and its raw results (results.json) into
                       DIR/YYYY-MM-DD-HHMM/ (default: docs/bench/ in the repo); redraw them
                       with scripts/bench-chart.ts DIR/YYYY-MM-DD-HHMM/results.json
  --no-charts          write neither charts nor results.json
  --check              exit 1 if a target is missed:
${Object.values(TABLES).map((rule) => `                       ${describeRule(rule)}`).join("\n")}
                       denbd copy MiB/s >= ${COPY_TARGET} x nbdcopy's
  --help               show this help`;

/** The servers whose command the command line can replace (`--NAME-cmd`), for A/B runs. */
const OVERRIDABLE = ["denbd", "denbd-qcow2", "denbd-tls"] as const;
type Overridable = typeof OVERRIDABLE[number];

/** The command template of the server called `name`. */
function serverCmd(name: string): string {
  return SERVERS.find((s) => s.name === name)!.cmd;
}

/** Parses and validates the command line. */
function parseOptions(args: string[]) {
  const { values: v } = parseArgs({
    args,
    options: {
      dir: { type: "string", default: join(REPO, ".bench") },
      size: { type: "string", default: DEFAULTS.size },
      fresh: { type: "boolean", default: false },
      runtime: { type: "string", default: String(DEFAULTS.runtime) },
      ramp: { type: "string", default: String(DEFAULTS.ramp) },
      rounds: { type: "string", default: String(DEFAULTS.rounds) },
      only: { type: "string", default: SERVERS.map((s) => s.name).join(",") },
      workloads: {
        type: "string",
        default: [...WORKLOADS, ...COPY_WORKLOADS].map((w) => w.name).join(","),
      },
      ...Object.fromEntries(
        OVERRIDABLE.map((name) => [`${name}-cmd`, { type: "string", default: serverCmd(name) }]),
      ) as Record<`${Overridable}-cmd`, { type: "string"; default: string }>,
      markdown: { type: "string" },
      charts: { type: "string", default: join(REPO, "docs", "bench") },
      "no-charts": { type: "boolean", default: false },
      check: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const size = parseSize(v.size);
  const num = (name: string, s: string, min: number) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
    return n;
  };
  return {
    dir: resolve(v.dir),
    size,
    fresh: v.fresh,
    runtime: num("runtime", v.runtime, 1),
    ramp: num("ramp", v.ramp, 0),
    rounds: num("rounds", v.rounds, 1),
    servers: pick(SERVERS, v.only, "--only").map((s) =>
      (OVERRIDABLE as readonly string[]).includes(s.name)
        ? { ...s, cmd: v[`${s.name as Overridable}-cmd`] }
        : s
    ),
    workloads: pick(WORKLOADS, v.workloads, "--workloads", COPY_WORKLOADS),
    copyWorkloads: pick(COPY_WORKLOADS, v.workloads, "--workloads", WORKLOADS),
    markdown: v.markdown,
    charts: v["no-charts"] ? undefined : resolve(v.charts),
    check: v.check,
    help: v.help,
  };
}

/** Parses a size like `64M`, `1G` or plain bytes; it must be a positive multiple of 1 MiB. */
function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(text.trim());
  const unit = { "": 1, K: 1 << 10, M: MIB, G: 1 << 30, T: 2 ** 40 };
  const n = m ? Number(m[1]) * unit[m[2].toUpperCase() as keyof typeof unit] : NaN;
  if (!(n > 0) || n % MIB !== 0) throw new Error(`--size ${text}: need a positive multiple of 1M`);
  return n;
}

/**
 * Selects table entries by a comma-separated list of names, keeping table order; names of the
 * `others` table (another part of the benchmark) are allowed and left out.
 */
function pick<T extends { name: string }>(
  table: readonly T[],
  list: string,
  flag: string,
  others: readonly { name: string }[] = [],
): T[] {
  const names = list.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    const known = [...table, ...others].some((t) => t.name === n);
    if (!known) throw new Error(`${flag}: unknown name ${n}`);
  }
  if (names.length === 0) throw new Error(`${flag}: empty list`);
  return table.filter((t) => names.includes(t.name));
}

/** Quotes a string for sh unless it is plainly safe. */
function shQuote(s: string): string {
  return /^[\w.,:/=+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Returns the size of a file, or -1 if it does not exist. */
function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return -1;
  }
}

/** Fills `words` with the xorshift32 sequence that follows `seed` (odd). */
function fillXorshift(words: Uint32Array, seed: number): void {
  let x = seed;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

/** Writes `size` bytes of pseudo-random data (xorshift32, reseeded per 1 MiB block) to `path`. */
async function writeRandomImage(path: string, size: number): Promise<void> {
  const words = new Uint32Array(MIB / 4);
  const seed = crypto.getRandomValues(new Uint32Array(1))[0] | 1;
  const file = await Deno.open(path + ".tmp", { write: true, create: true, truncate: true });
  try {
    for (let block = 0; block < size / MIB; block++) {
      fillXorshift(words, (seed ^ Math.imul(block + 1, 0x9e3779b1)) | 1);
      const bytes = new Uint8Array(words.buffer);
      for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
    }
  } finally {
    file.close();
  }
  await Deno.rename(path + ".tmp", path);
}

/**
 * Writes a sparse image of `size` bytes to `path`: each 1 MiB block is, with even odds,
 * pseudo-random data (as {@linkcode writeRandomImage} writes it) or a hole.
 */
async function writeSparseImage(path: string, size: number): Promise<void> {
  const words = new Uint32Array(MIB / 4);
  const file = await Deno.open(path + ".tmp", { write: true, create: true, truncate: true });
  try {
    await file.truncate(size);
    let pick = 0x2545f491;
    for (let block = 0; block < size / MIB; block++) {
      pick = (Math.imul(pick, 1103515245) + 12345) >>> 0;
      if (pick >>> 31) continue; // a hole
      fillXorshift(words, Math.imul(block + 1, 0x9e3779b1) | 1);
      const bytes = new Uint8Array(words.buffer);
      await file.seek(block * MIB, Deno.SeekMode.Start);
      for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
    }
  } finally {
    file.close();
  }
  await Deno.rename(path + ".tmp", path);
}

/** Ensures the sparse image of the copy workloads exists (reused when right-sized). */
async function prepareSparseImage(o: Options): Promise<string> {
  await Deno.mkdir(o.dir, { recursive: true });
  const path = join(o.dir, `sparse-${o.size / MIB}M.img`);
  if (o.fresh || fileSize(path) !== o.size) {
    console.log(`creating ${path} (${o.size / MIB} MiB, half data in 1 MiB regions, half holes)`);
    await writeSparseImage(path, o.size);
  }
  return path;
}

/**
 * Ensures one image per server exists, returning name -> path. Raw images are reused when
 * right-sized; qcow2 images are fresh copies of a fully allocated qcow2 (`qemu-img convert` of
 * the raw base, remade with it). Everything is synced to disk before measuring.
 */
async function prepareImages(o: Options): Promise<Map<string, string>> {
  await Deno.mkdir(o.dir, { recursive: true });
  const base = join(o.dir, `base-${o.size / MIB}M.img`);
  const qcow2Base = join(o.dir, `base-${o.size / MIB}M.qcow2`);
  const images = new Map(
    o.servers.map((s) => [s.name, join(o.dir, `${s.name}-${o.size / MIB}M.${s.format}`)]),
  );
  const raw = o.servers.filter((s) => s.format === "raw").map((s) => images.get(s.name)!);
  const qcow2 = o.servers.filter((s) => s.format === "qcow2").map((s) => images.get(s.name)!);
  const stale = raw.filter((p) => o.fresh || fileSize(p) !== o.size);
  const needBase = stale.length > 0 || (qcow2.length > 0 && fileSize(qcow2Base) < 0);
  if (needBase && (o.fresh || fileSize(base) !== o.size)) {
    console.log(`creating ${base} (${o.size / MIB} MiB pseudo-random)`);
    await writeRandomImage(base, o.size);
    await Deno.remove(qcow2Base).catch(() => {});
  }
  for (const path of stale) {
    console.log(`copying to ${path}`);
    await run(["cp", "--reflink=never", base, path], 600_000);
  }
  if (qcow2.length > 0 && fileSize(qcow2Base) < 0) {
    console.log(`converting to ${qcow2Base} (fully allocated qcow2)`);
    await run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", base, qcow2Base], 600_000);
  }
  for (const path of qcow2) {
    console.log(`copying to ${path}`);
    await run(["cp", "--reflink=never", qcow2Base, path], 600_000);
  }
  await run(["sync"], 600_000);
  return images;
}

/** Runs a command to completion (killed after `limitMs`), returning stdout; throws on failure. */
async function run(argv: string[], limitMs = 60_000): Promise<string> {
  const opts = { args: argv.slice(1), cwd: REPO, stdout: "piped", stderr: "piped" } as const;
  const child = new Deno.Command(argv[0], opts).spawn();
  helpers.add(child);
  const kill = () => processTree(child.pid).forEach((pid) => signal(pid, "SIGKILL"));
  const timer = setTimeout(kill, limitMs);
  const out = await child.output().finally(() => (helpers.delete(child), clearTimeout(timer)));
  const dec = new TextDecoder();
  if (!out.success) {
    const why = out.signal === "SIGKILL" ? `killed after ${limitMs} ms` : `exit ${out.code}`;
    throw new Error(`${argv.join(" ")} failed (${why}): ${dec.decode(out.stderr).trim()}`);
  }
  return dec.decode(out.stdout);
}

/** Returns the first line of a command's output, or a note that it failed. */
async function firstLine(cmd: string): Promise<string> {
  try {
    return (await run(["sh", "-c", cmd + " 2>&1"])).split("\n")[0].trim();
  } catch {
    return `(${cmd} failed)`;
  }
}

/** Picks `n` distinct free loopback ports by binding port 0 (all held open until picked). */
function freePorts(n: number): number[] {
  const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const listeners = Array.from({ length: n }, listen);
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  listeners.forEach((l) => l.close());
  return ports;
}

/** Reads a process stream into a short tail buffer (so pipes never fill up). */
async function drain(stream: ReadableStream<Uint8Array>, log: string[]): Promise<void> {
  const dec = new TextDecoder();
  for await (const chunk of stream) {
    log.push(dec.decode(chunk, { stream: true }));
    while (log.length > 20) log.shift();
  }
}

/** Starts one server and waits (bounded) until it accepts a TCP connection. */
async function startServer(
  spec: Server,
  port: number,
  file: string,
  mode = "",
  tlsDir?: string,
): Promise<Running> {
  const cmd = spec.cmd.replaceAll("{port}", String(port)).replaceAll("{file}", shQuote(file))
    .replaceAll("{mode}", mode).replaceAll("{tls}", tlsDir ? shQuote(tlsDir) : "");
  console.log(`starting ${spec.name}: ${cmd}`);
  const child = new Deno.Command("sh", {
    args: ["-c", "exec " + cmd],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const r: Running = { spec, port, file, child, exited: false, log: [] };
  running.push(r);
  drain(child.stdout, r.log).catch(() => {});
  drain(child.stderr, r.log).catch(() => {});
  child.status.then(() => r.exited = true);
  const deadline = Date.now() + STARTUP_MS;
  while (Date.now() < deadline && !r.exited) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return r;
    } catch {
      await new Promise((res) => setTimeout(res, 100));
    }
  }
  throw new Error(`${spec.name} did not start on port ${port}: ${r.log.join("").trim()}`);
}

/** The NBD URI of a started fio server (`nbds` for the TLS table). */
function serverUri(r: Running): string {
  return `${r.spec.table === "tls" ? "nbds" : "nbd"}://127.0.0.1:${r.port}/`;
}

/**
 * Probes a started fio server once with `nbdinfo --json` (a full handshake, as a client makes
 * before any load) and records what it found: whether the export advertises multi-conn, and the
 * server's resident memory right after (at rest).
 */
async function probeServer(r: Running): Promise<void> {
  const info = JSON.parse(await run(["nbdinfo", "--json", serverUri(r)]));
  r.multiConn = info.exports?.[0]?.can_multi_conn === true;
  r.restMiB = residentMiB(r.child.pid, "VmRSS");
}

/** Throws unless every server a multi-connection workload runs on advertises multi-conn. */
function checkMultiConn(o: Options, started: readonly Running[]): void {
  for (const w of o.workloads.filter((w) => w.jobs > 1)) {
    const lacking = started.filter((r) => runsOn(w, r.spec) && !r.multiConn);
    if (lacking.length === 0) continue;
    const names = lacking.map((r) => r.spec.name).join(", ");
    throw new Error(`${w.name} needs multi-conn, which ${names} does not advertise`);
  }
}

/** Whether a workload runs against a server: one-job workloads on all, the others on raw ones. */
function runsOn(w: Workload, s: Server): boolean {
  return w.jobs === 1 || s.table === "raw";
}

/**
 * Runs one fio workload against one server and measures IOPS (summed over its jobs), server CPU
 * per op and the server's peak resident memory during the run (its VmHWM, reset just before).
 */
async function measure(
  w: Workload,
  r: Running,
  o: Options,
  hz: number,
): Promise<FioSample> {
  if (r.exited) throw new Error(`${r.spec.name} exited: ${r.log.join("").trim()}`);
  const side = w.rw.endsWith("read") ? "read" : "write";
  await warmPageCache(r.file);
  resetPeakResident(r.child.pid);
  const cpu0 = treeCpuSeconds(r.child.pid, hz);
  const out = await run(
    `fio --name=${w.name} --ioengine=nbd --uri=${serverUri(r)} --rw=${w.rw} --bs=${w.bs}
     --iodepth=${w.iodepth} --numjobs=${w.jobs} --group_reporting --size=${o.size} --time_based
     --runtime=${o.runtime} --ramp_time=${o.ramp} --output-format=json`.split(/\s+/),
    (o.runtime + o.ramp) * 1000 + FIO_SLACK_MS,
  );
  const cpu1 = treeCpuSeconds(r.child.pid, hz);
  const peakMiB = residentMiB(r.child.pid, "VmHWM");
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0][side];
  // The CPU delta also covers the ramp, whose ops fio does not count: estimate them from IOPS.
  const ops = job.total_ios + job.iops * o.ramp;
  if (!(ops > 0)) throw new Error(`fio reported no ${side} ops for ${w.name}`);
  return { iops: job.iops, cpuUs: (cpu1 - cpu0) * 1e6 / ops, peakMiB };
}

/**
 * Reads `file` through, so that every server starts a run with its whole image in the page
 * cache: this machine's kernel reclaims cold page-cache pages on its own (DAMON), and a
 * random-read run over a half-evicted image measures the disk instead of the server.
 */
async function warmPageCache(file: string): Promise<void> {
  await run(["dd", `if=${file}`, "of=/dev/null", "bs=4M", "status=none"], 120_000);
}

/** Stops one started server: SIGTERM to its tree, SIGKILL after a bound. */
async function stopServer(r: Running): Promise<void> {
  if (r.exited) return;
  const tree = processTree(r.child.pid);
  tree.forEach((pid) => signal(pid, "SIGTERM"));
  const timer = new Promise((res) => setTimeout(res, STOP_MS, "timeout"));
  if (await Promise.race([r.child.status, timer]) === "timeout") {
    console.error(`${r.spec.name} ignored SIGTERM; sending SIGKILL`);
    tree.forEach((pid) => signal(pid, "SIGKILL"));
    await r.child.status;
  }
}

/** Stops every started server and fio or copy run. */
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    for (const c of helpers) processTree(c.pid).forEach((pid) => signal(pid, "SIGKILL"));
    await Promise.all(running.map(stopServer));
  })();
  return stopping;
}

/** Sends a signal, ignoring processes that are already gone. */
function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* already exited */ }
}

/** Formats a number with thousands separators and `digits` decimals. */
function fmt(x: number, digits = 0): string {
  return x.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/** The checks of a denbd row as cells: each check in words, and PASS, FAIL or n/a. */
function checkCells(checks: readonly Check[]): [string, string] {
  return [checks.map(describeCheck).join("; "), verdict(checks)];
}

/**
 * Builds one fio result table (raw, qcow2 or TLS): one row per workload x server of the table,
 * with median IOPS and CPU per op, resident MiB at rest and the peak under the workload (highest
 * over the rounds). A peer's row gives denbd/this ratios; denbd's row its checks, each with its
 * reference and ratio, and PASS, FAIL or n/a. Undefined when no server of the table ran.
 */
function fioResultTable(
  o: Options,
  results: Map<string, FioSample[]>,
  started: readonly Running[],
  table: TableName,
): { rows: string[][]; failed: boolean } | undefined {
  const rule: TableRule = TABLES[table];
  const header = ["workload", "server", "IOPS", "CPU µs/op", "RSS rest MiB", "RSS peak MiB"];
  header.push(`${rule.mine}/this IOPS`, `${rule.mine}/this CPU`, "checks", "target");
  const rows = [header];
  let failed = false;
  for (const w of o.workloads) {
    const ran = started.filter((r) => runsOn(w, r.spec));
    const samples = (r: Running) => results.get(`${w.name}/${r.spec.name}`)!;
    const medians = new Map<string, Medians>(ran.map((r) => [r.spec.name, {
      iops: median(samples(r).map((x) => x.iops)),
      cpuUs: median(samples(r).map((x) => x.cpuUs)),
    }]));
    const mine = medians.get(rule.mine);
    for (const r of ran.filter((r) => r.spec.table === table)) {
      const m = medians.get(r.spec.name)!;
      const peak = Math.max(...samples(r).map((x) => x.peakMiB));
      const row = [w.name, r.spec.name, fmt(m.iops), fmt(m.cpuUs, 2), fmt(r.restMiB!, 1)];
      row.push(fmt(peak, 1));
      if (r.spec.name === rule.mine) {
        const checks = fioChecks(rule, medians);
        failed ||= verdict(checks) === "FAIL";
        row.push("", "", ...checkCells(checks));
      } else if (mine) {
        row.push(fmt(mine.iops / m.iops, 2), fmt(mine.cpuUs / m.cpuUs, 2), "", "");
      } else {
        row.push("", "", "", "");
      }
      rows.push(row);
    }
  }
  return rows.length > 1 ? { rows, failed } : undefined;
}

/** Whether a column (by its header) holds words, aligned left, rather than numbers. */
function isTextColumn(header: string): boolean {
  return ["workload", "server", "copier", "checks"].includes(header);
}

/** Renders rows as an aligned plain-text table. */
function textTable(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const cell = (c: string, i: number) =>
    isTextColumn(rows[0][i]) ? c.padEnd(widths[i]) : c.padStart(widths[i]);
  return rows.map((r) => r.map(cell).join("  ").trimEnd()).join("\n");
}

/** Renders rows as a Markdown table. */
function markdownTable(rows: string[][]): string {
  const line = (r: string[]) => `| ${r.join(" | ")} |`;
  return [
    line(rows[0]),
    line(rows[0].map((h) => isTextColumn(h) ? "---" : "---:")),
    ...rows.slice(1).map(line),
  ].join("\n");
}

/** Collects the machine and peer-version description of a run that started at `date`. */
async function machineInfo(o: Options, date: Date): Promise<string[]> {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "?";
  const fioTools = o.workloads.length
    ? [["fio", "fio"], ...o.servers.map((s) => [s.name, s.cmd.split(" ")[0]])]
    : [];
  // denbd copy is this repository; its peers are nbdcopy and the qemu-nbd at the NBD end.
  const copyTools = o.copyWorkloads.length
    ? [...COPIERS.slice(1), COPY_SERVER].map((t) => [t.name, t.cmd.split(" ")[0]])
    : [];
  // One version line per program (the qcow2 rows run the same programs as the raw ones).
  const tools = [...fioTools, ...copyTools].filter(([, bin], i, all) =>
    all.findIndex(([, other]) => other === bin) === i
  );
  const versions = await Promise.all(
    tools.map(async ([name, bin]) => `${name}: ${await firstLine(`${bin} --version`)}`),
  );
  return [
    `date: ${date.toISOString()}`,
    `kernel: ${Deno.osRelease()}, CPU: ${cpu}, nproc: ${(await firstLine("nproc"))}`,
    `versions: ${versions.join("; ")}`,
    `image: ${o.size / MIB} MiB, runtime ${o.runtime}s (+${o.ramp}s ramp), rounds ${o.rounds}`,
  ];
}

/** Files the copy workloads write: a copier's output file, the image a writable qemu-nbd serves. */
function copyFiles(o: Options) {
  return { output: join(o.dir, "copy-output.img"), target: join(o.dir, "copy-target.img") };
}

/**
 * Runs one copy workload with one copier and checks the result against the image. The NBD
 * end is `source` (read-only qemu-nbd, started once) or a writable qemu-nbd on a fresh sparse
 * image, started for this run only; only the copy command is timed.
 */
async function measureCopy(
  w: CopyWorkload,
  copier: typeof COPIERS[number],
  o: Options,
  image: string,
  source: Running,
): Promise<CopySample> {
  const paths = copyFiles(o);
  await Deno.remove(paths.output).catch(() => {});
  let target: Running | undefined;
  if (w.to === "nbd") {
    const file = await Deno.open(paths.target, { write: true, create: true, truncate: true });
    await file.truncate(o.size).finally(() => file.close());
    target = await startServer(COPY_SERVER, freePorts(1)[0], paths.target);
  }
  try {
    if (source.exited) throw new Error(`qemu-nbd (copy source) exited: ${source.log.join("")}`);
    const uri = (r: Running) => `nbd://127.0.0.1:${r.port}/`;
    const src = w.from === "nbd" ? uri(source) : shQuote(image);
    const dst = target ? uri(target) : shQuote(paths.output);
    const cmd = copier.cmd.replaceAll("{src}", src).replaceAll("{dst}", dst);
    const started = performance.now();
    await run(["sh", "-c", "exec " + cmd], 600_000);
    const seconds = (performance.now() - started) / 1000;
    await run(["cmp", image, target ? paths.target : paths.output], 600_000);
    return { seconds, mibPerSec: o.size / MIB / seconds };
  } finally {
    if (target) await stopServer(target);
  }
}

/** Runs every copy workload with every copier for all rounds, rotating the copier order. */
async function runCopyRounds(o: Options, image: string) {
  const results = new Map<string, CopySample[]>();
  const source = await startServer(
    { ...COPY_SERVER, name: "qemu-nbd (copy source)" },
    freePorts(1)[0],
    image,
    "-r",
  );
  for (let round = 0; round < o.rounds; round++) {
    for (const [wi, w] of o.copyWorkloads.entries()) {
      const shift = (round + wi) % COPIERS.length;
      for (const copier of [...COPIERS.slice(shift), ...COPIERS.slice(0, shift)]) {
        const sample = await measureCopy(w, copier, o, image, source);
        const key = `${w.name}/${copier.name}`;
        results.set(key, [...(results.get(key) ?? []), sample]);
        const what = `${sample.mibPerSec.toFixed(0)} MiB/s, ${sample.seconds.toFixed(2)} s`;
        console.log(`round ${round + 1}/${o.rounds} ${key}: ${what}`);
      }
    }
  }
  await stopServer(source);
  for (const path of Object.values(copyFiles(o))) {
    await Deno.remove(path).catch(() => {});
  }
  return results;
}

/**
 * Builds the copy table: one row per workload x copier; denbd's row gives its check against
 * nbdcopy (the reference and the ratio of median throughputs) and PASS or FAIL.
 */
function copyResultTable(
  o: Options,
  results: Map<string, CopySample[]>,
): { rows: string[][]; failed: boolean } {
  const rows = ["workload,copier,MiB/s,seconds,checks,target".split(",")];
  let failed = false;
  for (const w of o.copyWorkloads) {
    const med = (c: string, k: keyof CopySample) =>
      median(results.get(`${w.name}/${c}`)!.map((x) => x[k]));
    const ratio = med("denbd", "mibPerSec") / med("nbdcopy", "mibPerSec");
    const check: Check = { measure: "MiB/s", reference: "nbdcopy", ratio, bound: COPY_TARGET };
    failed ||= !passes(check);
    for (const c of COPIERS) {
      const cells = c.name === "denbd" ? checkCells([check]) : ["", ""];
      rows.push([w.name, c.name, fmt(med(c.name, "mibPerSec")), fmt(med(c.name, "seconds"), 2)]);
      rows[rows.length - 1].push(...cells);
    }
  }
  return { rows, failed };
}

/**
 * Runs every workload against every server it runs on for all rounds, rotating the server order.
 */
async function runRounds(o: Options, started: readonly Running[], hz: number) {
  const results = new Map<string, FioSample[]>();
  for (let round = 0; round < o.rounds; round++) {
    for (const [wi, w] of o.workloads.entries()) {
      const servers = started.filter((r) => runsOn(w, r.spec));
      const shift = (round + wi) % servers.length;
      for (const r of [...servers.slice(shift), ...servers.slice(0, shift)]) {
        const sample = await measure(w, r, o, hz);
        const key = `${w.name}/${r.spec.name}`;
        results.set(key, [...(results.get(key) ?? []), sample]);
        const what = `${sample.iops.toFixed(0)} IOPS, ${sample.cpuUs.toFixed(2)} µs/op, ` +
          `peak ${sample.peakMiB.toFixed(1)} MiB`;
        console.log(`round ${round + 1}/${o.rounds} ${key}: ${what}`);
      }
    }
  }
  return results;
}

/** A finished result table: its rows, whether a target failed, and its targets in words. */
type ResultTable = { rows: string[][]; failed: boolean; target: string };

/** What a run saved beside its charts: the results file and the charts, for the report. */
type SavedRun = { resultsPath: string; charts: WrittenChart[] };

/**
 * Appends a Markdown section (date, machine, command line, charts with the results file, tables
 * and targets) to `file`; the charts and results are linked relative to `file`.
 */
async function appendMarkdown(
  file: string,
  info: string[],
  tables: ResultTable[],
  saved?: SavedRun,
): Promise<void> {
  const link = (path: string) => relative(dirname(resolve(file)), path);
  const charts = saved
    ? saved.charts.map((c) => `![${c.title}](${link(c.path)})\n\n`).join("") +
      `Raw results (the charts redraw from them with \`scripts/bench-chart.ts\`): ` +
      `[${link(saved.resultsPath)}](${link(saved.resultsPath)})\n\n`
    : "";
  const section = `
## Benchmark ${info[0].slice(6, 16)}

${info.map((l) => `- ${l}`).join("\n")}

\`\`\`sh
deno run --allow-all scripts/bench.ts ${Deno.args.map(shQuote).join(" ")}
\`\`\`

${charts}${tables.map((t) => `${markdownTable(t.rows)}\n\nTarget: ${t.target}.`).join("\n\n")}
`;
  await Deno.writeTextFile(file, section, { append: true });
}

/** The fio part's raw results: every workload x server that ran it, with its samples. */
function fioRecord(
  o: Options,
  results: Map<string, FioSample[]>,
  started: readonly Running[],
): FioResult[] {
  return o.workloads.flatMap((w) =>
    started.filter((r) => runsOn(w, r.spec)).map((r) => ({
      workload: w.name,
      server: r.spec.name,
      table: r.spec.table,
      restMiB: r.restMiB!,
      samples: results.get(`${w.name}/${r.spec.name}`)!,
    }))
  );
}

/** The copy part's raw results: every workload x copier, with its samples. */
function copyRecord(o: Options, results: Map<string, CopySample[]>): CopyResult[] {
  return o.copyWorkloads.flatMap((w) =>
    COPIERS.map((c) => ({
      workload: w.name,
      copier: c.name,
      samples: results.get(`${w.name}/${c.name}`)!,
    }))
  );
}

/** The folder of one run's charts under the charts folder, by its start: `YYYY-MM-DD-HHMM`. */
function runFolder(charts: string, date: Date): string {
  const iso = date.toISOString();
  return join(charts, `${iso.slice(0, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}`);
}

/** Saves a run's results as `results.json` in its folder, then draws its charts there. */
async function saveRun(dir: string, results: BenchResults): Promise<SavedRun> {
  await Deno.mkdir(dir, { recursive: true });
  const resultsPath = join(dir, "results.json");
  await Deno.writeTextFile(resultsPath, resultsToJson(results));
  const charts = await writeCharts(results, dir);
  console.log(`\nresults and charts: ${[resultsPath, ...charts.map((c) => c.path)].join(", ")}`);
  return { resultsPath, charts };
}

/**
 * Starts every fio server (each probed once: multi-conn and resident memory at rest), runs the
 * rounds, stops the servers and builds the fio result tables and the raw results.
 */
async function runFio(
  o: Options,
  hz: number,
): Promise<{ tables: ResultTable[]; record: FioResult[] }> {
  const images = await prepareImages(o);
  const ports = freePorts(o.servers.length);
  // The TLS rows' server credentials: the test fixtures' CA and server certificate.
  const tlsDir = o.servers.some((s) => s.table === "tls")
    ? (await tlsFixtures()).server
    : undefined;
  const started: Running[] = [];
  for (const [i, s] of o.servers.entries()) {
    const r = await startServer(s, ports[i], images.get(s.name)!, "", tlsDir);
    await probeServer(r);
    console.log(`${s.name}: ${r.restMiB!.toFixed(1)} MiB at rest, multi-conn ${r.multiConn}`);
    started.push(r);
  }
  checkMultiConn(o, started);
  const results = await runRounds(o, started, hz);
  await Promise.all(started.map(stopServer));
  const tables: ResultTable[] = [];
  for (const name of Object.keys(TABLES) as TableName[]) {
    const table = fioResultTable(o, results, started, name);
    const target = `${describeRule(TABLES[name])} (medians of rounds; references that ran)`;
    if (table) tables.push({ ...table, target });
  }
  return { tables, record: fioRecord(o, results, started) };
}

/** Runs the whole benchmark; returns the exit code. */
async function main(): Promise<number> {
  const o = parseOptions(Deno.args);
  if (o.help) return console.log(USAGE), 0;
  // Charts are drawn at the end: a missing converter is better found before the run.
  if (o.charts) {
    await checkConverter().catch((e) => {
      throw new Error(`${e.message} (or run with --no-charts)`);
    });
  }
  const began = performance.now();
  const date = new Date();
  const hz = Number(await firstLine("getconf CLK_TCK")) || 100;
  const info = await machineInfo(o, date);
  const fio = o.workloads.length ? await runFio(o, hz) : { tables: [], record: [] };
  const tables = fio.tables;
  let copy: CopyResult[] = [];
  if (o.copyWorkloads.length) {
    const results = await runCopyRounds(o, await prepareSparseImage(o));
    const target = `denbd copy MiB/s >= ${COPY_TARGET} x nbdcopy's (medians of rounds)`;
    tables.push({ ...copyResultTable(o, results), target });
    copy = copyRecord(o, results);
  }
  await stopAll();
  info.push(`whole run: ${((performance.now() - began) / 60_000).toFixed(1)} min`);
  console.log("\n" + info.join("\n"));
  for (const { rows, target } of tables) {
    console.log("\n" + textTable(rows) + `\n\ntarget: ${target}`);
  }
  const conditions = {
    imageMiB: o.size / MIB,
    runtimeSec: o.runtime,
    rampSec: o.ramp,
    rounds: o.rounds,
  };
  const record: BenchResults = {
    format: RESULTS_FORMAT,
    date: date.toISOString(),
    info,
    conditions,
    fio: fio.record,
    copy,
  };
  const saved = o.charts ? await saveRun(runFolder(o.charts, date), record) : undefined;
  if (o.markdown) await appendMarkdown(o.markdown, info, tables, saved);
  return tables.some((t) => t.failed) && o.check ? 1 : 0;
}

if (import.meta.main) {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => {
      console.error(`\n${sig}: stopping servers`);
      interrupted = true;
      stopAll().finally(() => Deno.exit(130));
    });
  }
  let code = 2;
  try {
    code = await main();
  } catch (e) {
    if (interrupted) code = 130; // interrupted: the failure is just the fallout of stopping
    else console.error(`bench: ${e instanceof Error ? e.message : e}`);
  } finally {
    await stopAll();
  }
  Deno.exit(code);
}
