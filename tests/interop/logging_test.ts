/**
 * The logs of `denbd serve` and `denbd daemon` with real clients (nbdinfo,
 * qemu-img, nbdsh): with -v or --log-level every line has a time and every
 * line about a client its number, one number per client and one client per
 * number (Unix clients too); a refused export is named, escaped, whether it
 * is unknown, asked for before TLS, or written to while read-only; a TLS
 * client refused by authz is named by number; --log-format=json writes one
 * parseable object per line with the documented fields; --log-level=warn
 * hides info and debug records. Without the flags, the daemon's stderr stays
 * as qemu-storage-daemon's (nothing about clients).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  denbdCommand,
  freePort,
  launch,
  makeSparseImage,
  needs,
  python,
  run,
  type ServerProcess,
  startDenbd,
  withTempDir,
} from "./harness.ts";
import { tlsFixtures } from "./tls_fixtures.ts";

const MiB = 1 << 20;

/** A text log line with a time, in its parts. */
interface TimedLine {
  readonly time: string;
  readonly program: string;
  readonly client?: number;
  readonly peer?: string;
  readonly message: string;
}

/** `TIME PROGRAM: [client N (PEER): ]MESSAGE`. */
const TIMED_LINE =
  /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (denbd(?: daemon)?): (?:client (\d+) \(([^)]*)\): )?(.*)$/;

/** Every line of `stderr`, each required to start with a time within the test's run. */
function timedLines(stderr: string, since: number): TimedLine[] {
  return stderr.split("\n").filter((line) => line !== "").map((line) => {
    const match = TIMED_LINE.exec(line);
    assert.ok(match, `a log line without a time: ${JSON.stringify(line)}\n${stderr}`);
    const [, time, program, client, peer, message] = match;
    const at = Date.parse(time);
    assert.ok(at >= since - 1000 && at <= Date.now() + 1000, `time out of the run: ${line}`);
    return { time, program, client: client ? Number(client) : undefined, peer, message };
  });
}

/**
 * Check that each client number has one peer, one "connected" and one
 * "disconnected after" line (its first and its last), and, for TCP, that
 * distinct numbers have distinct peers; returns the lines by number.
 */
function linesByClient(lines: readonly TimedLine[]): Map<number, TimedLine[]> {
  const byClient = new Map<number, TimedLine[]>();
  for (const line of lines) {
    if (line.client === undefined) continue;
    byClient.set(line.client, [...(byClient.get(line.client) ?? []), line]);
  }
  const tcpPeers = new Map<string, number>();
  for (const [client, own] of byClient) {
    const described = own.map((line) => `${line.client} (${line.peer}): ${line.message}`);
    assert.equal(new Set(own.map((line) => line.peer)).size, 1, described.join("\n"));
    assert.equal(own[0].message, "connected", described.join("\n"));
    assert.match(
      own.at(-1)!.message,
      /^disconnected after \d+(\.\d+)?s: \d+ reads, \d+ writes, \d+ failed$/,
      described.join("\n"),
    );
    assert.equal(own.filter((line) => line.message === "connected").length, 1);
    const peer = own[0].peer!;
    if (peer !== "unix") {
      assert.equal(tcpPeers.get(peer), undefined, `${peer} has two numbers`);
      tcpPeers.set(peer, client);
    }
  }
  return byClient;
}

/** The numbers of the clients one of whose lines matches `pattern`. */
function clientsSaying(byClient: Map<number, TimedLine[]>, pattern: RegExp): number[] {
  return [...byClient].filter(([, own]) => own.some((line) => pattern.test(line.message)))
    .map(([client]) => client);
}

/** Start a server with `start`, run `body`, stop it (exit 0 required); resolves to all of its stderr. */
async function logOf(
  start: () => Promise<ServerProcess>,
  body: (server: ServerProcess) => Promise<void>,
): Promise<string> {
  const server = await start();
  try {
    await body(server);
  } finally {
    assert.equal(await server.stop(), 0, server.stderr());
  }
  return server.stderr();
}

/** A 1 MiB raw image in `dir`. */
async function image(dir: string): Promise<string> {
  const path = join(dir, "disk.img");
  await makeSparseImage(path, MiB, [[0, 4096]]);
  return path;
}

/** `uri` with its export name replaced by `name` (percent-encoded). */
function withExport(uri: string, name: string): string {
  return uri.replace(/\/[^/?]*(\?|$)/, `/${encodeURIComponent(name)}$1`);
}

/** A WRITE sent to `uri` however the export is flagged (libnbd's strict mode off); fails if it succeeds. */
const WRITE_ANYWAY = `
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 512, 0)
    sys.exit("the write succeeded")
except nbd.Error as error:
    print(error.errno)
h.shutdown()
`;

