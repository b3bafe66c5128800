/**
 * What clients cost `denbd serve` in memory, sampled as the server's RSS
 * (VmRSS in /proc/PID/status) against stated bounds: many idle connections,
 * connections that announce option data and never send it, and a client
 * that floods options without reading the answers (meanwhile other clients
 * are served, and the flooder is dropped at the handshake deadline); idle
 * clients inside TLS; and option data too long to keep, discarded and
 * refused as qemu-nbd does.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  denbdCommand,
  makeSparseImage,
  needs,
  type ServerProcess,
  type ServerStart,
  startDenbd,
  startQemuNbd,
  startServer,
  withServer,
  withTempDir,
} from "./harness.ts";
import { NBD_CLIENT_FLAG, NBD_LIMIT, NBD_OPT, NBD_REP } from "../../src/nbd/protocol.ts";
import { decodeOptionReplyHeader, encodeClientFlags, encodeOption } from "../../src/nbd/wire.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { writeAll } from "../../src/io/byte-stream.ts";
import { tlsFixtures } from "./tls_fixtures.ts";

const MiB = 1024 * 1024;

/** Idle clients held open at once. */
const IDLE_CLIENTS = 1000;
/** What those idle clients may add to the server's RSS, all together (qemu-nbd: ~6 KB each). */
const IDLE_CLIENTS_BOUND = 30 * MiB;
/** Idle clients held open inside TLS at once. */
const TLS_CLIENTS = 200;
/** What those TLS clients may add to the server's RSS, all together. */
const TLS_CLIENTS_BOUND = 30 * MiB;
/** What a client flooding options without reading may add to the server's RSS. */
const FLOOD_BOUND = 40 * MiB;

/** The resident set size of process `pid`, in bytes. */
function rss(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = status.match(/^VmRSS:\s+(\d+) kB$/m);
  assert.ok(kib, `no VmRSS for process ${pid}`);
  return Number(kib[1]) * 1024;
}

/** `denbd serve` allowed enough open files for the clients of these tests. */
function startWithManyFiles(start: ServerStart): Promise<ServerProcess> {
  const [command, prefix] = denbdCommand();
  return startServer(
    "sh",
    ["-c", 'ulimit -n 4096 2>/dev/null; exec "$@"', "sh", command, ...prefix, "serve"],
    start,
  );
}

/** Serve a small raw image to any number of clients (-e 0), persistently, with `flags`. */
async function withImageServer(
  body: (server: ServerProcess) => Promise<void>,
  flags: readonly string[] = [],
): Promise<void> {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 4 * MiB, [[0, 64 * 1024]]);
    const args = [...flags, "-f", "raw", "-t", "-e", "0", image];
    await withServer(startWithManyFiles, { args }, body);
  });
}

/** Whole lines from a child's standard output, one per call ("" once it ended). */
function lineReader(stdout: ReadableStream<Uint8Array>) {
  const chunks = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  return {
    async next(): Promise<string> {
      while (!pending.includes("\n")) {
        const { value, done } = await chunks.read();
        if (done) return pending;
        pending += value;
      }
      const line = pending.slice(0, pending.indexOf("\n"));
      pending = pending.slice(line.length + 1);
      return line;
    },
    cancel: () => chunks.cancel(),
  };
}

/**
 * Python holding `count` connections to `uri` open, each having read the
 * greeting and then sent `after` (a hex string, maybe empty); given an X.509
 * client directory, `after` is a STARTTLS request, whose reply is read before
 * the TLS handshake. It prints "ready" once all are open and closes them when
 * its standard input ends.
 */
const HOLD_CONNECTIONS = `
import socket, ssl, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
count, after = int(sys.argv[2]), bytes.fromhex(sys.argv[3])
tls = None
if len(sys.argv) > 4:
    tls = ssl.create_default_context(cafile=sys.argv[4] + "/ca-cert.pem")
    tls.load_cert_chain(sys.argv[4] + "/client-cert.pem", sys.argv[4] + "/client-key.pem")
def read(s, n):
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return data
held = []
for _ in range(count):
    s = socket.create_connection((url.hostname, url.port))
    read(s, 18)
    s.sendall(after)
    if tls:
        read(s, 20)
        s = tls.wrap_socket(s, server_hostname=url.hostname)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
`;

