/**
 * What the differential tests of `denbd daemon` share: qemu-storage-daemon
 * 7.2 and `denbd daemon` started with the same argument list (each in its
 * own directory, with its own copies of the images, its own sockets and
 * ports), a QMP session on each, and a script runner that sends the same
 * commands to both, records every reply and event in order, normalises what
 * legitimately differs (timestamps, QEMU's version and package, the
 * directories and ports, generated node names, the program prefix of
 * stderr lines) and compares the transcripts as parsed JSON.
 *
 * Templates: `$DIR` stands for the daemon's own directory, `$PORT0`,
 * `$PORT1`, ... for its own free TCP ports; the same substitution is applied
 * to arguments, QMP commands and helper commands, and undone in what the
 * daemons answer.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import {
  type CommandResult,
  denbdCommand,
  freePort,
  launch,
  qmpMonitorArgs,
  run,
  type ServerProcess,
  withTempDir,
} from "./harness.ts";

/** The two daemons under comparison: the reference first. */
export type DaemonKind = "qsd" | "denbd";

/** Both kinds, reference first. */
export const KINDS: readonly DaemonKind[] = ["qsd", "denbd"];

/** The prefix each program gives its own messages on stderr. */
export const PROGRAM_PREFIX: Readonly<Record<DaemonKind, string>> = {
  qsd: "qemu-storage-daemon: ",
  denbd: "denbd daemon: ",
};

/** How long one QMP message may take to arrive. */
const MESSAGE_TIMEOUT_MS = 10_000;

/** The program and leading arguments that start a daemon of `kind`. */
export function daemonProgram(kind: DaemonKind): [string, string[]] {
  if (kind === "qsd") return ["qemu-storage-daemon", []];
  const [command, prefix] = denbdCommand();
  return [command, [...prefix, "daemon"]];
}

/** Where one daemon lives: its directory and its ports, for templates. */
export interface DaemonPlace {
  /** Which daemon. */
  readonly kind: DaemonKind;
  /** Its own directory (images, sockets, pid file). */
  readonly dir: string;
  /** Its own free TCP ports ($PORT0, $PORT1, ...). */
  readonly ports: readonly number[];
}

/** Fill in `$DIR` and `$PORTn` for `place`. */
export function substitute(text: string, place: DaemonPlace): string {
  return text
    .replaceAll("$DIR", place.dir)
    .replace(/\$PORT(\d+)/g, (_, index) => {
      const port = place.ports[Number(index)];
      if (port === undefined) throw new Error(`no $PORT${index} allocated`);
      return String(port);
    });
}

