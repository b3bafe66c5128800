/**
 * What the interop tests share: finding the real peers (a missing peer skips
 * a test locally but fails it in CI, where CI=true), running commands with a
 * time bound, free loopback ports, scratch images, and starting `denbd serve`
 * or qemu-nbd as a child process that is always stopped again.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

/** The repository root. */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Whether this is a CI run, where no test may be skipped. */
export const IN_CI = Deno.env.get("CI") === "true";

/** Default bound on any child command. */
const COMMAND_TIMEOUT_MS = 60_000;

/** PATH with the system directories first, so Debian's python3 (with libnbd) wins. */
const SYSTEM_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${Deno.env.get("PATH") ?? ""}`;

/** Whether `command` is on the PATH. */
function onPath(command: string): boolean {
  return SYSTEM_PATH.split(":").some((dir) => {
    try {
      return Deno.statSync(join(dir, command)).isFile;
    } catch {
      return false;
    }
  });
}

/**
 * Options for a Deno.test that needs `peers`: ignored when one is missing,
 * except in CI, where the test runs (and fails) so nothing is skipped quietly.
 */
export function needs(...peers: string[]): { ignore: boolean } {
  const missing = peers.filter((peer) => !onPath(peer));
  if (missing.length && !IN_CI) {
    console.error(`skipping: peer(s) not installed: ${missing.join(", ")}`);
  }
  return { ignore: missing.length > 0 && !IN_CI };
}

/** What a finished command printed and returned. */
export interface CommandResult {
  /** Exit code. */
  readonly code: number;
  /** Standard output as text. */
  readonly stdout: string;
  /** Standard error as text. */
  readonly stderr: string;
}

/** Run `command args` to completion within `timeoutMs`; never throws on a non-zero exit. */
export async function run(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; stdin?: Uint8Array; cwd?: string } = {},
): Promise<CommandResult> {
  const child = new Deno.Command(command, {
    args: [...args],
    cwd: options.cwd,
    env: { PATH: SYSTEM_PATH, LIBNBD_DEBUG: "0" },
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? COMMAND_TIMEOUT_MS),
  }).spawn();
  if (options.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Run a command and require exit code 0; returns its standard output. */
export async function check(command: string, args: readonly string[]): Promise<string> {
  const result = await run(command, args);
  assert.equal(
    result.code,
    0,
    `${command} ${args.join(" ")} exited ${result.code}: ${result.stderr}${result.stdout}`,
  );
  return result.stdout;
}

/** Resolves after `ms` milliseconds. */
export const delay = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Whether `path` exists (anything `stat` can see). */
export const exists = (path: string): Promise<boolean> =>
  Deno.stat(path).then(() => true, () => false);

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * The daemon options of a QMP monitor on the Unix socket `path` (qsd's and
 * `denbd daemon`'s `--chardev` and `--monitor`), its character device named `id`.
 */
export function qmpMonitorArgs(path: string, id = "qmp0"): string[] {
  return [
    "--chardev",
    `socket,id=${id},path=${path},server=on,wait=off`,
    "--monitor",
    `chardev=${id}`,
  ];
}

/** A scratch directory removed after `body` finishes. */
export async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-test-" });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Create a sparse raw image of `size` bytes at `path` with `regions` of data
 * ([offset, length] pairs, filled with a byte pattern that depends on the offset).
 */
export async function makeSparseImage(
  path: string,
  size: number,
  regions: readonly (readonly [number, number])[] = [],
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.truncate(size);
    for (const [offset, length] of regions) {
      const bytes = new Uint8Array(length).map((_, i) => ((offset >> 12) + i) % 251 + 1);
      await file.seek(offset, Deno.SeekMode.Start);
      let done = 0;
      while (done < length) done += await file.write(bytes.subarray(done));
    }
  } finally {
    file.close();
  }
}

/** SHA-256 of a file, as hex. */
export async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A running server process. */
export interface ServerProcess {
  /** The child. */
  readonly child: Deno.ChildProcess;
  /** NBD URI of the export. */
  readonly uri: string;
  /** Everything the server wrote to standard error so far. */
  stderr(): string;
  /** SIGTERM the server and wait for it; returns the exit code. */
  stop(): Promise<number>;
  /** Wait for the server to exit on its own (bounded); returns the exit code. */
  exited(timeoutMs?: number): Promise<number>;
}

/** How to start a server under test. */
export interface ServerStart {
  /** Arguments after the program (flags and FILE), without -p / -k. */
  readonly args: readonly string[];
  /** Serve on this Unix socket instead of a TCP port. */
  readonly socket?: string;
  /** Export name, for the URI. */
  readonly exportName?: string;
  /** TCP address to listen on (default 127.0.0.1). */
  readonly host?: string;
}

/** The command line of denbd run from source (add the subcommand and its arguments). */
export function denbdCommand(): [string, string[]] {
  return [Deno.execPath(), ["run", "--allow-all", join(ROOT, "main.ts")]];
}

/** Start `denbd serve` (from source) and wait until it accepts connections. */
export function startDenbd(start: ServerStart): Promise<ServerProcess> {
  const [command, prefix] = denbdCommand();
  return startServer(command, [...prefix, "serve"], start);
}

/** Start qemu-nbd with the same arguments, as the reference. */
export function startQemuNbd(start: ServerStart): Promise<ServerProcess> {
  return startServer("qemu-nbd", [], start);
}

/**
 * Whether the tests that compare denbd with QEMU run QEMU's own programs in
 * denbd's place (DENBD_SUBJECT=qemu): qemu-nbd for `denbd serve`,
 * qemu-storage-daemon for `denbd daemon`. Such a run checks the tests
 * themselves: the peers must pass every one of them.
 */
export const SUBJECT_IS_QEMU = Deno.env.get("DENBD_SUBJECT") === "qemu";

/** The server under test with qemu-nbd's flags: `denbd serve`, or qemu-nbd (DENBD_SUBJECT=qemu). */
export function startSubject(start: ServerStart): Promise<ServerProcess> {
  return SUBJECT_IS_QEMU ? startQemuNbd(start) : startDenbd(start);
}

/** The program and leading arguments of `denbd serve`, or qemu-nbd (DENBD_SUBJECT=qemu). */
export function subjectServeCommand(): [string, string[]] {
  if (SUBJECT_IS_QEMU) return ["qemu-nbd", []];
  const [command, prefix] = denbdCommand();
  return [command, [...prefix, "serve"]];
}

/** The program and leading arguments of `denbd daemon`, or qemu-storage-daemon (DENBD_SUBJECT=qemu). */
export function subjectDaemonCommand(): [string, string[]] {
  if (SUBJECT_IS_QEMU) return ["qemu-storage-daemon", []];
  const [command, prefix] = denbdCommand();
  return [command, [...prefix, "daemon"]];
}

/** Start `command prefix... args` (qemu-nbd's flags) on a fresh port or the given socket. */
export function startServer(
  command: string,
  prefix: readonly string[],
  start: ServerStart,
): Promise<ServerProcess> {
  const port = freePort();
  const host = start.host ?? "127.0.0.1";
  const where = start.socket ? ["-k", start.socket] : ["-b", host, "-p", String(port)];
  const name = encodeURIComponent(start.exportName ?? "");
  return launch({
    command,
    args: [...prefix, ...where, ...start.args],
    uri: start.socket
      ? `nbd+unix:///${name}?socket=${start.socket}`
      : `nbd://${host.includes(":") ? `[${host}]` : host}:${port}/${name}`,
    listen: start.socket ?? { hostname: host, port },
  });
}

