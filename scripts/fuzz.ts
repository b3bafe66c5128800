/**
 * The fuzz harness: seeded, structure-aware mutation of NBD handshakes and
 * requests and of QMP input, sent to `denbd serve` and `denbd daemon` run
 * as child processes.
 *
 * A case is built from valid messages made with the wire codecs
 * (src/nbd/wire.ts, the tables of src/nbd/protocol.ts) or from QMP commands
 * the daemon knows; then 0 to 4 mutations change a numeric field (magic,
 * option, length, flags, type, offset, count) to an edge value, truncate,
 * repeat, drop, move or splice messages, insert random bytes or flip bits.
 * The bytes go out in one to three writes; what the server answers is read
 * and dropped. Each case is a pure function of (seed, index), so a run is
 * reproducible.
 *
 * After every few cases the harness probes the server with a well-formed
 * client (an NBD read; a QMP query-version on the daemon): a server that
 * exited is a crash, a probe unanswered within {@linkcode PROBE_TIMEOUT_MS}
 * a hang, and a resident set above {@linkcode MAX_RSS_BYTES} unbounded
 * growth. The cases since the last good probe are then saved as a
 * regression file in tests/fuzz/regressions/ (JSON, bytes in base64), which
 * the test suite replays.
 *
 * Run it for as long as wanted with
 * `deno task fuzz --duration=SECONDS --seed=N --target=serve|daemon|all`;
 * tests/interop/fuzz_test.ts runs it briefly with fixed seeds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { generateCase } from "./fuzz.ts";
 * const one = generateCase("serve", 1, 7);
 * assert.deepEqual(one, generateCase("serve", 1, 7));
 * assert.equal(one.channel, "nbd");
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NbdClient } from "../src/nbd/client/client.ts";
import {
  BASE_ALLOCATION,
  NBD_CLIENT_FLAG,
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_INFO,
  NBD_OPT,
} from "../src/nbd/protocol.ts";
import {
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  encodeString,
} from "../src/nbd/wire.ts";
import { concatBytes } from "../src/io/bytes.ts";

/** The repository root. */
const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** Where failing cases are kept, for the test suite to replay. */
export const REGRESSIONS_DIR = join(ROOT, "tests/fuzz/regressions");

/** What is fuzzed: `denbd serve`, or `denbd daemon` (its NBD server and its QMP monitor). */
export type FuzzTarget = "serve" | "daemon";
/** Every target, in the order `--target=all` runs them. */
export const FUZZ_TARGETS: readonly FuzzTarget[] = ["serve", "daemon"];

/** One input: the writes sent on one connection to one channel of a target. */
export interface FuzzCase {
  /** The target it was made for. */
  readonly target: FuzzTarget;
  /** The connection it goes to. */
  readonly channel: "nbd" | "qmp";
  /** What made it (seed and index, or a note). */
  readonly origin: string;
  /** The writes, in order. */
  readonly writes: readonly Uint8Array[];
}

/** Size of the image the targets export. */
export const IMAGE_SIZE = 4 << 20;
/** Name of the export, on both targets. */
const EXPORT_NAME = "disk";
/** How long one case may take to send and be answered before its connection is closed. */
const CASE_TIMEOUT_MS = 1000;
/** How long a well-formed probe may wait for its answer before the server counts as hung. */
export const PROBE_TIMEOUT_MS = 10_000;
/** Resident set size beyond which the server counts as growing without bound. */
export const MAX_RSS_BYTES = 512 << 20;
/** Cases between two probes. */
const CASES_PER_PROBE = 8;

// ---------------------------------------------------------------------------
// Seeded randomness

/** A deterministic random source (xorshift32 over a seed mixed with an index). */
class Random {
  #state: number;

  constructor(seed: number, index: number) {
    this.#state = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) |
      1;
    for (let i = 0; i < 4; i++) this.next();
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x;
    return x >>> 0;
  }

