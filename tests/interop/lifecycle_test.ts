/**
 * The NBD server's lifecycle under stress and at its end, for `denbd serve`
 * and `denbd daemon`: the handshake deadline (`--handshake-limit`,
 * `handshake-max-seconds`), accepting when out of file descriptors, and
 * SIGTERM: `serve` answers the requests in flight and refuses later ones
 * with ESHUTDOWN; under load neither loses an acknowledged write, and both
 * exit promptly and clean up their socket (and the daemon its pid file).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  delay,
  denbdCommand,
  exists,
  freePort,
  launch,
  makeSparseImage,
  needs,
  qmpMonitorArgs,
  type ServerProcess,
  startDenbd,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { daemonProgram, PythonHelper, QmpSession } from "./daemon_harness.ts";
import { withSlowImage } from "./slow_image.ts";

const MiB = 1024 * 1024;

/** Poll `condition` every 20 ms for up to `ms`; whether it became true. */
async function eventually(condition: () => boolean | Promise<boolean>, ms: number) {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await delay(20)) {
    if (await condition()) return true;
  }
  return await condition();
}

/**
 * Connect to the Unix socket `path`, read the server's 18-byte greeting, then say nothing: resolves
 * with the seconds until the server hung up, or null if it had not after
 * `waitMs` (the client then hangs up itself).
 */
async function silentClient(path: string, waitMs: number): Promise<number | null> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const greeting = new Uint8Array(18);
    for (let got = 0; got < greeting.length;) {
      const count = await conn.read(greeting.subarray(got));
      assert.notEqual(count, null, "the server hung up before its greeting");
      got += count!;
    }
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hungUp = conn.read(new Uint8Array(1)).then(
      () => (performance.now() - started) / 1000,
      () => (performance.now() - started) / 1000,
    );
    const silent = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), waitMs));
    const result = await Promise.race([hungUp, silent]);
    clearTimeout(timer);
    return result;
  } finally {
    try {
      conn.close();
    } catch {
      // The server closed it first.
    }
  }
}

Deno.test("--handshake-limit drops a silent client after N seconds; 0 never does", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, MiB);
    const socket = join(dir, "nbd.sock");
    const cases: [string, (seconds: number | null) => void][] = [
      ["1", (seconds) => assert.ok(seconds !== null && seconds > 0.5 && seconds < 4, `${seconds}`)],
      ["0", (seconds) => assert.equal(seconds, null, "no limit")],
      // Beyond the longest a single timer waits (2^31 - 1 ms).
      ["2147483647", (seconds) => assert.equal(seconds, null, "a limit of 68 years")],
    ];
    for (const [limit, expect] of cases) {
      await withStarted(
        () =>
          startDenbd({ args: ["-t", "-f", "raw", `--handshake-limit=${limit}`, image], socket }),
        async () => expect(await silentClient(socket, 2000)),
      );
    }
  });
});

Deno.test(
  "the daemon's handshake-max-seconds, on the command line and over QMP",
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const socket = join(dir, "nbd.sock");
      const qmp = join(dir, "qmp.sock");
      const [command, prefix] = daemonProgram("denbd");
      const node = ["--blockdev", `driver=file,node-name=disk,filename=${image}`];
      const exportArgs = ["--export", "nbd,id=e0,node-name=disk,name="];
      await withStarted(
        () =>
          launch({
            command,
            args: [
              ...prefix,
              ...node,
              "--nbd-server",
              `addr.type=unix,addr.path=${socket},handshake-max-seconds=1`,
              ...exportArgs,
            ],
            uri: "",
            listen: socket,
          }),
        async () => {
          const seconds = await silentClient(socket, 4000);
          assert.ok(seconds !== null && seconds > 0.5 && seconds < 4, `${seconds}`);
        },
      );
      await withStarted(
        () =>
          launch({
            command,
            args: [
              ...prefix,
              ...node,
              ...qmpMonitorArgs(qmp),
            ],
            uri: "",
            listen: qmp,
          }),
        async () => {
          const session = await QmpSession.connect(qmp);
          try {
            await session.command('{"execute": "qmp_capabilities"}');
            const started = await session.command(JSON.stringify({
              execute: "nbd-server-start",
              arguments: {
                addr: { type: "unix", data: { path: socket } },
                "handshake-max-seconds": 4294967295,
              },
            }));
            assert.deepEqual(started, [{ return: {} }]);
            const refused = await session.command(JSON.stringify({
              execute: "nbd-server-start",
              arguments: {
                addr: { type: "unix", data: { path: socket } },
                "handshake-max-seconds": -1,
              },
            }));
            assert.match(JSON.stringify(refused), /handshake-max-seconds/);
            assert.equal(await silentClient(socket, 2000), null, "the limit is the largest uint32");
          } finally {
            await session.close();
          }
        },
      );
      const help = await check(command, [...prefix, "--help"]);
      assert.match(help, /handshake-max-seconds=<uint32>/);
    });
  },
);