/** Undo {@linkcode substitute} in a string and mask generated node names. */
function unsubstitute(text: string, place: DaemonPlace): string {
  let result = text.replaceAll(place.dir, "$DIR").replace(/#block\d+/g, "#blockN");
  for (const [index, port] of place.ports.entries()) {
    result = result.replace(new RegExp(`(?<!\\d)${port}(?!\\d)`, "g"), `$PORT${index}`);
  }
  return result;
}

/** A JSON object. */
export type Json = Record<string, unknown>;

/** An entry of a transcript: a message, or a marker such as "<EOF>" or "<TIMEOUT>". */
export type Message = Json | string;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * `value` with what legitimately differs masked: event timestamps (their
 * shape is checked), version triples and package strings, the daemon's
 * directory and ports, generated node names.
 */
export function normalise(value: unknown, place: DaemonPlace): unknown {
  if (typeof value === "string") return unsubstitute(value, place);
  if (Array.isArray(value)) return value.map((item) => normalise(item, place));
  if (!isObject(value)) return value;
  const qemu = value.qemu;
  if (
    typeof value.package === "string" && isObject(qemu) &&
    ["major", "minor", "micro"].every((key) => Number.isInteger(qemu[key]))
  ) {
    return "VERSION";
  }
  const result: Json = {};
  for (const [key, item] of Object.entries(value)) {
    if (key === "timestamp" && "event" in value && isTimestamp(item)) {
      result[key] = "TIMESTAMP";
    } else {
      result[key] = normalise(item, place);
    }
  }
  return result;
}

function isTimestamp(value: unknown): boolean {
  return isObject(value) && Number.isInteger(value.seconds) &&
    Number.isInteger(value.microseconds) && (value.microseconds as number) >= 0 &&
    (value.microseconds as number) < 1_000_000 && Object.keys(value).length === 2;
}

/** stderr text with the program prefix and the daemon's directory and ports masked. */
export function normaliseText(text: string, place: DaemonPlace): string {
  // getopt's own messages name the program as run (a full path); QEMU's use its basename.
  const prefix = PROGRAM_PREFIX[place.kind].replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return unsubstitute(text, place).replace(new RegExp(`^(?:\\S*/)?${prefix}`, "gm"), "PROG: ");
}

/** Items in order of arrival, waited for with a deadline; ended by the end of their stream. */
class ArrivalQueue<T> {
  readonly #items: T[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  /** Nothing is waiting to be taken. */
  get empty(): boolean {
    return this.#items.length === 0;
  }

  /** Add an item and wake a waiting reader. */
  push(item: T): void {
    this.#items.push(item);
    this.#wake?.();
  }

  /** The stream ended: readers get "<EOF>" once the items are taken. */
  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  /** The next item; "<EOF>" after the end, "<TIMEOUT>" if none came within `timeoutMs`. */
  async next(timeoutMs: number): Promise<T | "<EOF>" | "<TIMEOUT>"> {
    const deadline = Date.now() + timeoutMs;
    while (this.#items.length === 0) {
      if (this.#ended) return "<EOF>";
      const left = deadline - Date.now();
      if (left <= 0) return "<TIMEOUT>";
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = null;
    }
    return this.#items.shift()!;
  }
}

/** A QMP connection that records every message, replies and events alike, in order. */
export class QmpSession {
  readonly #conn: Deno.UnixConn;
  readonly #queue = new ArrivalQueue<Message>();
  readonly #reading: Promise<void>;
  /** The greeting. */
  greeting: Message = "<none>";

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#reading = this.#readLoop();
  }

  /** Connect to the monitor socket at `path` and read the greeting. */
  static async connect(path: string): Promise<QmpSession> {
    const session = new QmpSession(await Deno.connect({ transport: "unix", path }));
    session.greeting = await session.next();
    return session;
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(256 * 1024);
    let text = "";
    try {
      for (;;) {
        const count = await this.#conn.read(buffer);
        if (count === null) break;
        text += decoder.decode(buffer.subarray(0, count), { stream: true });
        for (let end; (end = text.indexOf("\n")) >= 0;) {
          const line = text.slice(0, end).replace(/\r$/, "");
          text = text.slice(end + 1);
          if (line.trim()) this.#queue.push(parseLine(line));
        }
      }
    } catch {
      // Closed locally or reset by the peer: the end of the stream either way.
    }
    if (text.trim()) this.#queue.push(`<unterminated: ${text}>`);
    this.#queue.end();
  }

  /** The next message; "<EOF>" at the end of the stream, "<TIMEOUT>" if none came in time. */
  next(timeoutMs = MESSAGE_TIMEOUT_MS): Promise<Message> {
    return this.#queue.next(timeoutMs);
  }

  /** Messages that arrive within `ms` (events, typically). */
  async drain(ms: number): Promise<Message[]> {
    const messages: Message[] = [];
    for (const deadline = Date.now() + ms;;) {
      const left = deadline - Date.now();
      if (left <= 0 && this.#queue.empty) return messages;
      const message = await this.next(Math.max(left, 0));
      if (message === "<TIMEOUT>") return messages;
      messages.push(message);
      if (message === "<EOF>") return messages;
    }
  }

  /** Send `text` and a line end. */
  async send(text: string): Promise<void> {
    const data = new TextEncoder().encode(text + "\n");
    for (let done = 0; done < data.length;) done += await this.#conn.write(data.subarray(done));
  }

  /**
   * Send the command `text`; return every message up to its reply and until
   * `events` events have been seen (before or after the reply), or up to EOF
   * with `untilEof`.
   */
  async command(text: string, options: { events?: number; untilEof?: boolean } = {}) {
    await this.send(text);
    const transcript: Message[] = [];
    let replied = false;
    let events = 0;
    while (!replied || events < (options.events ?? 0)) {
      const message = await this.next();
      transcript.push(message);
      if (typeof message === "string") return transcript;
      if ("return" in message || "error" in message) replied = true;
      if ("event" in message) events++;
    }
    if (options.untilEof) {
      for (let message; (message = await this.next()) !== "<EOF>";) {
        transcript.push(message);
        if (message === "<TIMEOUT>") return transcript;
      }
      transcript.push("<EOF>");
    }
    return transcript;
  }

  /** Close the connection and wait for the reader to stop. */
  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }
}

function parseLine(line: string): Message {
  try {
    const value = JSON.parse(line);
    return isObject(value) ? value : `<not an object: ${line}>`;
  } catch {
    return `<unparsable: ${line}>`;
  }
}

/** How to start a daemon (or a pair). */
export interface DaemonSpec {
  /** Arguments (templates), without the QMP monitor, which is added after them. */
  readonly args: readonly string[];
  /** Create the daemon's files in its directory (run once per daemon, identically). */
  readonly setup?: (dir: string) => Promise<void>;
  /** How many free ports each daemon needs. */
  readonly ports?: number;
  /** Leave out the QMP monitor (then startup is detected by `waitFor`). */
  readonly noMonitor?: boolean;
  /** A path (template) that appears once the daemon has started, without a monitor. */
  readonly waitFor?: string;
}

/** A running daemon of one kind. */
export class RunningDaemon {
  /** Where it lives. */
  readonly place: DaemonPlace;
  /** The process. */
  readonly process: ServerProcess;
  /** Its QMP monitor socket (absent with `noMonitor`). */
  readonly qmpPath: string;

  constructor(place: DaemonPlace, process: ServerProcess, qmpPath: string) {
    this.place = place;
    this.process = process;
    this.qmpPath = qmpPath;
  }

  /** Which daemon. */
  get kind(): DaemonKind {
    return this.place.kind;
  }

  /** A template filled in for this daemon. */
  fill(text: string): string {
    return substitute(text, this.place);
  }

  /** A new QMP session (on the main monitor unless told), capabilities negotiated. */
  async session(path = this.qmpPath): Promise<QmpSession> {
    const session = await QmpSession.connect(path);
    const reply = await session.command('{"execute": "qmp_capabilities"}');
    if (!isDeepStrictEqual(reply, [{ return: {} }])) {
      await session.close();
      throw new Error(`${this.kind}: qmp_capabilities answered ${JSON.stringify(reply)}`);
    }
    return session;
  }

  /** stderr so far, normalised. */
  stderr(): string {
    return normaliseText(this.process.stderr(), this.place);
  }
}

/** The QMP socket path every daemon gets (a template). */
export const QMP_SOCKET = "$DIR/qmp.sock";

/** A file node f0 on d.img, a raw node r0 over it, and a read-only file node ro0 on e.img. */
export const NODES: readonly string[] = [
  "--blockdev",
  "driver=file,node-name=f0,filename=$DIR/d.img",
  "--blockdev",
  "driver=raw,node-name=r0,file=f0",
  "--blockdev",
  "driver=file,node-name=ro0,filename=$DIR/e.img,read-only=on",
];

/** The arguments that give a daemon its QMP monitor. */
export const MONITOR_ARGS: readonly string[] = qmpMonitorArgs(QMP_SOCKET);

/** Make the directory and free ports of a daemon of `kind` under `root`. */
export async function makePlace(
  root: string,
  kind: DaemonKind,
  spec: Pick<DaemonSpec, "setup" | "ports">,
): Promise<DaemonPlace> {
  const dir = join(root, kind);
  await Deno.mkdir(dir);
  await spec.setup?.(dir);
  return { kind, dir, ports: Array.from({ length: spec.ports ?? 0 }, () => freePort()) };
}

/** Start the daemon of `place` with `spec`'s arguments and wait until it serves QMP. */
export async function startDaemon(place: DaemonPlace, spec: DaemonSpec): Promise<RunningDaemon> {
  const [command, prefix] = daemonProgram(place.kind);
  const args = [...spec.args, ...(spec.noMonitor ? [] : MONITOR_ARGS)].map((arg) =>
    substitute(arg, place)
  );
  const qmpPath = substitute(QMP_SOCKET, place);
  const process = await launch({
    command,
    args: [...prefix, ...args],
    uri: "",
    listen: spec.noMonitor ? substitute(spec.waitFor ?? QMP_SOCKET, place) : qmpPath,
  });
  return new RunningDaemon(place, process, qmpPath);
}

/** Run `command args` for a daemon, with its templates filled in. */
export function runDaemon(
  place: DaemonPlace,
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<CommandResult> {
  const [command, prefix] = daemonProgram(place.kind);
  return run(command, [...prefix, ...args.map((arg) => substitute(arg, place))], { timeoutMs });
}

/** A command for the script runner, as text or an object, with options. */
export interface Step {
  /** The QMP command (templates allowed). */
  readonly send: string | Json;
  /** How many events the step has, before or after the reply (a hard removal's may follow it). */
  readonly events?: number;
  /** Compare the step's messages in any order (reply included). */
  readonly anyOrder?: boolean;
  /** Compare each run of consecutive events in any order (the reply keeps its place). */
  readonly eventsAnyOrder?: boolean;
  /** Read up to the end of the stream (quit). */
  readonly untilEof?: boolean;
  /** A label for reports. */
  readonly label?: string;
}

/** A step, or just its command. */
export type StepLike = string | Json | Step;

function asStep(step: StepLike): Step {
  if (typeof step === "string") return { send: step };
  if ("send" in step) return step as unknown as Step;
  return { send: step };
}

/** A command as text. */
export function commandText(send: string | Json): string {
  return typeof send === "string" ? send : JSON.stringify(send);
}

/** Shorthand for `{"execute": name, "arguments": args}`. */
export function qmp(name: string, args?: Json): Json {
  return args === undefined ? { execute: name } : { execute: name, arguments: args };
}

/** A transcript in canonical order for comparison. */
function canonical(messages: unknown[], step: Step): unknown[] {
  const key = (value: unknown) => JSON.stringify(sortKeys(value));
  if (step.anyOrder) return [...messages].sort((a, b) => key(a) < key(b) ? -1 : 1);
  if (!step.eventsAnyOrder) return messages;
  const result: unknown[] = [];
  let run: unknown[] = [];
  const flush = () => {
    result.push(...run.sort((a, b) => key(a) < key(b) ? -1 : 1));
    run = [];
  };
  for (const message of messages) {
    if (isObject(message) && "event" in message) {
      run.push(message);
    } else {
      flush();
      result.push(message);
    }
  }
  flush();
  return result;
}

/** `value` with object keys sorted (for stable text). */
export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]),
  );
}