/** A name a client may send: a control character, a quote, and more than the log keeps. */
const HOSTILE_NAME = "no\x1bpe'" + "n".repeat(300);
/** How the log shows it: escaped, cut after 256 characters. */
const HOSTILE_LOGGED = "'no\\x1bpe\\'" + "n".repeat(250) + "... (50 more characters)'";

Deno.test(
  "serve -v over TCP: times, one number per client, the refused export and the refused WRITE named",
  needs("nbdinfo", "qemu-img", "nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const since = Date.now();
      const stderr = await logOf(
        () =>
          startDenbd({
            args: ["-v", "-t", "-r", "-x", "disk", "-f", "raw", path],
            exportName: "disk",
          }),
        async (server) => {
          assert.equal((await run("nbdinfo", ["--size", server.uri])).stdout.trim(), String(MiB));
          const info = await run("qemu-img", ["info", "-f", "raw", server.uri]);
          assert.equal(info.code, 0, info.stderr);
          const unknown = await run("nbdinfo", [withExport(server.uri, HOSTILE_NAME)]);
          assert.notEqual(unknown.code, 0, "an unknown export is refused");
          const write = await python(WRITE_ANYWAY, [server.uri]);
          assert.equal(write.code, 0, write.stderr);
        },
      );
      const lines = timedLines(stderr, since);
      assert.ok(lines.every((line) => line.program === "denbd"));
      const byClient = linesByClient(lines);
      // The harness's probe of the port, nbdinfo, qemu-img, nbdinfo refused, nbdsh.
      assert.ok(byClient.size >= 5, `${byClient.size} clients:\n${stderr}`);
      assert.ok([...byClient.values()].every((own) => /^127\.0\.0\.1:\d+$/.test(own[0].peer!)));
      const refused = clientsSaying(
        byClient,
        new RegExp(`^refused export ${escapeRegExp(HOSTILE_LOGGED)} asked for with (GO|INFO): `),
      );
      assert.equal(refused.length, 1, stderr);
      assert.ok(!stderr.includes("\x1b"), "the control character never reaches the log");
      const writer = clientsSaying(byClient, /^WRITE on export 'disk' refused: /);
      assert.equal(writer.length, 1, stderr);
      assert.deepEqual(
        clientsSaying(byClient, /^using export 'disk', flags .*READ_ONLY/).filter((client) =>
          client === writer[0]
        ),
        writer,
        "the writer's lines carry the same number from its export choice to its refusal",
      );
      assert.equal(clientsSaying(byClient, /^using export 'disk'/).length, 3, stderr);
    });
  },
);

Deno.test(
  "serve -v over a Unix socket: Unix clients are told apart by their numbers",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const since = Date.now();
      const socket = join(dir, "nbd.sock");
      const stderr = await logOf(
        () => startDenbd({ args: ["-v", "-t", "-f", "raw", path], socket }),
        async (server) => {
          for (let i = 0; i < 3; i++) {
            assert.equal((await run("nbdinfo", ["--size", server.uri])).code, 0);
          }
        },
      );
      const byClient = linesByClient(timedLines(stderr, since));
      assert.deepEqual([...byClient.keys()].sort(), [1, 2, 3], stderr);
      for (const own of byClient.values()) assert.equal(own[0].peer, "unix");
      assert.equal(clientsSaying(byClient, /^using export ''/).length, 3, stderr);
    });
  },
);

Deno.test(
  "serve --log-format=json: one object per line with time, level, msg, client, peer, export",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const stderr = await logOf(
        () =>
          startDenbd({
            args: ["--log-format=json", "--log-level=debug", "-t", "-x", "disk", "-f", "raw", path],
            exportName: "disk",
          }),
        async (server) => {
          assert.equal((await run("nbdinfo", ["--size", server.uri])).code, 0);
          assert.notEqual((await run("nbdinfo", [withExport(server.uri, "nope\n")])).code, 0);
        },
      );
      const records = stderr.trimEnd().split("\n").map((line) => JSON.parse(line));
      for (const record of records) {
        assert.match(record.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.ok(["debug", "info", "warn", "error"].includes(record.level), record.level);
        assert.equal(typeof record.msg, "string");
        for (const key of Object.keys(record)) {
          assert.ok(["time", "level", "msg", "client", "peer", "export"].includes(key), key);
        }
      }
      const clients = records.filter((record) => record.client !== undefined);
      for (const record of clients) assert.match(record.peer, /^127\.0\.0\.1:\d+$/);
      const using = clients.find((record) => record.msg.startsWith("using export 'disk'"));
      assert.equal(using?.export, "disk", stderr);
      const later = clients.filter((record) => record.client === using.client).at(-1);
      assert.match(later.msg, /^disconnected after/);
      assert.equal(later.export, "disk", "the export stays on the client's later records");
      const refused = clients.find((record) => record.msg.startsWith("refused export"));
      assert.equal(refused?.export, "nope\n", stderr);
      assert.equal(refused.level, "debug");
      assert.match(refused.msg, /^refused export 'nope\\n' asked for with (GO|INFO): not present$/);
      assert.notEqual(refused.client, using.client);
    });
  },
);