  /** An integer in [0, bound). */
  below(bound: number): number {
    return Math.floor((this.next() / 2 ** 32) * bound);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** `length` random bytes. */
  bytes(length: number): Uint8Array {
    return Uint8Array.from({ length }, () => this.below(256));
  }
}

// ---------------------------------------------------------------------------
// Structure: messages with their numeric fields

/** A message and where its numeric fields are: [offset, width in bytes]. */
interface Message {
  readonly bytes: Uint8Array;
  readonly fields: readonly (readonly [number, number])[];
}

const OPTION_FIELDS = [[0, 8], [8, 4], [12, 4]] as const;
const REQUEST_FIELDS = [[0, 4], [4, 2], [6, 2], [8, 8], [16, 8], [24, 4]] as const;

/** An option message; `payloadFields` are relative to the payload. */
function option(code: number, payload?: Uint8Array, payloadFields: [number, number][] = []) {
  return {
    bytes: encodeOption(code, payload),
    fields: [...OPTION_FIELDS, ...payloadFields.map(([at, width]) => [16 + at, width] as const)],
  };
}

const EXPORT_NAMES = [EXPORT_NAME, "", "nope", "d".repeat(300)];
const CONTEXT_QUERIES = [BASE_ALLOCATION, "base:", "qemu:dirty-bitmap:b", "qemu:", "x:y", ""];

/** One option of the handshake, valid as the codecs make it. */
function randomOption(random: Random): Message {
  const name = random.pick(EXPORT_NAMES);
  const nameLength = encodeString(name).length;
  switch (random.below(9)) {
    case 0:
      return option(NBD_OPT.LIST);
    case 1:
      return option(NBD_OPT.STRUCTURED_REPLY);
    case 2:
      return option(NBD_OPT.EXTENDED_HEADERS);
    case 3:
      return option(NBD_OPT.STARTTLS);
    case 4:
      return option(random.below(1 << 16), random.bytes(random.below(16)));
    case 5:
    case 6: {
      const code = random.chance(0.5) ? NBD_OPT.LIST_META_CONTEXT : NBD_OPT.SET_META_CONTEXT;
      const queries = Array.from({ length: random.below(4) }, () => random.pick(CONTEXT_QUERIES));
      return option(code, encodeMetaContextRequest({ exportName: name, queries }), [
        [0, 4],
        [4 + nameLength, 4],
      ]);
    }
    default: {
      const infos = Array.from(
        { length: random.below(4) },
        () => random.pick(Object.values(NBD_INFO)),
      );
      return option(NBD_OPT.INFO, encodeInfoRequest({ name, infos }), [
        [0, 4],
        [4 + nameLength, 2],
      ]);
    }
  }
}

/** The option that ends the handshake: GO, EXPORT_NAME or ABORT. */
function finalOption(random: Random): Message {
  const roll = random.below(10);
  if (roll === 0) return option(NBD_OPT.ABORT);
  if (roll === 1) return option(NBD_OPT.EXPORT_NAME, encodeString(EXPORT_NAME));
  const infos = random.chance(0.5) ? [NBD_INFO.BLOCK_SIZE] : [];
  return option(NBD_OPT.GO, encodeInfoRequest({ name: EXPORT_NAME, infos }), [
    [0, 4],
    [4 + EXPORT_NAME.length, 2],
  ]);
}

/** A transmission request (a write carries its payload), valid for the export. */
function randomRequest(random: Random): Message {
  const type = random.chance(0.03) ? random.below(1 << 16) : random.pick(
    Object.values(NBD_CMD).filter((command) => command !== NBD_CMD.DISC),
  );
  let flags = 0;
  for (const flag of Object.values(NBD_CMD_FLAG)) if (random.chance(0.15)) flags |= flag;
  const length = random.pick([0, 1, 512, 4096, 65536, 1 + random.below(200_000)]);
  const offset = Math.min(random.below(IMAGE_SIZE / 512) * 512, IMAGE_SIZE - length);
  const header = encodeRequestHeader({
    flags,
    type,
    cookie: BigInt(random.next()),
    offset: Math.max(0, offset),
    length,
  });
  if (type !== NBD_CMD.WRITE) return { bytes: header, fields: REQUEST_FIELDS };
  const bytes = new Uint8Array(header.length + length);
  bytes.set(header);
  bytes.fill(random.below(256), header.length);
  return { bytes, fields: REQUEST_FIELDS };
}

/** A handshake (client flags, options, GO) and then requests. */
function nbdMessages(random: Random): Message[] {
  const messages: Message[] = [{
    bytes: encodeClientFlags(
      random.chance(0.9)
        ? NBD_CLIENT_FLAG.FIXED_NEWSTYLE | (random.chance(0.5) ? NBD_CLIENT_FLAG.NO_ZEROES : 0)
        : random.next(),
    ),
    fields: [[0, 4]],
  }];
  if (random.chance(0.7)) messages.push(option(NBD_OPT.STRUCTURED_REPLY));
  for (let i = random.below(4); i > 0; i--) messages.push(randomOption(random));
  messages.push(finalOption(random));
  for (let i = random.below(12); i > 0; i--) messages.push(randomRequest(random));
  if (random.chance(0.3)) {
    messages.push({
      bytes: encodeRequestHeader({
        flags: 0,
        type: NBD_CMD.DISC,
        cookie: 0n,
        offset: 0,
        length: 0,
      }),
      fields: REQUEST_FIELDS,
    });
  }
  return messages;
}

/**
 * QMP commands the fuzzer may send: none that ends the daemon or removes
 * what the probe needs (quit, nbd-server-stop, blockdev-del and the
 * deletion of the probed export are left out; what is added is named fz*).
 */
const QMP_COMMANDS: readonly ((random: Random) => Record<string, unknown>)[] = [
  () => ({ execute: "qmp_capabilities" }),
  () => ({ execute: "qmp_capabilities", arguments: { enable: ["oob"] } }),
  () => ({ execute: "query-version" }),
  () => ({ execute: "query-commands" }),
  () => ({ execute: "query-block-exports" }),
  () => ({ execute: "query-named-block-nodes", arguments: { flat: true } }),
  (random) => ({
    execute: "block-export-add",
    arguments: {
      type: "nbd",
      id: `fz${random.below(4)}`,
      "node-name": "disk",
      name: `fz${random.below(4)}`,
      writable: random.chance(0.5),
    },
  }),
  (random) => ({ execute: "block-export-del", arguments: { id: `fz${random.below(4)}` } }),
  (random) => ({
    execute: "block-dirty-bitmap-add",
    arguments: { node: "disk", name: `fz${random.below(4)}`, granularity: 1 << random.below(20) },
  }),
  (random) => ({
    execute: "nbd-server-add",
    arguments: { device: "disk", name: `fz${random.below(4)}` },
  }),
  (random) => ({ execute: "nbd-server-remove", arguments: { name: `fz${random.below(4)}` } }),
];

/** Values a mutated JSON member may take. */
function randomJson(random: Random, depth = 0): unknown {
  switch (random.below(depth > 2 ? 6 : 8)) {
    case 0:
      return null;
    case 1:
      return random.chance(0.5);
    case 2:
      return random.pick([0, -1, 2 ** 63, 2 ** 64, 1e308, 0.5, random.next()]);
    case 3:
      return "x".repeat(random.pick([0, 1, 255, 4096, 70_000]));
    case 4:
      // Never the names the probe needs ("disk", "exp"): removing those is no failure.
      return random.pick(["fz9", "nbd", "file", "\u0000", "\u00e9"]);
    case 5:
      return `fz${random.below(4)}`;
    case 6:
      return Array.from({ length: random.below(4) }, () => randomJson(random, depth + 1));
    default:
      return Object.fromEntries(
        Array.from(
          { length: random.below(4) },
          () => [random.pick(["id", "type", "name", "x"]), randomJson(random, depth + 1)],
        ),
      );
  }
}

/** Texts that stress the JSON splitter's bounds and recovery. */
function jsonStress(random: Random): string {
  switch (random.below(5)) {
    case 0:
      return "[".repeat(1000 + random.below(100)) + "]".repeat(random.below(1100));
    case 1:
      return '{"a": '.repeat(1020 + random.below(10)) + "1" + "}".repeat(1030);
    case 2:
      return '"' + "y".repeat(random.pick([1000, 70_000, 1_100_000]));
    case 3:
      return "[" + "1,".repeat(random.below(200_000)) + "1]";
    default:
      return String.fromCharCode(...random.bytes(random.below(64)));
  }
}

/** QMP input: negotiation first (mostly), then commands with mutated arguments. */
function qmpMessages(random: Random): Message[] {
  const messages: Message[] = [];
  const text = (value: string) => ({ bytes: latin1Bytes(value), fields: [] });
  if (random.chance(0.8)) messages.push(text('{"execute": "qmp_capabilities"}\n'));
  for (let i = 1 + random.below(6); i > 0; i--) {
    if (random.chance(0.1)) {
      messages.push(text(jsonStress(random)));
      continue;
    }
    const command = random.pick(QMP_COMMANDS)(random);
    const args = command.arguments as Record<string, unknown> | undefined;
    if (args && random.chance(0.5)) {
      const keys = Object.keys(args);
      const key = random.chance(0.8) && keys.length ? random.pick(keys) : "extra";
      if (random.chance(0.2)) delete args[key];
      else args[key] = randomJson(random);
    }
    if (random.chance(0.3)) command.id = randomJson(random);
    messages.push(text(JSON.stringify(command) + "\n"));
  }
  return messages;
}

/** Bytes of a string whose characters are all below 256. */
function latin1Bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0) & 0xff);
}

