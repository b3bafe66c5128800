/**
 * An NBD server run as a subprocess through systemd socket activation, as
 * libnbd's `nbd_connect_systemd_socket_activation` runs one (nbdcopy's and
 * nbdinfo's `[ CMD ARGS ... ]`): a listening Unix socket is made in a new
 * directory under /tmp, the command is started with that socket as
 * descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` set to its own process id
 * (qemu-nbd and nbdkit both take such a socket), and the client connects to
 * the socket's path. The arguments are passed as they are, without
 * substitutions. Stopping the server sends SIGTERM, reaps the process and
 * removes the socket and its directory, as nbd_close does.
 *
 * Deno cannot hand a descriptor to a child of its own, so the socket and
 * the child are made through libc (`socket`, `bind`, `listen`,
 * `posix_spawnp`, `waitpid`), which needs `--allow-ffi`. The child is
 * `/bin/sh`, which exports its own process id as LISTEN_PID and then
 * replaces itself with the command (so the id is the server's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { startActivatedServer } from "./subprocess.ts";
 * // Any command taking a socket-activated socket: qemu-nbd, nbdkit, denbd serve.
 * const server = await startActivatedServer(["sh", "-c", 'test "$LISTEN_FDS" = 1 && sleep 5']);
 * assert.match(server.uri, /^nbd\+unix:\/\/\/\?socket=%2Ftmp%2Fdenbd-nbd-/);
 * assert.ok(server.pid > 0);
 * await server.stop(); // SIGTERM, reaped, socket removed
 * ```
 * @module
 */

import { DenbdError } from "../../errors.ts";

/**
 * An NBD server to run, as libnbd's tools name one (`[ CMD ARGS ]`): a
 * program (searched in PATH) and its arguments, passed as they are.
 */
export interface ServerCommand {
  /** The program and its arguments. */
  readonly command: readonly string[];
}

/** A server started on a socket of its own; `stop` ends it. */
export interface ActivatedServer {
  /** The command's name (its first word), as nbdcopy names such an end. */
  readonly name: string;
  /** The NBD URI of the server's socket. */
  readonly uri: string;
  /** The process id of the server. */
  readonly pid: number;
  /** SIGTERM the server (SIGKILL after a grace period), reap it, remove its socket. */
  stop(): Promise<void>;
}

/** The shell line run by /bin/sh: LISTEN_PID is the shell's id, kept by exec. */
const ACTIVATE = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"';
/** Where the socket directory is made: short enough for sockaddr_un, as libnbd does. */
const SOCKET_PARENT = "/tmp";
/** How long a server may take to exit after SIGTERM before it is killed. */
const STOP_GRACE_MS = 10_000;
/** How often the server's exit is polled for while stopping. */
const REAP_POLL_MS = 10;

/** Linux values used below. */
const AF_UNIX = 1;
const SOCK_STREAM_CLOEXEC = 1 | 0o2000000;
const LISTEN_BACKLOG = 4096;
const WNOHANG = 1;
const SIGPIPE = 13;
const POSIX_SPAWN_SETSIGDEF = 0x04;
/** sockaddr_un: the family, then 108 bytes of path. */
const SOCKADDR_UN_SIZE = 110;
/** Room for glibc's posix_spawn_file_actions_t (80 bytes), posix_spawnattr_t (336) and sigset_t (128). */
const OPAQUE_SIZE = 512;

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  sigaddset: { parameters: ["buffer", "i32"], result: "i32" },
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Symbols | undefined;

/** libc's symbols, opened on first use. */
function symbols(): Symbols {
  if (Deno.build.os !== "linux") {
    throw new DenbdError("not-supported", "running an NBD server as a subprocess needs Linux");
  }
  return libc ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
}

/** The text of errno `code`. */
function errorText(lib: Symbols, code: number): string {
  const text = lib.strerror(code);
  return text ? Deno.UnsafePointerView.getCString(text) : `errno ${code}`;
}

/** The current errno. */
function errno(lib: Symbols): number {
  return new Deno.UnsafePointerView(lib.__errno_location()!).getInt32();
}

/** A NUL-terminated C string. */
function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