Deno.test(
  "serve --log-level=warn: a client's warning is logged with its number and a time; info and debug are not",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const since = Date.now();
      const stderr = await logOf(
        () => startDenbd({ args: ["-v", "--log-level=warn", "-t", "-f", "raw", path] }),
        async (server) => {
          assert.equal((await run("nbdinfo", ["--size", server.uri])).code, 0);
          const port = Number(new URL(server.uri).port);
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          try {
            await readAtLeast(conn, 18); // the greeting
            await conn.write(new Uint8Array([0, 0, 0, 0x80])); // unknown client flags
            await readAtLeast(conn, 1).catch(() => {}); // the server closes
          } finally {
            conn.close();
          }
          await logged(server, /closing connection/);
        },
      );
      const lines = timedLines(stderr, since);
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0].message, /^closing connection: client sent unknown flags 0x80$/);
      assert.ok(lines[0].client! > 1, "the earlier clients were counted though not logged");
    });
  },
);

Deno.test(
  "serve with TLS: a GO before STARTTLS names its export; an authz refusal names the client",
  needs("nbdinfo", "certtool"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const f = await tlsFixtures();
      const since = Date.now();
      const stderr = await logOf(
        () =>
          startDenbd({
            args: [
              "--object",
              `tls-creds-x509,id=tls0,dir=${f.server},endpoint=server,verify-peer=on`,
              "--object",
              `authz-simple,id=az0,identity=${f.clientDn.replaceAll(",", ",,")}`,
              "--tls-creds=tls0",
              "--tls-authz=az0",
              "-v",
              "-t",
              "-x",
              "disk",
              "-f",
              "raw",
              path,
            ],
            exportName: "disk",
          }),
        async (server) => {
          const tls = server.uri.replace("nbd://", "nbds://");
          const allowed = await run("nbdinfo", ["--size", `${tls}?tls-certificates=${f.client}`]);
          assert.equal(allowed.code, 0, allowed.stderr);
          assert.notEqual((await run("nbdinfo", [server.uri])).code, 0, "plain text is refused");
          const other = await run("nbdinfo", [`${tls}?tls-certificates=${f.otherClient}`]);
          assert.notEqual(other.code, 0, "another DN is refused");
          await logged(server, /authz check/);
        },
      );
      const byClient = linesByClient(timedLines(stderr, since));
      assert.equal(
        clientsSaying(byClient, /^refused export 'disk' asked for with (GO|INFO): TLS required$/)
          .length,
        1,
        stderr,
      );
      const denied = clientsSaying(
        byClient,
        new RegExp(`^closing connection: TLS x509 authz check for ${f.otherClientDn} is denied`),
      );
      assert.equal(denied.length, 1, stderr);
      assert.equal(clientsSaying(byClient, /^TLS started: /).length, 1, "only the allowed client");
    });
  },
);

/** The arguments of `denbd daemon` exporting `path` as "disk" on `addr` (a --nbd-server value). */
function daemonArgs(path: string, addr: string): string[] {
  return [
    "--blockdev",
    `driver=file,node-name=file0,filename=${path.replaceAll(",", ",,")}`,
    "--nbd-server",
    addr,
    "--export",
    "type=nbd,id=export0,node-name=file0,name=disk,writable=on",
  ];
}

/** Start `denbd daemon` with `args`, listening where `listen` says. */
function startDaemon(
  args: readonly string[],
  uri: string,
  listen: Deno.ConnectOptions | string,
): Promise<ServerProcess> {
  const [command, prefix] = denbdCommand();
  return launch({ command, args: [...prefix, "daemon", ...args], uri, listen });
}