// ---------------------------------------------------------------------------
// Mutation

/** Edge values for a field of `width` bytes, given its current value. */
function edgeValue(random: Random, width: number, current: bigint): bigint {
  const max = (1n << BigInt(8 * width)) - 1n;
  const choices = [
    0n,
    1n,
    max,
    max >> 1n,
    (max >> 1n) + 1n,
    current + 1n,
    current - 1n,
    current * 2n,
    BigInt(IMAGE_SIZE),
    BigInt(IMAGE_SIZE) + 1n,
    BigInt(random.next()),
    1n << BigInt(random.below(8 * width)),
  ];
  return ((random.pick(choices) % (max + 1n)) + max + 1n) % (max + 1n);
}

/** Read a big-endian unsigned field. */
function readField(bytes: Uint8Array, at: number, width: number): bigint {
  let value = 0n;
  for (let i = 0; i < width; i++) value = (value << 8n) | BigInt(bytes[at + i]);
  return value;
}

/** Write a big-endian unsigned field. */
function writeField(bytes: Uint8Array, at: number, width: number, value: bigint): void {
  for (let i = width - 1; i >= 0; i--) {
    bytes[at + i] = Number(value & 0xffn);
    value >>= 8n;
  }
}

/** Apply one structure-aware mutation to `messages` (in place). */
function mutate(random: Random, messages: Message[], donor: () => Message[]): void {
  if (messages.length === 0) return;
  const index = random.below(messages.length);
  const message = messages[index];
  switch (random.below(8)) {
    case 0:
    case 1: {
      if (message.fields.length === 0) break;
      const [at, width] = random.pick(message.fields);
      if (at + width > message.bytes.length) break;
      const bytes = message.bytes.slice();
      writeField(bytes, at, width, edgeValue(random, width, readField(bytes, at, width)));
      messages[index] = { bytes, fields: message.fields };
      break;
    }
    case 2:
      messages[index] = {
        bytes: message.bytes.subarray(0, random.below(message.bytes.length)),
        fields: [],
      };
      if (random.chance(0.5)) messages.length = index + 1;
      break;
    case 3:
      messages.splice(index, 0, ...Array(1 + random.below(40)).fill(message));
      break;
    case 4:
      messages.splice(index, 1);
      break;
    case 5: {
      const [moved] = messages.splice(index, 1);
      messages.splice(random.below(messages.length + 1), 0, moved);
      break;
    }
    case 6: {
      const others = donor();
      messages.splice(index, random.below(3), ...others.slice(random.below(others.length)));
      break;
    }
    default: {
      const bytes = message.bytes.slice();
      if (bytes.length && random.chance(0.5)) {
        for (let i = 1 + random.below(4); i > 0; i--) {
          bytes[random.below(bytes.length)] ^= 1 << random.below(8);
        }
        messages[index] = { bytes, fields: message.fields };
      } else {
        messages.splice(index, 0, { bytes: random.bytes(1 + random.below(64)), fields: [] });
      }
    }
  }
}