/**
 * Hold `count` connections open (each sending `after` past the greeting)
 * and return the server's RSS growth while they are open.
 */
async function rssGrowthWhileHolding(
  server: ServerProcess,
  count: number,
  after: Uint8Array,
  tlsClientDir?: string,
): Promise<number> {
  const before = rss(server.child.pid);
  const holder = new Deno.Command("sh", {
    args: [
      "-c",
      'ulimit -n 4096 2>/dev/null; exec "$@"',
      "sh",
      "/usr/bin/python3",
      "-c",
      HOLD_CONNECTIONS,
      server.uri,
      String(count),
      Array.from(after, (byte) => byte.toString(16).padStart(2, "0")).join(""),
      ...(tlsClientDir ? [tlsClientDir] : []),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const lines = lineReader(holder.stdout);
  try {
    assert.equal(await lines.next(), "ready");
    await new Promise((resolve) => setTimeout(resolve, 500)); // let the server settle
    return rss(server.child.pid) - before;
  } finally {
    await holder.stdin.close();
    await lines.cancel();
    assert.equal((await holder.status).code, 0);
  }
}

/** Client flags (fixed newstyle, no zeroes), then an `option` header claiming `length` bytes. */
function announceOption(option: number, length: number): Uint8Array {
  const header = encodeOption(option);
  new DataView(header.buffer).setUint32(12, length);
  const flags = encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES);
  return new Uint8Array([...flags, ...header]);
}

Deno.test(
  `${IDLE_CLIENTS} idle connections add less than ${IDLE_CLIENTS_BOUND / MiB} MiB to the server`,
  needs("nbdinfo"),
  async () => {
    await withImageServer(async (server) => {
      const growth = await rssGrowthWhileHolding(server, IDLE_CLIENTS, new Uint8Array());
      console.error(
        `RSS +${(growth / MiB).toFixed(1)} MiB for ${IDLE_CLIENTS} idle connections ` +
          `(${(growth / IDLE_CLIENTS / 1024).toFixed(1)} KiB each)`,
      );
      assert.ok(growth < IDLE_CLIENTS_BOUND, `RSS grew by ${growth} bytes`);
      await check("nbdinfo", ["--size", server.uri]);
    });
  },
);

Deno.test(
  `${IDLE_CLIENTS} clients announcing ${NBD_LIMIT.MAX_OPTION_LENGTH} bytes of option data ` +
    `and sending none add less than ${IDLE_CLIENTS_BOUND / MiB} MiB`,
  needs("nbdinfo"),
  async () => {
    await withImageServer(async (server) => {
      const announce = announceOption(NBD_OPT.LIST, NBD_LIMIT.MAX_OPTION_LENGTH);
      const growth = await rssGrowthWhileHolding(server, IDLE_CLIENTS, announce);
      console.error(`RSS +${(growth / MiB).toFixed(1)} MiB for ${IDLE_CLIENTS} announcing clients`);
      assert.ok(growth < IDLE_CLIENTS_BOUND, `RSS grew by ${growth} bytes`);
      await check("nbdinfo", ["--size", server.uri]);
    });
  },
);

Deno.test(
  `${TLS_CLIENTS} idle clients inside TLS add less than ${TLS_CLIENTS_BOUND / MiB} MiB`,
  needs("nbdinfo", "certtool"),
  async () => {
    const fixtures = await tlsFixtures();
    const tls = [
      "--object",
      `tls-creds-x509,id=tls0,endpoint=server,dir=${fixtures.server}`,
      "--tls-creds",
      "tls0",
    ];
    await withImageServer(async (server) => {
      const flags = encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES);
      const starttls = new Uint8Array([...flags, ...encodeOption(NBD_OPT.STARTTLS)]);
      const growth = await rssGrowthWhileHolding(server, TLS_CLIENTS, starttls, fixtures.client);
      console.error(
        `RSS +${(growth / MiB).toFixed(1)} MiB for ${TLS_CLIENTS} idle TLS connections ` +
          `(${(growth / TLS_CLIENTS / 1024).toFixed(1)} KiB each)`,
      );
      assert.ok(growth < TLS_CLIENTS_BOUND, `RSS grew by ${growth} bytes`);
      const uri = server.uri.replace(/^nbd:/, "nbds:") + `?tls-certificates=${fixtures.client}`;
      await check("nbdinfo", ["--size", uri]);
    }, tls);
  },
);

/**
 * Python that floods INFO options at `uri` without ever reading a reply,
 * until the server stops taking them (a send stalls for 2 s) or 256 MiB went;
 * prints "stalled BYTES", waits for a line on standard input, then prints
 * "reset" if the server has dropped the connection by then, else "open".
 */
const FLOOD_OPTIONS = `
import socket, struct, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
s = socket.create_connection((url.hostname, url.port))
s.recv(18)
s.sendall(struct.pack(">I", 3))
info = b"IHAVEOPT" + struct.pack(">IIIH", 6, 6, 0, 0)
batch = info * 4096
s.settimeout(2)
sent = 0
try:
    while sent < 256 << 20:
        s.sendall(batch)
        sent += len(batch)
except socket.timeout:
    pass
print("stalled", sent, flush=True)
sys.stdin.readline()
try:
    for _ in range(64):
        s.sendall(batch)
    print("open", flush=True)
except socket.timeout:
    print("open", flush=True)
except OSError:
    print("reset", flush=True)
`;

Deno.test(
  "a client flooding options without reading the replies stays bounded, others are served, " +
    "and it is dropped at the handshake deadline",
  needs("nbdinfo"),
  async () => {
    await withImageServer(async (server) => {
      const before = rss(server.child.pid);
      const started = Date.now();
      const flooder = new Deno.Command("/usr/bin/python3", {
        args: ["-c", FLOOD_OPTIONS, server.uri],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
        signal: AbortSignal.timeout(60_000),
      }).spawn();
      const lines = lineReader(flooder.stdout);
      const stalled = await lines.next();
      assert.match(stalled, /stalled \d+/);
      const sent = Number(stalled.split(" ")[1]);
      assert.ok(sent < 256 * MiB, `the server took all ${sent} bytes of options unanswered`);
      const growth = rss(server.child.pid) - before;
      console.error(`flood: ${sent} bytes of options taken, RSS +${(growth / MiB).toFixed(1)} MiB`);
      assert.ok(growth < FLOOD_BOUND, `RSS grew by ${growth} bytes`);
      await check("nbdinfo", ["--size", server.uri]);
      // The handshake deadline (10 s) ends the flooder even though its replies are stuck.
      await new Promise((resolve) =>
        setTimeout(resolve, Math.max(0, started + 12_000 - Date.now()))
      );
      const writer = flooder.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      assert.equal(await lines.next(), "reset");
      assert.equal((await flooder.status).code, 0);
    });
  },
);

Deno.test(
  "option data over 64 KiB is discarded and refused, then negotiation goes on, as with qemu-nbd",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const answers: Record<string, unknown> = {};
      for (const [name, starter] of [["denbd", startDenbd], ["qemu-nbd", startQemuNbd]] as const) {
        answers[name] = await withServer(
          starter,
          { args: ["-f", "raw", "-t", image] },
          async (server) => {
            const { hostname, port } = new URL(server.uri);
            const conn = await Deno.connect({ hostname, port: Number(port) });
            try {
              const reader = new BufferedReader(conn);
              await reader.readExact(18);
              await writeAll(conn, encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE));
              const replies = [];
              for (
                const [option, length] of [[1000, 4 * MiB], [NBD_OPT.LIST, 100_000], [
                  NBD_OPT.LIST,
                  0,
                ]]
              ) {
                const sending = writeAll(conn, encodeOption(option, new Uint8Array(length)));
                sending.catch(() => {}); // a server that drops us fails the read below first
                do {
                  const reply = decodeOptionReplyHeader((await reader.readExact(20)).slice());
                  await reader.skip(reply.length);
                  replies.push([reply.option, reply.type]);
                } while (replies.at(-1)![1] === NBD_REP.SERVER);
                await sending;
              }
              return replies;
            } finally {
              conn.close();
            }
          },
        );
      }
      assert.deepEqual(answers.denbd, [
        [1000, NBD_REP.ERR_UNSUP],
        [NBD_OPT.LIST, NBD_REP.ERR_INVALID],
        [NBD_OPT.LIST, NBD_REP.SERVER],
        [NBD_OPT.LIST, NBD_REP.ACK],
      ]);
      assert.deepEqual(answers.denbd, answers["qemu-nbd"]);
    });
  },
);