/** How to launch any server under test. */
export interface LaunchSpec {
  /** Program to run. */
  readonly command: string;
  /** Its arguments. */
  readonly args: readonly string[];
  /** NBD URI of the export it will serve. */
  readonly uri: string;
  /** Where it listens: probed by connecting (TCP) or by the socket file appearing (Unix). */
  readonly listen: Deno.ConnectOptions | string;
  /** The program forks a daemon that writes its pid here and exits at once. */
  readonly daemonPidFile?: string;
}

/** Launch a server and wait (bounded) until it listens; it is stopped again on failure. */
export async function launch(spec: LaunchSpec): Promise<ServerProcess> {
  const child = new Deno.Command(spec.command, {
    args: [...spec.args],
    env: { PATH: SYSTEM_PATH },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const decoder = new TextDecoder();
  const drained = child.stderr.pipeTo(
    new WritableStream({ write: (chunk) => void (stderr += decoder.decode(chunk)) }),
  );
  const exited = async (timeoutMs = 15_000): Promise<number> => {
    const status = await bounded(child.status, timeoutMs, "server still running");
    await drained;
    if (spec.daemonPidFile) await stopDaemon(spec.daemonPidFile, timeoutMs);
    return status.code;
  };
  const server: ServerProcess = {
    child,
    uri: spec.uri,
    stderr: () => stderr,
    exited,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone (or a daemon launcher that exited after forking).
      }
      try {
        return await exited();
      } catch (error) {
        child.kill("SIGKILL");
        await child.status;
        await drained;
        throw error;
      }
    },
  };
  try {
    await waitForListener(spec.listen, child, Boolean(spec.daemonPidFile));
  } catch (error) {
    await server.stop().catch(() => {});
    throw new Error(`${spec.command} did not start: ${(error as Error).message}\n${stderr}`);
  }
  return server;
}