Deno.test(
  "out of file descriptors, serve retries accepting quietly and serves again once some are free",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const port = freePort();
      const [deno, prefix] = denbdCommand();
      const serve = [...prefix, "serve", "-t", "-e", "0", "-b", "127.0.0.1", "-p", String(port)];
      const server = await launch({
        command: "/bin/sh",
        args: ["-c", 'ulimit -n 64 && exec "$@"', "sh", deno, ...serve, "-f", "raw", image],
        uri: `nbd://127.0.0.1:${port}/`,
        listen: { hostname: "127.0.0.1", port },
      });
      const clients: Deno.Conn[] = [];
      try {
        // More clients than the server has descriptors for.
        for (let i = 0; i < 100; i++) {
          clients.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        }
        assert.ok(
          await eventually(() => /accept failed/.test(server.stderr()), 5000),
          `the server ran out of descriptors: ${server.stderr()}`,
        );
        // Clients leaving free descriptors: each is taken by a waiting client.
        for (const client of clients.splice(0, 10)) client.close();
        await delay(2000);
        const lines = server.stderr().trim().split("\n");
        // Before: a warning for every attempt, hundreds of thousands of lines in seconds.
        // (The runtime may add one line of its own, about certificates it could not load.)
        const ours = lines.filter((line) => line.startsWith("denbd"));
        assert.ok(lines.length <= 2, `${lines.length} lines:\n${lines.slice(0, 5).join("\n")}`);
        assert.equal(ours.length, 1, ours.join("\n"));
        assert.match(ours[0], /accept failed: .*Too many open files/);
        for (const client of clients.splice(0)) client.close();
        const size = await check("nbdinfo", ["--size", server.uri]);
        assert.equal(size.trim(), String(MiB));
      } finally {
        for (const client of clients) client.close();
        assert.equal(await server.stop(), 0);
      }
    });
  },
);

/** Seconds each read of the slow image takes. */
const SLOW_READ_S = 2;

/**
 * A libnbd client of argv[1] that starts a read at offset argv[2] and prints
 * "sent"; on a line from stdin it starts a second read; then it prints how
 * each ended ("read" or the error's errno name).
 */
const TWO_READS_SCRIPT = String.raw`
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
first = h.aio_pread(nbd.Buffer(4096), int(sys.argv[2]))
print("sent", flush=True)
sys.stdin.readline()
second = h.aio_pread(nbd.Buffer(4096), 0)
for name, cookie in (("first", first), ("second", second)):
    try:
        while not h.aio_command_completed(cookie):
            h.poll(-1)
        print(name, "read", flush=True)
    except nbd.Error as error:
        print(name, errno.errorcode.get(error.errno, error.errno), flush=True)
`;

Deno.test(
  "SIGTERM: serve answers the request in flight, refuses a later one with ESHUTDOWN, closes a client in its handshake",
  needs("nbdsh", "nbdfuse", "nbdkit"),
  async () => {
    await withSlowImage(SLOW_READ_S, async (image) => {
      await withTempDir(async (dir) => {
        const socket = join(dir, "nbd.sock");
        const server = await startDenbd({
          args: ["-t", "-v", "-e", "2", "-r", "-f", "raw", image],
          socket,
        });
        const reader = new PythonHelper(TWO_READS_SCRIPT, [
          `nbd+unix:///?socket=${socket}`,
          String(8 * MiB),
        ]);
        try {
          const silent = silentClient(socket, 10_000);
          assert.equal(await reader.line(), "sent");
          // Time for the server to start the read.
          await delay(300);
          server.child.kill("SIGTERM");
          const stopped = performance.now();
          assert.ok(await eventually(() => /stopping: signal/.test(server.stderr()), 5000));
          await reader.send("go");
          assert.equal(await reader.line(), "first read", "the read in flight was answered");
          assert.equal(await reader.line(), "second ESHUTDOWN");
          assert.ok((await silent) !== null, "the client in its handshake was closed");
          assert.equal(await server.exited(), 0);
          const seconds = (performance.now() - stopped) / 1000;
          assert.ok(seconds < SLOW_READ_S + 3, `exited ${seconds}s after SIGTERM`);
          assert.equal(await exists(socket), false, "socket removed");
        } finally {
          await reader.finish();
          await server.stop().catch(() => {});
        }
      });
    });
  },
);

/**
 * A writer on argv[1] that writes 4 KiB blocks argv[2] .. argv[2]+argv[3]-1
 * in order, 8 requests in flight, each block filled with its number + 1
 * (as 8-byte big-endian words); every other write with FUA, a flush after
 * every 16. Prints "ready" once argv[4] writes are acknowledged (or all are
 * done), then goes on until the connection ends or refuses a request, and
 * prints the acknowledged blocks and how the requests ended, as JSON.
 */