/** The case number `index` of the run seeded with `seed`, for `target`. */
export function generateCase(target: FuzzTarget, seed: number, index: number): FuzzCase {
  const random = new Random(seed, index);
  const channel = target === "daemon" && random.chance(0.4) ? "qmp" : "nbd";
  const make = channel === "nbd" ? nbdMessages : qmpMessages;
  const messages = make(random);
  for (let i = random.below(5); i > 0; i--) mutate(random, messages, () => make(random));
  const stream = concatBytes(...messages.map((message) => message.bytes));
  const cuts = Array.from({ length: random.below(3) }, () => random.below(stream.length + 1))
    .sort((a, b) => a - b);
  const writes = [0, ...cuts].map((start, i) => stream.subarray(start, [...cuts, stream.length][i]))
    .filter((write) => write.length > 0);
  return { target, channel, origin: `seed ${seed} case ${index}`, writes };
}

// ---------------------------------------------------------------------------
// Targets

/** A running target: where its channels are, and the process. */
export interface RunningTarget {
  /** Which program runs. */
  readonly target: FuzzTarget;
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** NBD URI of the probed export. */
  readonly nbdUri: string;
  /** TCP port of the NBD server. */
  readonly nbdPort: number;
  /** QMP socket of the daemon (undefined for serve). */
  readonly qmpSocket?: string;
  /** What the process wrote to stderr so far. */
  stderr(): string;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Stop it (SIGTERM, then SIGKILL) and wait for it. */
  stop(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Start `target` serving a fresh image in `dir`; resolves once it accepts connections. */
export async function startTarget(target: FuzzTarget, dir: string): Promise<RunningTarget> {
  const image = join(dir, `${target}.img`);
  const file = await Deno.open(image, { write: true, create: true, truncate: true });
  await file.truncate(IMAGE_SIZE);
  await file.write(new Uint8Array(65536).fill(0x5a));
  file.close();
  const port = freePort();
  const qmpSocket = target === "daemon" ? join(dir, "qmp.sock") : undefined;
  const args = target === "serve"
    ? ["serve", "-t", "-e", "4", "-x", EXPORT_NAME, "-b", "127.0.0.1", "-p", String(port)]
      .concat(["-f", "raw", image])
    : [
      "daemon",
      "--blockdev",
      `driver=file,node-name=disk,filename=${image}`,
      "--nbd-server",
      `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
      "--export",
      `type=nbd,id=exp,node-name=disk,name=${EXPORT_NAME},writable=on`,
      "--chardev",
      `socket,id=qmp0,path=${qmpSocket},server=on,wait=off`,
      "--monitor",
      "chardev=qmp0",
    ];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(ROOT, "main.ts"), ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  let done = false;
  const decoder = new TextDecoder();
  const drained = child.stderr.pipeTo(
    new WritableStream({
      // Keep the end only: a fuzz run may make the server log much.
      write: (chunk) => void (stderr = (stderr + decoder.decode(chunk)).slice(-20_000)),
    }),
  ).catch(() => {});
  const status = child.status.then(() => done = true);
  const running: RunningTarget = {
    target,
    child,
    nbdPort: port,
    nbdUri: `nbd://127.0.0.1:${port}/${EXPORT_NAME}`,
    qmpSocket,
    stderr: () => stderr,
    exited: () => done,
    async stop() {
      if (!done) child.kill("SIGTERM");
      const timer = setTimeout(() => !done && child.kill("SIGKILL"), 10_000);
      await status;
      clearTimeout(timer);
      await drained;
    },
  };
  for (let attempt = 0; attempt < 300; attempt++) {
    if (done) break;
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      if (!qmpSocket || (await Deno.stat(qmpSocket)).isSocket) return running;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await running.stop();
  throw new Error(`${target} did not start:\n${stderr}`);
}

/** Send `fuzzCase` to `running` on a fresh connection; reads and drops the answers; bounded. */
export async function sendCase(running: RunningTarget, fuzzCase: FuzzCase): Promise<void> {
  let conn: Deno.Conn;
  try {
    conn = fuzzCase.channel === "qmp"
      ? await Deno.connect({ transport: "unix", path: running.qmpSocket! })
      : await Deno.connect({ hostname: "127.0.0.1", port: running.nbdPort });
  } catch {
    return; // Refused (the server is at its connection cap, or gone: the probe tells).
  }
  const buffer = new Uint8Array(65536);
  const draining = (async () => {
    while ((await conn.read(buffer)) !== null);
  })().catch(() => {});
  const sending = (async () => {
    for (const [index, write] of fuzzCase.writes.entries()) {
      if (index > 0) await new Promise((resolve) => setTimeout(resolve, 5));
      for (let done = 0; done < write.length;) done += await conn.write(write.subarray(done));
    }
  })().catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    sending.then(() => Promise.race([draining, sleep(100)])),
    new Promise((resolve) => timer = setTimeout(resolve, CASE_TIMEOUT_MS)),
  ]);
  clearTimeout(timer);
  try {
    conn.close();
  } catch {
    // Closed already.
  }
  await Promise.all([draining, sending]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resident set size of process `pid`, in bytes (0 if unknown). */
export function residentBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** `promise`, or a rejection after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A QMP session that negotiates and asks for the version; rejects unless answered. */
async function probeQmp(socket: string): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    await conn.write(
      new TextEncoder().encode(
        '{"execute": "qmp_capabilities"}\n{"execute": "query-version", "id": "probe"}\n',
      ),
    );
    const buffer = new Uint8Array(65536);
    let text = "";
    while (!text.includes('"id": "probe"')) {
      const count = await conn.read(buffer);
      if (count === null) throw new Error("QMP probe: connection closed");
      text += new TextDecoder().decode(buffer.subarray(0, count));
    }
  } finally {
    conn.close();
  }
}

/**
 * What went wrong, or null when the target is alive, answers within
 * `bounds.timeoutMs` and its resident set stays within `bounds.maxRss`.
 */
export async function probe(
  running: RunningTarget,
  bounds: { timeoutMs?: number; maxRss?: number } = {},
): Promise<string | null> {
  const timeoutMs = bounds.timeoutMs ?? PROBE_TIMEOUT_MS;
  const maxRss = bounds.maxRss ?? MAX_RSS_BYTES;
  if (running.exited()) return `crash: the ${running.target} process exited`;
  try {
    await within(
      (async () => {
        const client = await NbdClient.connect(running.nbdUri, { timeoutMs });
        try {
          const data = await client.read(IMAGE_SIZE - 4096, 4096);
          if (data.length !== 4096) throw new Error("NBD probe: short read");
        } finally {
          await client.disconnect();
        }
      })(),
      timeoutMs,
      "NBD probe",
    );
    if (running.qmpSocket) await within(probeQmp(running.qmpSocket), timeoutMs, "QMP probe");
  } catch (error) {
    if (running.exited()) return `crash: the ${running.target} process exited`;
    return `hang: ${(error as Error).message}`;
  }
  const rss = residentBytes(running.child.pid);
  if (rss > maxRss) return `growth: resident set ${rss} bytes > ${maxRss}`;
  return null;
}

// ---------------------------------------------------------------------------
// Runs and regressions

/** A failure found: what, and the file its cases were saved to. */
export interface FuzzFailure {
  /** Crash, hang or growth, with detail. */
  readonly problem: string;
  /** The regression file written. */
  readonly savedTo: string;
  /** The end of the server's stderr. */
  readonly stderr: string;
}

/** The outcome of a run. */
export interface FuzzReport {
  /** Cases sent. */
  readonly cases: number;
  /** Probes that passed. */
  readonly probes: number;
  /** The first failure, if any (the run stops there). */
  readonly failure: FuzzFailure | null;
}

/** A regression file: the cases to send, in order, to one fresh target. */
interface RegressionFile {
  readonly target: FuzzTarget;
  readonly problem: string;
  readonly cases: { channel: "nbd" | "qmp"; origin: string; writes: string[] }[];
}

/**
 * Save `cases` that led to `problem` as a regression file in `dir`, named
 * after the target and the first case's origin; returns its path.
 */
export async function saveRegression(
  cases: readonly FuzzCase[],
  problem: string,
  dir = REGRESSIONS_DIR,
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const file: RegressionFile = {
    target: cases[0].target,
    problem,
    cases: cases.map((fuzzCase) => ({
      channel: fuzzCase.channel,
      origin: fuzzCase.origin,
      writes: fuzzCase.writes.map(toBase64),
    })),
  };
  const slug = cases[0].origin.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  const path = join(dir, `${file.target}-${slug.slice(0, 60)}.json`);
  await Deno.writeTextFile(path, JSON.stringify(file, null, 2) + "\n");
  return path;
}

/** Base64 of `bytes`, in slices (a spread of a large array overflows the stack). */
function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 8192) {
    binary += String.fromCharCode(...bytes.subarray(at, at + 8192));
  }
  return btoa(binary);
}