/** `promise`, or a rejection saying `what` after `timeoutMs`. */
async function bounded<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} after ${timeoutMs}ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM the daemon whose pid is in `pidFile` and wait until it is gone (or a zombie). */
async function stopDaemon(pidFile: string, timeoutMs: number): Promise<void> {
  const pid = Number((await Deno.readTextFile(pidFile)).trim());
  const running = () => {
    try {
      return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
    } catch {
      return false;
    }
  };
  if (!running()) return;
  Deno.kill(pid, "SIGTERM");
  for (const deadline = Date.now() + timeoutMs; running();) {
    if (Date.now() > deadline) {
      Deno.kill(pid, "SIGKILL");
      throw new Error(`daemon ${pid} ignored SIGTERM`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Poll until the server listens (bounded): a TCP port is probed by connecting
 * (which counts as a client), a Unix socket by the socket file appearing
 * (which does not, so servers without -t can be tested over Unix sockets).
 */
async function waitForListener(
  where: Deno.ConnectOptions | string,
  child: Deno.ChildProcess,
  daemonizes: boolean,
): Promise<void> {
  let done = false;
  if (!daemonizes) child.status.then(() => done = true);
  for (let attempt = 0; attempt < 200 && !done; attempt++) {
    if (await isListening(where)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(done ? "exited early" : "not listening after 10s");
}

async function isListening(where: Deno.ConnectOptions | string): Promise<boolean> {
  try {
    if (typeof where === "string") return (await Deno.stat(where)).isSocket === true;
    (await Deno.connect(where)).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Start a server, run `body` with it, and always stop it afterwards.
 * Connecting to probe for readiness counts as a client, so servers started
 * here should be persistent (-t) unless the test is about that.
 */
export function withServer<T>(
  starter: (start: ServerStart) => Promise<ServerProcess>,
  start: ServerStart,
  body: (server: ServerProcess) => Promise<T>,
): Promise<T> {
  return withStarted(() => starter(start), body);
}

/** Start a server (or peer) with `start`, run `body` with it, always stop it. */
export async function withStarted<T>(
  start: () => Promise<ServerProcess>,
  body: (server: ServerProcess) => Promise<T>,
): Promise<T> {
  const server = await start();
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

/** Run a Python script with libnbd's bindings (nbdsh's), passing `args` as sys.argv[1:]. */
export function python(script: string, args: readonly string[] = []): Promise<CommandResult> {
  return run("/usr/bin/python3", ["-c", script, ...args]);
}