/** One step whose transcripts differ. */
export interface Mismatch {
  /** The command (template). */
  readonly command: string;
  /** What qsd answered (normalised). */
  readonly qsd: unknown;
  /** What denbd answered (normalised). */
  readonly denbd: unknown;
}

/** Format mismatches for an assertion message. */
export function describeMismatches(mismatches: readonly Mismatch[]): string {
  return mismatches.map((m) =>
    `>> ${m.command}\n   qsd:   ${JSON.stringify(sortKeys(m.qsd))}\n` +
    `   denbd: ${JSON.stringify(sortKeys(m.denbd))}`
  ).join("\n");
}

/** qsd and `denbd daemon` started alike, with a QMP session each. */
export class DaemonPair {
  /** The reference. */
  readonly qsd: RunningDaemon;
  /** The daemon under test. */
  readonly denbd: RunningDaemon;
  /** The main session of each. */
  readonly sessions: Readonly<Record<DaemonKind, QmpSession>>;

  constructor(
    qsd: RunningDaemon,
    denbd: RunningDaemon,
    sessions: Record<DaemonKind, QmpSession>,
  ) {
    this.qsd = qsd;
    this.denbd = denbd;
    this.sessions = sessions;
  }

  /** The daemon of `kind`. */
  daemon(kind: DaemonKind): RunningDaemon {
    return kind === "qsd" ? this.qsd : this.denbd;
  }