/** Read a regression file back into its cases. */
export async function loadRegression(path: string): Promise<FuzzCase[]> {
  const file = JSON.parse(await Deno.readTextFile(path)) as RegressionFile;
  return file.cases.map((saved) => ({
    target: file.target,
    channel: saved.channel,
    origin: saved.origin,
    writes: saved.writes.map((write) => Uint8Array.from(atob(write), (char) => char.charCodeAt(0))),
  }));
}

/**
 * Send `cases` (or generated ones) to a fresh `target`, probing every few
 * cases, until they are all sent or `deadline` (ms since the epoch) passes.
 * The first crash, hang or growth ends the run and is saved to `saveDir`.
 */
export async function fuzzTarget(options: {
  readonly target: FuzzTarget;
  readonly seed: number;
  readonly deadline: number;
  readonly cases?: readonly FuzzCase[];
  readonly saveDir?: string;
}): Promise<FuzzReport> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-fuzz-" });
  const running = await startTarget(options.target, dir);
  let sent = 0;
  let probes = 0;
  let pending: FuzzCase[] = [];
  let failure: FuzzFailure | null = null;
  try {
    for (let index = 0;; index++) {
      const last = options.cases ? index >= options.cases.length : Date.now() >= options.deadline;
      if (last || pending.length >= CASES_PER_PROBE) {
        const problem = await probe(running);
        if (problem) {
          const savedTo = await saveRegression(pending, problem, options.saveDir);
          failure = { problem, savedTo, stderr: running.stderr() };
          break;
        }
        probes++;
        pending = [];
        if (last) break;
      }
      const fuzzCase = options.cases?.[index] ?? generateCase(options.target, options.seed, index);
      pending.push(fuzzCase);
      await sendCase(running, fuzzCase);
      sent++;
    }
  } finally {
    await running.stop();
    await Deno.remove(dir, { recursive: true });
  }
  return { cases: sent, probes, failure };
}

/** `deno task fuzz [--duration=SECONDS] [--seed=N] [--target=serve|daemon|all]`. */
async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      duration: { type: "string", default: "60" },
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      target: { type: "string", default: "all" },
    },
  });
  const targets = values.target === "all"
    ? FUZZ_TARGETS
    : FUZZ_TARGETS.filter((target) => target === values.target);
  const duration = Number(values.duration);
  const seed = Number(values.seed);
  if (targets.length === 0 || !(duration > 0) || !Number.isInteger(seed)) {
    console.error(
      "usage: deno task fuzz [--duration=SECONDS] [--seed=N] [--target=serve|daemon|all]",
    );
    return 2;
  }
  let failed = false;
  for (const target of targets) {
    const deadline = Date.now() + (duration * 1000) / targets.length;
    const report = await fuzzTarget({ target, seed, deadline });
    console.log(`${target}: seed ${seed}, ${report.cases} cases, ${report.probes} probes passed`);
    if (report.failure) {
      failed = true;
      console.log(`  ${report.failure.problem}\n  saved to ${report.failure.savedTo}`);
      console.log(report.failure.stderr.split("\n").slice(-20).join("\n"));
    }
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