Deno.test(
  "daemon --log-level=debug: qemu-img clients numbered, the unknown export named; silent by default",
  needs("qemu-img"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const socket = join(dir, "nbd.sock");
      const addr = `addr.type=unix,addr.path=${socket}`;
      const uri = `nbd+unix:///disk?socket=${socket}`;
      const clients = async () => {
        for (const name of ["disk", "disk", "missing\t"]) {
          const target = `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`;
          const info = await run("qemu-img", ["info", "-f", "raw", target]);
          assert.equal(info.code === 0, name === "disk", info.stderr);
        }
      };
      const since = Date.now();
      const stderr = await logOf(
        () => startDaemon(["--log-level=debug", ...daemonArgs(path, addr)], uri, socket),
        clients,
      );
      const lines = timedLines(stderr, since);
      assert.ok(lines.every((line) => line.program === "denbd daemon"), stderr);
      const byClient = linesByClient(lines);
      assert.deepEqual([...byClient.keys()].sort(), [1, 2, 3], stderr);
      assert.equal(clientsSaying(byClient, /^using export 'disk'/).length, 2, stderr);
      assert.deepEqual(
        clientsSaying(byClient, /^refused export 'missing\\t' asked for with (GO|INFO): /),
        [3],
        stderr,
      );
      await Deno.remove(socket).catch(() => {});
      const quiet = await logOf(() => startDaemon(daemonArgs(path, addr), uri, socket), clients);
      assert.equal(quiet, "", "without --log-level the daemon says nothing about its clients");
    });
  },
);

Deno.test(
  "daemon --log-format=json over TCP: every line an object; the export on the client's records",
  needs("qemu-img"),
  async () => {
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const port = freePort();
      const uri = `nbd://127.0.0.1:${port}/disk`;
      const stderr = await logOf(
        () =>
          startDaemon(
            [
              "--log-format",
              "json",
              "--log-level",
              "debug",
              ...daemonArgs(path, `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`),
            ],
            uri,
            { hostname: "127.0.0.1", port },
          ),
        async () => {
          const info = await run("qemu-img", ["info", "-f", "raw", uri]);
          assert.equal(info.code, 0, info.stderr);
        },
      );
      const records = stderr.trimEnd().split("\n").map((line) => JSON.parse(line));
      const using = records.filter((record) => /^using export 'disk'/.test(record.msg));
      assert.equal(using.length, 1, stderr);
      assert.deepEqual(
        [using[0].level, using[0].export, typeof using[0].client],
        ["debug", "disk", "number"],
      );
      assert.match(using[0].peer, /^127\.0\.0\.1:\d+$/);
      const ids = new Set(records.map((record) => record.client).filter((id) => id !== undefined));
      assert.equal(ids.size, 2, `the port probe and qemu-img:\n${stderr}`);
    });
  },
);

Deno.test("daemon: a --log-level or --log-format it does not know is refused at once", async () => {
  const [command, prefix] = denbdCommand();
  for (const [flag, value] of [["--log-level", "loud"], ["--log-format", "xml"]]) {
    const result = await run(command, [...prefix, "daemon", flag, value]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`^denbd daemon: ${flag} ${value}: expected one of `));
  }
});

Deno.test(
  "--log-format=json: a failure at start-up is one error record, in serve and daemon alike",
  async () => {
    await withTempDir(async (dir) => {
      const [command, prefix] = denbdCommand();
      const missing = join(dir, "missing.img");
      const runs = [
        ["serve", "--log-format=json", missing],
        [
          "daemon",
          "--log-format=json",
          "--blockdev",
          `driver=file,node-name=f0,filename=${missing}`,
        ],
        ["daemon", "--log-format", "json", "stray"],
      ];
      for (const args of runs) {
        const result = await run(command, [...prefix, ...args]);
        assert.equal(result.code, 1, args.join(" "));
        const lines = result.stderr.trimEnd().split("\n");
        assert.equal(lines.length, 1, result.stderr);
        const record = JSON.parse(lines[0]);
        assert.equal(record.level, "error");
        assert.ok(!Number.isNaN(Date.parse(record.time)), record.time);
        assert.match(
          record.msg,
          args.includes("stray") ? /^stray: Unexpected argument$/ : /missing\.img/,
        );
      }
      const text = await run(command, [...prefix, "serve", missing]);
      assert.equal(text.code, 1);
      assert.match(text.stderr, /^denbd serve: .*missing\.img/, "text stays as it was");
    });
  },
);

/** Wait (bounded) until the server's log matches `pattern`. */
async function logged(server: ServerProcess, pattern: RegExp): Promise<void> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    if (pattern.test(server.stderr())) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.match(server.stderr(), pattern);
}

/** Read at least `count` bytes from `conn` (bounded); rejects at the end of the stream. */
async function readAtLeast(conn: Deno.Conn, count: number): Promise<void> {
  const buffer = new Uint8Array(4096);
  const deadline = setTimeout(() => conn.close(), 10_000);
  try {
    for (let got = 0; got < count;) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("end of stream");
      got += n;
    }
  } finally {
    clearTimeout(deadline);
  }
}

/** `text` as a regular expression matching it literally. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