  /** Run `body` for both daemons at once; results by kind. */
  async both<T>(body: (daemon: RunningDaemon) => Promise<T>): Promise<Record<DaemonKind, T>> {
    const [qsd, denbd] = await Promise.all([body(this.qsd), body(this.denbd)]);
    return { qsd, denbd };
  }

  /** Run one step on both (at once); the normalised transcripts by kind. */
  async step(stepLike: StepLike, session?: Record<DaemonKind, QmpSession>) {
    const step = asStep(stepLike);
    const text = commandText(step.send);
    return await this.both(async (daemon) => {
      const transcript = await (session ?? this.sessions)[daemon.kind].command(
        daemon.fill(text),
        step,
      );
      return canonical(normalise(transcript, daemon.place) as unknown[], step);
    });
  }

  /**
   * Run `steps` on both, in lock step, then a sync command that collects
   * stray events; returns every step whose transcripts differ.
   */
  async script(
    steps: readonly StepLike[],
    sessions?: Record<DaemonKind, QmpSession>,
  ): Promise<Mismatch[]> {
    const mismatches: Mismatch[] = [];
    for (const stepLike of [...steps, { send: qmp("query-version"), label: "sync" }]) {
      const step = asStep(stepLike);
      const result = await this.step(step, sessions);
      if (!isDeepStrictEqual(result.qsd, result.denbd)) {
        mismatches.push({
          command: step.label ?? commandText(step.send),
          qsd: result.qsd,
          denbd: result.denbd,
        });
      }
    }
    return mismatches;
  }