/** A NULL-terminated array of pointers to `strings` (kept alive by the caller's `keep`). */
function cStringArray(strings: readonly string[], keep: unknown[]): BigUint64Array<ArrayBuffer> {
  const array = new BigUint64Array(strings.length + 1);
  strings.forEach((text, i) => {
    const bytes = cString(text);
    keep.push(bytes);
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes)));
  });
  return array;
}

/** A listening Unix socket at `path`; its descriptor (close-on-exec). */
function listenOn(lib: Symbols, path: string): number {
  const address = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(new TextEncoder().encode(path), 2);
  const fd = lib.socket(AF_UNIX, SOCK_STREAM_CLOEXEC, 0);
  if (fd < 0) throw new DenbdError("io", `socket: ${errorText(lib, errno(lib))}`);
  if (lib.bind(fd, address, SOCKADDR_UN_SIZE) < 0 || lib.listen(fd, LISTEN_BACKLOG) < 0) {
    const text = errorText(lib, errno(lib));
    lib.close(fd);
    throw new DenbdError("io", `bind: ${path}: ${text}`);
  }
  return fd;
}

/** Start `argv` with `socket` as descriptor 3 and the activation variables; its pid. */
function spawnActivated(lib: Symbols, socket: number, argv: readonly string[]): number {
  const keep: unknown[] = [];
  const environment = Object.entries(Deno.env.toObject())
    .filter(([name]) => name !== "LISTEN_PID" && name !== "LISTEN_FDS")
    .map(([name, value]) => `${name}=${value}`);
  const args = cStringArray(["/bin/sh", "-c", ACTIVATE, argv[0], ...argv], keep);
  const env = cStringArray(["LISTEN_FDS=1", ...environment], keep);
  const actions = new Uint8Array(OPAQUE_SIZE);
  const attributes = new Uint8Array(OPAQUE_SIZE);
  const defaulted = new Uint8Array(OPAQUE_SIZE);
  lib.posix_spawn_file_actions_init(actions);
  lib.posix_spawnattr_init(attributes);
  try {
    lib.posix_spawn_file_actions_adddup2(actions, socket, 3);
    lib.sigemptyset(defaulted);
    lib.sigaddset(defaulted, SIGPIPE);
    lib.posix_spawnattr_setsigdefault(attributes, defaulted);
    lib.posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF);
    const pid = new Int32Array(1);
    const failure = lib.posix_spawnp(pid, cString("/bin/sh"), actions, attributes, args, env);
    if (failure !== 0) throw new DenbdError("io", `${argv[0]}: ${errorText(lib, failure)}`);
    return pid[0];
  } finally {
    lib.posix_spawn_file_actions_destroy(actions);
    lib.posix_spawnattr_destroy(attributes);
  }
}

/** Whether process `pid` (a child) has exited, reaping it if so. */
function reaped(lib: Symbols, pid: number): boolean {
  return lib.waitpid(pid, new Int32Array(1), WNOHANG) !== 0;
}

/**
 * Run `argv` (a command and its arguments, searched in PATH) as an NBD
 * server on a socket of its own. Fails when the command line is empty; a
 * command that cannot run shows when connecting to `uri` fails.
 */
export async function startActivatedServer(argv: readonly string[]): Promise<ActivatedServer> {
  if (argv.length === 0 || argv[0] === "") {
    throw new DenbdError("invalid", "missing command name in the subprocess's command line");
  }
  const lib = symbols();
  const dir = await Deno.makeTempDir({ dir: SOCKET_PARENT, prefix: "denbd-nbd-" });
  const path = `${dir}/sock`;
  let pid: number;
  try {
    const socket = listenOn(lib, path);
    try {
      pid = spawnActivated(lib, socket, argv);
    } finally {
      lib.close(socket);
    }
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    if (!reaped(lib, pid)) {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch { /* already gone */ }
      const deadline = Date.now() + STOP_GRACE_MS;
      while (!reaped(lib, pid)) {
        if (Date.now() > deadline) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* already gone */ }
        }
        await new Promise((resolve) => setTimeout(resolve, REAP_POLL_MS));
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    name: argv[0],
    uri: `nbd+unix:///?socket=${encodeURIComponent(path)}`,
    pid,
    stop: () => stopping ??= stop(),
  };
}