const WRITER_SCRIPT = String.raw`
import errno, json, nbd, struct, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
first, count, ready_after = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
B = 4096
pending = {}
acked = []
outcomes = {}
next_block = first
sending = True
ready = False
def settle():
    global sending
    for cookie, block in list(pending.items()):
        try:
            if not h.aio_command_completed(cookie):
                continue
            outcome = "ok"
            if block is not None:
                acked.append(block)
        except nbd.Error as error:
            outcome = errno.errorcode.get(error.errno, str(error.errno))
            sending = False
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        del pending[cookie]
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        while sending and len(pending) < 8 and next_block < first + count:
            block = next_block
            next_block += 1
            data = struct.pack(">Q", block + 1) * (B // 8)
            flags = nbd.CMD_FLAG_FUA if block % 2 else 0
            pending[h.aio_pwrite(data, block * B, flags=flags)] = block
            if block % 16 == 15:
                pending[h.aio_flush()] = None
    except nbd.Error:
        sending = False
    if not ready and (len(acked) >= ready_after or not pending):
        print("ready", flush=True)
        ready = True
    if not pending:
        if next_block >= first + count or not sending:
            break
        continue
    try:
        h.poll(1000)
    except nbd.Error:
        sending = False
    settle()
    if h.aio_is_dead() or h.aio_is_closed():
        settle()
        outcomes["unfinished"] = len(pending)
        break
print(json.dumps({"acked": acked, "outcomes": outcomes}), flush=True)
`;

/** Blocks per writer: 64 MiB each. */
const WRITER_BLOCKS = 16384;

/**
 * Two writers on `uri`, SIGTERM to `server` once both have writes
 * acknowledged; the server must exit 0 within a few seconds and every
 * acknowledged block be in `image`. Returns how the writers' requests ended.
 */
async function stopUnderLoad(
  server: ServerProcess,
  uri: string,
  image: string,
): Promise<Record<string, number>[]> {
  const writers = [0, 1].map((i) =>
    new PythonHelper(WRITER_SCRIPT, [uri, String(i * WRITER_BLOCKS), String(WRITER_BLOCKS), "500"])
  );
  const reports: { acked: number[]; outcomes: Record<string, number> }[] = [];
  try {
    for (const writer of writers) assert.equal(await writer.line(20_000), "ready");
    server.child.kill("SIGTERM");
    const stopped = performance.now();
    assert.equal(await server.exited(10_000), 0);
    const seconds = (performance.now() - stopped) / 1000;
    assert.ok(seconds < 8, `exited ${seconds}s after SIGTERM`);
    for (const writer of writers) reports.push(JSON.parse(await writer.line(20_000)));
  } finally {
    await Promise.all(writers.map((writer) => writer.finish()));
  }
  const file = await Deno.open(image);
  try {
    const word = new Uint8Array(8);
    for (const { acked } of reports) {
      assert.ok(acked.length >= 500);
      for (const block of acked) {
        for (const at of [block * 4096, block * 4096 + 4088]) {
          await file.seek(at, Deno.SeekMode.Start);
          assert.equal(await file.read(word), 8);
          const found = new DataView(word.buffer).getBigUint64(0);
          assert.equal(found, BigInt(block + 1), `acknowledged block ${block} is on disk`);
        }
      }
    }
  } finally {
    file.close();
  }
  return reports.map((report) => report.outcomes);
}

Deno.test(
  "graceful stop under load: serve, SIGTERM with writers in flight, no acknowledged write lost",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 2 * WRITER_BLOCKS * 4096);
      const socket = join(dir, "nbd.sock");
      const pidFile = join(dir, "serve.pid");
      const server = await startDenbd({
        args: ["-t", "-e", "2", "-f", "raw", "--pid-file", pidFile, image],
        socket,
      });
      try {
        const outcomes = await stopUnderLoad(server, `nbd+unix:///?socket=${socket}`, image);
        // Every request was answered or refused with ESHUTDOWN; none lost its reply (ENOTCONN).
        for (const ended of outcomes) {
          for (const outcome of Object.keys(ended)) {
            assert.ok(["ok", "ESHUTDOWN"].includes(outcome), JSON.stringify(outcomes));
          }
        }
        assert.equal(await exists(socket), false, "socket removed");
      } finally {
        await server.stop().catch(() => {});
      }
    });
  },
);

Deno.test(
  "graceful stop under load: the daemon, SIGTERM with writers in flight, no acknowledged write lost",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 2 * WRITER_BLOCKS * 4096);
      const socket = join(dir, "nbd.sock");
      const pidFile = join(dir, "daemon.pid");
      const [command, prefix] = daemonProgram("denbd");
      const server = await launch({
        command,
        args: [
          ...prefix,
          "--blockdev",
          `driver=file,node-name=disk,filename=${image}`,
          "--nbd-server",
          `addr.type=unix,addr.path=${socket}`,
          "--export",
          "nbd,id=e0,node-name=disk,name=,writable=on",
          "--pidfile",
          pidFile,
        ],
        uri: "",
        listen: socket,
      });
      try {
        await stopUnderLoad(server, `nbd+unix:///?socket=${socket}`, image);
        assert.equal(await exists(socket), false, "socket removed");
        assert.equal(await exists(pidFile), false, "pid file removed");
      } finally {
        await server.stop().catch(() => {});
      }
    });
  },
);