  /** Run `steps` and require identical transcripts for all. */
  async expectSame(
    steps: readonly StepLike[],
    sessions?: Record<DaemonKind, QmpSession>,
  ): Promise<void> {
    const mismatches = await this.script(steps, sessions);
    assert.equal(
      mismatches.length,
      0,
      `denbd and qsd answered differently:\n${describeMismatches(mismatches)}`,
    );
  }

  /** Run one command on one daemon only; the normalised transcript. */
  async only(kind: DaemonKind, stepLike: StepLike): Promise<unknown[]> {
    const step = asStep(stepLike);
    const daemon = this.daemon(kind);
    const transcript = await this.sessions[kind].command(
      daemon.fill(commandText(step.send)),
      step,
    );
    return normalise(transcript, daemon.place) as unknown[];
  }

  /** A second session on each daemon. */
  async newSessions(): Promise<Record<DaemonKind, QmpSession>> {
    return await this.both((daemon) => daemon.session());
  }
}

/** Options of {@linkcode withDaemonPair}. */
export interface PairOptions {
  /** Compare the daemons' normalised stderr at the end (default true). */
  readonly compareStderr?: boolean;
  /** Require exit code 0 from both when stopped (default true). */
  readonly expectCleanExit?: boolean;
}

/**
 * Start qsd and `denbd daemon` with the same `spec` (each in its own
 * directory under one temporary directory), run `body`, then stop both
 * (SIGTERM; always, bounded) and remove the directories. Unless told
 * otherwise, both must exit 0 and have printed the same on stderr.
 */
export async function withDaemonPair(
  spec: DaemonSpec,
  body: (pair: DaemonPair) => Promise<void>,
  options: PairOptions = {},
): Promise<void> {
  await withTempDir(async (root) => {
    const places = await Promise.all(KINDS.map((kind) => makePlace(root, kind, spec)));
    const started = await Promise.allSettled(places.map((place) => startDaemon(place, spec)));
    const daemons = started.flatMap((result) =>
      result.status === "fulfilled" ? [result.value] : []
    );
    const sessions: QmpSession[] = [];
    let codes: number[] = [];
    try {
      for (const result of started) if (result.status === "rejected") throw result.reason;
      const [qsd, denbd] = daemons;
      for (const daemon of daemons) sessions.push(await daemon.session());
      const [qsdSession, denbdSession] = sessions;
      assert.deepEqual(
        normalise(denbdSession.greeting, denbd.place),
        normalise(qsdSession.greeting, qsd.place),
        "greeting",
      );
      await body(new DaemonPair(qsd, denbd, { qsd: qsdSession, denbd: denbdSession }));
    } finally {
      await Promise.all(sessions.map((session) => session.close()));
      codes = await Promise.all(daemons.map((daemon) => daemon.process.stop()));
    }
    const [qsd, denbd] = daemons;
    if (options.expectCleanExit ?? true) {
      assert.deepEqual(codes, [0, 0], "exit codes of qsd and denbd when stopped");
    }
    if (options.compareStderr ?? true) {
      assert.deepEqual(
        denbd.stderr().split("\n"),
        qsd.stderr().split("\n"),
        "stderr of denbd (normalised) vs qsd",
      );
    }
  });
}

/** A Python (libnbd) helper that talks line by line on stdin/stdout. */
export class PythonHelper {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines = new ArrivalQueue<string>();
  readonly #reading: Promise<void>;
  #stderr = "";
  readonly #stderrDone: Promise<void>;

  /** Start `/usr/bin/python3 -c script args...`. */
  constructor(script: string, args: readonly string[]) {
    this.#child = new Deno.Command("/usr/bin/python3", {
      args: ["-u", "-c", script, ...args],
      env: { LIBNBD_DEBUG: "0" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const decoder = new TextDecoder();
    let text = "";
    this.#reading = this.#child.stdout.pipeTo(
      new WritableStream({
        write: (chunk) => {
          text += decoder.decode(chunk, { stream: true });
          for (let end; (end = text.indexOf("\n")) >= 0;) {
            this.#lines.push(text.slice(0, end));
            text = text.slice(end + 1);
          }
        },
      }),
    ).finally(() => this.#lines.end());
    const errors = new TextDecoder();
    this.#stderrDone = this.#child.stderr.pipeTo(
      new WritableStream({ write: (chunk) => void (this.#stderr += errors.decode(chunk)) }),
    );
  }

  /** The next line of output ("<EOF>" at the end, "<TIMEOUT>" after `timeoutMs`). */
  line(timeoutMs = 10_000): Promise<string> {
    return this.#lines.next(timeoutMs);
  }

  /** Send a line to its stdin. */
  async send(line: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  /** Close stdin, wait (bounded) for the exit; kills it if it does not end. */
  async finish(timeoutMs = 10_000): Promise<{ code: number; stderr: string }> {
    await this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const status = await Promise.race([this.#child.status, timeout]);
    clearTimeout(timer);
    if (status === "timeout") {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    const final = await this.#child.status;
    await this.#reading.catch(() => {});
    await this.#stderrDone.catch(() => {});
    return { code: final.code, stderr: this.#stderr };
  }
}

/** Run `command args` (templates filled in) for each daemon at once; normalised results. */
export async function runForBoth(
  pair: DaemonPair,
  command: string,
  args: readonly string[],
  options: { stdin?: string; timeoutMs?: number } = {},
): Promise<Record<DaemonKind, CommandResult>> {
  return await pair.both(async (daemon) => {
    const result = await run(command, args.map((arg) => daemon.fill(arg)), {
      stdin: options.stdin === undefined ? undefined : new TextEncoder().encode(options.stdin),
      timeoutMs: options.timeoutMs,
    });
    return {
      code: result.code,
      stdout: normaliseText(result.stdout, daemon.place),
      stderr: normaliseText(result.stderr, daemon.place),
    };
  });
}

/** Differences collected over a test, asserted once at the end (so all are reported). */
export class Differences {
  readonly #items: string[] = [];

  /** Record a difference between what qsd and denbd gave for `label`, if any. */
  check(label: string, qsd: unknown, denbd: unknown): void {
    if (isDeepStrictEqual(qsd, denbd)) return;
    const show = (value: unknown) =>
      typeof value === "string" ? JSON.stringify(value) : JSON.stringify(sortKeys(value));
    this.#items.push(`>> ${label}\n   qsd:   ${show(qsd)}\n   denbd: ${show(denbd)}`);
  }

  /** Record the differences of a {@linkcode DaemonPair.script}. */
  add(mismatches: readonly Mismatch[]): void {
    if (mismatches.length) this.#items.push(describeMismatches(mismatches));
  }

  /** Fail listing every difference recorded. */
  assertNone(): void {
    assert.equal(
      this.#items.length,
      0,
      `denbd and qsd differ:\n${this.#items.join("\n")}`,
    );
  }
}
