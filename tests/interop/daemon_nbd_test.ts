/**
 * Differential tests of the NBD side of `denbd daemon`: qemu-storage-daemon
 * 7.2 and denbd get the same command line and QMP commands (exports with
 * allocation depth and dirty bitmaps), real clients write through them
 * (qemu-io over NBD), and what clients then see must be the same: handshake
 * replies and transmission flags, `nbdinfo --list --json`, maps of every
 * metadata context, NBD_OPT_LIST_META_CONTEXT answers, the images' content,
 * bitmap counts, export removal with a client connected (safe refused, hard
 * drops it), the lifecycle of an export whose dropped client still has a
 * request in flight (on an image made slow with nbdkit's delay filter and
 * nbdfuse), and max-connections.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeSparseImage, needs, sha256File } from "./harness.ts";
import { withSlowImage } from "./slow_image.ts";
import {
  type DaemonKind,
  type DaemonPair,
  type DaemonSpec,
  Differences,
  type Json,
  NODES,
  normalise,
  type PairOptions,
  PythonHelper,
  qmp,
  runForBoth,
  withDaemonPair,
} from "./daemon_harness.ts";

const MiB = 1 << 20;
const SOCKET = "$DIR/nbd.sock";

function uri(name: string): string {
  return `nbd+unix:///${encodeURIComponent(name)}?socket=${SOCKET}`;
}

async function images(dir: string): Promise<void> {
  await makeSparseImage(join(dir, "d.img"), 64 * MiB, [[0, 65536], [8 * MiB, 131072]]);
  await makeSparseImage(join(dir, "e.img"), 4 * MiB, [[MiB, 4096]]);
}

/** Nodes and exports given on the command line. */
function commandLine(maxConnections: number): string[] {
  return [
    ...NODES,
    "--nbd-server",
    `addr.type=unix,addr.path=${SOCKET},max-connections=${maxConnections}`,
    "--export",
    "nbd,id=plain,node-name=ro0,name=plain",
    "--export",
    "nbd,id=ad,node-name=r0,name=ad,allocation-depth=on,description=hello",
    "--export",
    "nbd,id=wt,node-name=f0,name=wt,writable=on,writethrough=on",
  ];
}

/** Exports with bitmaps, added over QMP (bitmaps cannot be made on the command line). */
const BITMAP_EXPORTS: Json[] = [
  qmp("block-dirty-bitmap-add", { node: "r0", name: "b0" }),
  qmp("block-dirty-bitmap-add", { node: "r0", name: "b1", disabled: true }),
  qmp("block-dirty-bitmap-add", { node: "f0", name: "fb", granularity: 4096 }),
  qmp("block-export-add", {
    type: "nbd",
    id: "full",
    "node-name": "r0",
    name: "full",
    writable: true,
    "allocation-depth": true,
    bitmaps: ["b0", "b1", { node: "f0", name: "fb" }],
  }),
  qmp("block-export-add", {
    type: "nbd",
    id: "empty",
    "node-name": "r0",
    name: "",
  }),
];

const EXPORTS = ["plain", "ad", "wt", "full", ""];

/**
 * Prints the raw NBD_OPT_GO replies of each export (argv[3:]), with and
 * without structured replies; sorted unless argv[2] is "in-order".
 */
const HANDSHAKE_SCRIPT = String.raw`
import json, socket, struct, sys
OPT_MAGIC = 0x49484156454F5054
def exchange(path, name, structured):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    def recv(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise EOFError("closed")
            data += chunk
        return data
    def option(code, data):
        s.sendall(struct.pack(">QII", OPT_MAGIC, code, len(data)) + data)
        replies = []
        while True:
            magic, opt, kind, length = struct.unpack(">QIII", recv(20))
            replies.append([opt, hex(kind), recv(length).hex()])
            if kind == 1 or kind & 0x80000000:
                return replies
    magic, ihave, flags = struct.unpack(">QQH", recv(18))
    s.sendall(struct.pack(">I", 3))
    result = {"greeting": [hex(magic), hex(ihave), hex(flags)]}
    if structured:
        result["structured"] = option(8, b"")
    # NBD_OPT_GO asking for NBD_INFO_NAME, DESCRIPTION and BLOCK_SIZE.
    go = struct.pack(">I", len(name.encode())) + name.encode() + struct.pack(">HHHH", 3, 1, 2, 3)
    result["go"] = option(7, go)
    if result["go"][-1][1] == "0x1":
        # NBD_CMD_DISC.
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 1, 0, 0))
    else:
        result["abort"] = option(2, b"")
    s.close()
    return result
out = {}
order = sys.argv[2] == "in-order"
for name in sys.argv[3:]:
    for structured in (False, True):
        result = exchange(sys.argv[1], name, structured)
        if not order:
            result["go"].sort()
        out[name + ("|structured" if structured else "")] = result
print(json.dumps(out, sort_keys=True))
`;

/** Prints the NBD_OPT_LIST_META_CONTEXT answers of each export to each query. */
const META_CONTEXT_SCRIPT = String.raw`
import json, nbd, sys
QUERIES = [None, "qemu:", "qemu:dirty-bitmap:", "qemu:allocation-depth",
           "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:fb",
           "qemu:dirty-bitmap:nope", "qemu:dirty-bitmap", "qemu", "base:", "base:allocation",
           "base:allocation:x", "", "other:"]
out = {}
for name in sys.argv[2:]:
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_export_name(name)
    h.connect_unix(sys.argv[1])
    for query in QUERIES:
        h.clear_meta_contexts()
        if query is not None:
            h.add_meta_context(query)
        found = []
        try:
            count = h.opt_list_meta_context(lambda context: found.append(context) or 0)
            out[name + "|" + str(query)] = {"count": count, "contexts": found}
        except nbd.Error as error:
            out[name + "|" + str(query)] = {"error": str(error)}
    h.opt_abort()
print(json.dumps(out, sort_keys=True))
`;

/**
 * A libnbd client that connects to the export argv[2] and then obeys stdin:
 * "read" (prints "ok" or the error), "quit" (disconnects and exits).
 */
const HOLDER_SCRIPT = String.raw`
import nbd, sys
h = nbd.NBD()
h.set_export_name(sys.argv[2])
h.connect_unix(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "read":
        try:
            h.pread(512, 0)
            print("ok", flush=True)
        except nbd.Error as error:
            print("error:", error, flush=True)
    elif line.strip() == "quit":
        try:
            h.shutdown()
        except nbd.Error:
            pass
        break
print("bye", flush=True)
`;

/**
 * A raw client that prints "connected", then "greeting" once the server's
 * greeting arrives, then ends the handshake politely (NBD_OPT_ABORT).
 */
const WAITER_SCRIPT = String.raw`
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print("connected", flush=True)
data = b""
while len(data) < 18:
    chunk = s.recv(18 - len(data))
    if not chunk:
        print("closed", flush=True)
        sys.exit(0)
    data += chunk
print("greeting", data[:8].decode(), flush=True)
s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 2, 0))
s.recv(20)
s.close()
`;

const PEERS = ["qemu-storage-daemon", "qemu-io", "nbdinfo"];

async function withExports(
  maxConnections: number,
  body: (pair: DaemonPair, differences: Differences) => Promise<void>,
  options: PairOptions = {},
): Promise<void> {
  const spec: DaemonSpec = { args: commandLine(maxConnections), setup: images };
  await withDaemonPair(spec, async (pair) => {
    const differences = new Differences();
    differences.add(await pair.script(BITMAP_EXPORTS));
    await body(pair, differences);
    differences.assertNone();
  }, options);
}

/** Compare what a command prints for both daemons. */
async function sameOutput(
  pair: DaemonPair,
  differences: Differences,
  command: string,
  args: string[],
): Promise<void> {
  const result = await runForBoth(pair, command, args);
  differences.check(`${command} ${args.join(" ")}`, result.qsd, result.denbd);
}

/** `nbdinfo --list --json` without the URIs (which name each daemon's socket). */
async function listing(pair: DaemonPair, differences: Differences): Promise<void> {
  const result = await runForBoth(pair, "nbdinfo", ["--list", "--json", uri("")]);
  const parse = (stdout: string) => {
    const value = JSON.parse(stdout) as { exports: Json[] };
    for (const entry of value.exports) delete entry.uri;
    return value;
  };
  assert.equal(result.qsd.code, 0, result.qsd.stderr);
  differences.check(
    "nbdinfo --list --json",
    parse(result.qsd.stdout),
    result.denbd.code === 0 ? parse(result.denbd.stdout) : result.denbd,
  );
}

async function python(
  pair: DaemonPair,
  differences: Differences,
  label: string,
  script: string,
  args: readonly string[] = [],
  exports: readonly string[] = EXPORTS,
) {
  const result = await runForBoth(pair, "/usr/bin/python3", [
    "-c",
    script,
    SOCKET,
    ...args,
    ...exports,
  ]);
  assert.equal(result.qsd.code, 0, `${label} against qsd: ${result.qsd.stderr}`);
  differences.check(label, result.qsd, result.denbd);
}

Deno.test(
  "the same exports look the same to NBD clients: handshake, listing, meta contexts",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair, differences) => {
      await listing(pair, differences);
      await python(pair, differences, "NBD_OPT_GO replies", HANDSHAKE_SCRIPT, ["sorted"]);
      await python(pair, differences, "NBD_OPT_LIST_META_CONTEXT", META_CONTEXT_SCRIPT);
      await sameOutput(pair, differences, "nbdinfo", ["--json", uri("ad")]);
      await sameOutput(pair, differences, "nbdinfo", [uri("nope")]);
      await sameOutput(pair, differences, "nbdinfo", ["--size", uri("")]);
    });
  },
);

Deno.test(
  "writes through the exports: the same maps, bitmaps, contents and block nodes",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair, differences) => {
      const writes = [
        ["full", ["write -P 0x55 0 4k", "write -P 0x66 1M 64k", "write -z 4M 128k"]],
        ["wt", ["write -P 0x77 16M 64k", "write -z 8M 64k", "discard 32M 1M"]],
      ] as const;
      for (const [name, commands] of writes) {
        const result = await runForBoth(pair, "qemu-io", [
          "-f",
          "raw",
          ...commands.flatMap((command) => ["-c", command]),
          uri(name),
        ]);
        const strip = (text: string) => text.replace(/^.*ops\/sec\)\n/gm, "");
        assert.equal(result.qsd.code, 0, `qemu-io against qsd: ${result.qsd.stderr}`);
        differences.check(
          `qemu-io ${commands.join("; ")} (${name})`,
          { ...result.qsd, stdout: strip(result.qsd.stdout) },
          { ...result.denbd, stdout: strip(result.denbd.stdout) },
        );
      }
      for (const name of ["full", "ad", "wt", "plain"]) {
        for (const context of ["", "=qemu:allocation-depth"]) {
          await sameOutput(pair, differences, "nbdinfo", [`--map${context}`, uri(name)]);
        }
      }
      for (const bitmap of ["b0", "b1", "fb"]) {
        await sameOutput(pair, differences, "nbdinfo", [
          `--map=qemu:dirty-bitmap:${bitmap}`,
          uri("full"),
        ]);
      }
      await sameOutput(pair, differences, "nbdinfo", ["--map=qemu:dirty-bitmap:b0", uri("ad")]);
      await sameOutput(pair, differences, "nbdinfo", ["--map=qemu:dirty-bitmap:b0", uri("")]);
      await sameOutput(pair, differences, "nbdinfo", ["--map", "--totals", uri("wt")]);
      differences.add(await pair.script([qmp("query-named-block-nodes")]));
      const digests = await pair.both((daemon) => sha256File(daemon.fill("$DIR/d.img")));
      differences.check("image content after the writes", digests.qsd, digests.denbd);
      // The bitmaps are busy while exported, free once the export is gone.
      differences.add(
        await pair.script([
          qmp("block-dirty-bitmap-clear", { node: "r0", name: "b0" }),
          qmp("block-export-del", { id: "full" }),
          qmp("block-dirty-bitmap-clear", { node: "r0", name: "b0" }),
          qmp("block-dirty-bitmap-merge", {
            node: "r0",
            target: "b1",
            bitmaps: [{ node: "f0", name: "fb" }],
          }),
          qmp("query-named-block-nodes"),
        ]),
      );
    });
  },
);

Deno.test(
  "export removal with a client connected: safe is refused, hard drops the client",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair, differences) => {
      const holders = await pair.both(async (daemon) => {
        const holder = new PythonHelper(HOLDER_SCRIPT, [daemon.fill(SOCKET), "ad"]);
        assert.equal(await holder.line(), "ready", `${daemon.kind}: the client connected`);
        return holder;
      });
      try {
        differences.add(
          await pair.script([
            qmp("block-export-del", { id: "ad" }),
            qmp("block-export-del", { id: "ad", mode: "safe" }),
            qmp("nbd-server-remove", { name: "ad" }),
            qmp("query-block-exports"),
            // Other exports are free to go.
            qmp("block-export-del", { id: "plain" }),
          ]),
        );
        const before = await pair.both(async (daemon) => {
          await holders[daemon.kind].send("read");
          return await holders[daemon.kind].line();
        });
        differences.check("a read before the hard removal", before.qsd, before.denbd);
        // The return comes first; the event once the dropped client is gone.
        differences.add(
          await pair.script([
            { send: qmp("block-export-del", { id: "ad", mode: "hard" }), events: 1 },
            qmp("query-block-exports"),
            qmp("block-export-add", { type: "nbd", id: "ad", "node-name": "r0", name: "ad" }),
          ]),
        );
        const after = await pair.both(async (daemon) => {
          await holders[daemon.kind].send("read");
          return await holders[daemon.kind].line();
        });
        assert.match(after.qsd, /^error: /, "qsd dropped its client");
        differences.check("a read after the hard removal", after.qsd, after.denbd);
        // nbd-server-remove hard, with a new client.
        const second = await pair.both(async (daemon) => {
          const holder = new PythonHelper(HOLDER_SCRIPT, [daemon.fill(SOCKET), "ad"]);
          const line = await holder.line();
          return { holder, line };
        });
        try {
          differences.check("second client", second.qsd.line, second.denbd.line);
          differences.add(
            await pair.script([
              qmp("nbd-server-remove", { name: "ad" }),
              { send: qmp("nbd-server-remove", { name: "ad", mode: "hard" }), events: 1 },
              qmp("query-block-exports"),
            ]),
          );
        } finally {
          await Promise.all([second.qsd.holder.finish(), second.denbd.holder.finish()]);
        }
      } finally {
        const ends = await pair.both((daemon) => holders[daemon.kind].finish());
        differences.check("the dropped client's exit", ends.qsd.code, ends.denbd.code);
      }
    });
  },
);

Deno.test(
  "max-connections=2: a third client gets no greeting until one of two leaves",
  needs(...PEERS),
  async () => {
    await withExports(2, async (pair, differences) => {
      const observed = await pair.both(async (daemon) => {
        const socket = daemon.fill(SOCKET);
        const seen: string[] = [];
        const first = new PythonHelper(HOLDER_SCRIPT, [socket, "plain"]);
        const second = new PythonHelper(HOLDER_SCRIPT, [socket, "ad"]);
        let third: PythonHelper | undefined;
        try {
          seen.push(await first.line(), await second.line());
          // Only now: started earlier, the third could take a slot before the two holders.
          third = new PythonHelper(WAITER_SCRIPT, [socket]);
          seen.push(await third.line());
          seen.push(`third before: ${await third.line(1500)}`);
          await first.send("quit");
          seen.push(await first.line());
          seen.push(`third after: ${await third.line(5000)}`);
          await second.send("read");
          seen.push(`second still served: ${await second.line()}`);
        } finally {
          await Promise.all([first.finish(), second.finish(), third?.finish()]);
        }
        return seen;
      });
      assert.deepEqual(observed.qsd, [
        "ready",
        "ready",
        "connected",
        "third before: <TIMEOUT>",
        "bye",
        "third after: greeting NBDMAGIC",
        "second still served: ok",
      ]);
      differences.check("clients of a full server", observed.qsd, observed.denbd);
      await listing(pair, differences);
    });
  },
);

Deno.test(
  "max-connections=1: no multi-conn flag on any export, the same listing and handshake",
  needs(...PEERS),
  async () => {
    await withExports(1, async (pair, differences) => {
      await listing(pair, differences);
      await python(pair, differences, "NBD_OPT_GO replies", HANDSHAKE_SCRIPT, ["sorted"]);
    });
  },
);

Deno.test(
  "a client that leaves right after NBD_OPT_ABORT leaves nothing on stderr",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair) => {
      for (let i = 0; i < 3; i++) {
        const result = await runForBoth(pair, "nbdinfo", ["--list", uri("")]);
        assert.equal(result.denbd.code, 0);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }, {});
  },
);

Deno.test(
  "NBD_OPT_GO replies in qsd's order, an empty description sent",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair, differences) => {
      differences.add(
        await pair.script([
          qmp("block-export-add", {
            type: "nbd",
            id: "nodesc",
            "node-name": "ro0",
            name: "nodesc",
            description: "",
          }),
        ]),
      );
      await python(pair, differences, "NBD_OPT_GO replies", HANDSHAKE_SCRIPT, ["in-order"], [
        "ad",
        "nodesc",
      ]);
    });
  },
);

Deno.test(
  "a write of zeroes that may unmap deallocates the file (actual-size)",
  needs(...PEERS),
  async () => {
    await withExports(0, async (pair, differences) => {
      // 8M has 128 KiB of data; qsd punches a hole for the first 64 KiB.
      const result = await runForBoth(pair, "qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -z -u 8M 64k",
        uri("wt"),
      ]);
      assert.equal(result.qsd.code, 0, result.qsd.stderr);
      await sameOutput(pair, differences, "nbdinfo", ["--map", uri("wt")]);
      const sizes = await pair.both(async (daemon) =>
        (await Deno.stat(daemon.fill("$DIR/d.img"))).blocks
      );
      differences.check("blocks allocated to the image", sizes.qsd, sizes.denbd);
    });
  },
);

/** Seconds each read of the slow image takes. */
const SLOW_READ_S = 2;

/**
 * A libnbd client of export argv[2] that starts reading 4 KiB at offset
 * argv[3], prints "sent", then prints how the read ended.
 */
const SLOW_READER_SCRIPT = String.raw`
import nbd, sys
h = nbd.NBD()
h.set_export_name(sys.argv[2])
h.connect_unix(sys.argv[1])
cookie = h.aio_pread(nbd.Buffer(4096), int(sys.argv[3]))
print("sent", flush=True)
try:
    while not h.aio_command_completed(cookie):
        h.poll(-1)
    print("read", flush=True)
except nbd.Error as error:
    print("error:", error.string, flush=True)
`;

/** Both daemons exporting the slow `image` read-only as export e0, named `name`. */
function slowExportSpec(image: string, name: string): DaemonSpec {
  return {
    args: [
      "--blockdev",
      `driver=file,node-name=slow,filename=${image},read-only=on`,
      "--nbd-server",
      `addr.type=unix,addr.path=${SOCKET}`,
      "--export",
      `nbd,id=e0,node-name=slow,name=${name}`,
    ],
  };
}

/** Offsets of the slow image each daemon reads, apart so neither finds the other's in the page cache. */
const SLOW_OFFSETS = { qsd: [8 * MiB, 24 * MiB], denbd: [40 * MiB, 56 * MiB] } as const;

Deno.test(
  "a hard removal with a read in flight: the return, shutting-down until the read ends, then the event",
  needs(...PEERS, "nbdfuse", "nbdkit"),
  async () => {
    await withSlowImage(SLOW_READ_S, async (image) => {
      const spec = slowExportSpec(image, "e0");
      let stderr: Record<DaemonKind, string> = { qsd: "", denbd: "" };
      await withDaemonPair(spec, async (pair) => {
        const differences = new Differences();
        /** A client of `name` on each daemon with a read in flight (the `round`th offset). */
        const slowReaders = (name: string, round: 0 | 1) =>
          pair.both(async (daemon) => {
            const offset = SLOW_OFFSETS[daemon.kind][round];
            const reader = new PythonHelper(SLOW_READER_SCRIPT, [
              daemon.fill(SOCKET),
              name,
              String(offset),
            ]);
            assert.equal(await reader.line(), "sent", `${daemon.kind}: the read was sent`);
            return reader;
          });
        const readEnds = async (readers: Record<DaemonKind, PythonHelper>, label: string) => {
          const ends = await pair.both(async (daemon) => {
            const line = await readers[daemon.kind].line(2 * SLOW_READ_S * 1000);
            await readers[daemon.kind].finish();
            return line;
          });
          differences.check(label, ends.qsd, ends.denbd);
        };
        const deleted = (id: string) => ({
          timestamp: "TIMESTAMP",
          event: "BLOCK_EXPORT_DELETED",
          data: { id },
        });

        const first = await slowReaders("e0", 0);
        // Time for the servers to start the read.
        await new Promise((resolve) => setTimeout(resolve, 300));
        differences.add(
          await pair.script([
            qmp("block-export-del", { id: "e0", mode: "hard" }),
            qmp("query-block-exports"),
            qmp("block-export-del", { id: "e0", mode: "hard" }),
            qmp("block-export-del", { id: "e0" }),
            qmp("nbd-server-remove", { name: "e0" }),
            qmp("block-export-add", { type: "nbd", id: "e0", "node-name": "slow" }),
            qmp("nbd-server-add", { device: "slow", name: "e0" }),
            // The name is free at once.
            qmp("block-export-add", { type: "nbd", id: "e1", "node-name": "slow", name: "e0" }),
            qmp("query-block-exports"),
            qmp("blockdev-del", { "node-name": "slow" }),
          ]),
        );
        // Reported now: a daemon that deleted the export early has sent its event already.
        differences.assertNone();
        const events = await pair.both(async (daemon) =>
          normalise(await pair.sessions[daemon.kind].next(2 * SLOW_READ_S * 1000), daemon.place)
        );
        assert.deepEqual(events.qsd, deleted("e0"), "qsd: the event once the read has ended");
        differences.check("the event once the read has ended", events.qsd, events.denbd);
        await readEnds(first, "the dropped client's read");
        differences.add(
          await pair.script([
            qmp("query-block-exports"),
            qmp("block-export-add", { type: "nbd", id: "e0", "node-name": "slow", name: "e2" }),
          ]),
        );

        // nbd-server-stop waits for an export whose client has a read in flight.
        const second = await slowReaders("e0", 1);
        await new Promise((resolve) => setTimeout(resolve, 300));
        differences.add(
          await pair.script([
            { send: qmp("nbd-server-stop"), events: 2 },
            qmp("query-block-exports"),
          ]),
        );
        await readEnds(second, "a read in flight at nbd-server-stop");
        differences.assertNone();
        stderr = { qsd: pair.qsd.stderr(), denbd: pair.denbd.stderr() };
      }, { compareStderr: false });
      // Deliberate difference: qsd reports each reply it could not send to a dropped client;
      // denbd dropped the client itself, so its unanswered read is no failure (-v says why).
      assert.equal(
        stderr.qsd,
        SLOW_OFFSETS.qsd.map(() =>
          "PROG: Disconnect client, due to: Failed to send reply: " +
          "Unable to write to socket: Broken pipe\n"
        ).join(""),
      );
      assert.equal(stderr.denbd, "");
    });
  },
);

/**
 * Opens argv[2] connections to the socket argv[1] and prints how many got a
 * greeting, whether the last one got one, and whether it got one once the
 * first left.
 */
const CROWD_SCRIPT = String.raw`
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
clients = []
for i in range(count):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    clients.append(s)
def greeting(s, timeout):
    s.settimeout(timeout)
    data = b""
    try:
        while len(data) < 18:
            chunk = s.recv(18 - len(data))
            if not chunk:
                return "closed"
            data += chunk
    except socket.timeout:
        return "none"
    return data[:8].decode()
first = [greeting(s, 5) for s in clients[:-1]]
print(len(first), "greeted:", sorted(set(first)), flush=True)
print("last before:", greeting(clients[-1], 1.5), flush=True)
clients[0].close()
print("last after:", greeting(clients[-1], 5), flush=True)
for s in clients[1:]:
    s.close()
`;

Deno.test(
  "without max-connections, 100 clients at once as in qsd (CVE-2024-7409): the 101st waits",
  needs(...PEERS),
  async () => {
    const spec: DaemonSpec = {
      args: [
        ...NODES,
        "--nbd-server",
        `addr.type=unix,addr.path=${SOCKET}`,
        "--export",
        "nbd,id=plain,node-name=ro0,name=plain",
      ],
      setup: images,
    };
    await withDaemonPair(spec, async (pair) => {
      const result = await runForBoth(pair, "/usr/bin/python3", [
        "-c",
        CROWD_SCRIPT,
        SOCKET,
        "101",
      ]);
      assert.equal(
        result.qsd.stdout,
        "100 greeted: ['NBDMAGIC']\nlast before: none\nlast after: NBDMAGIC\n",
        result.qsd.stderr,
      );
      assert.equal(result.denbd.stdout, result.qsd.stdout, result.denbd.stderr);
      // Multi-conn is still advertised.
      const differences = new Differences();
      await sameOutput(pair, differences, "nbdinfo", ["--json", uri("plain")]);
      differences.assertNone();
    }, { compareStderr: false });
  },
);

/**
 * A libnbd client of export "" on socket argv[1] with a read in flight at
 * offset argv[2]: prints "sent", then how the read ended.
 */
const IN_FLIGHT_SCRIPT = String.raw`
import errno, nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
cookie = h.aio_pread(nbd.Buffer(4096), int(sys.argv[2]))
print("sent", flush=True)
try:
    while not h.aio_command_completed(cookie):
        h.poll(-1)
    print("read", flush=True)
except nbd.Error as error:
    print(errno.errorcode.get(error.errno, error.errno), flush=True)
`;

/** Connects to the socket argv[1], reads the greeting, says nothing, prints how the server ended it. */
const SILENT_SCRIPT = String.raw`
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(8)
s.connect(sys.argv[1])
data = b""
while len(data) < 18:
    data += s.recv(18 - len(data))
print("greeting", flush=True)
try:
    print("closed" if s.recv(1) == b"" else "data", flush=True)
except socket.timeout:
    print("still open", flush=True)
`;

Deno.test(
  "SIGTERM as in qsd: clients dropped without a reply to the read in flight, then exit 0",
  needs(...PEERS, "nbdfuse", "nbdkit"),
  async () => {
    await withSlowImage(SLOW_READ_S, async (image) => {
      const spec = slowExportSpec(image, "");
      await withDaemonPair(spec, async (pair) => {
        const observed = await pair.both(async (daemon) => {
          const socket = daemon.fill(SOCKET);
          const offset = SLOW_OFFSETS[daemon.kind][0];
          const reader = new PythonHelper(IN_FLIGHT_SCRIPT, [socket, String(offset)]);
          const silent = new PythonHelper(SILENT_SCRIPT, [socket]);
          try {
            const seen = [await reader.line(), await silent.line()];
            await new Promise((resolve) => setTimeout(resolve, 300));
            daemon.process.child.kill("SIGTERM");
            seen.push(`read: ${await reader.line(2 * SLOW_READ_S * 1000)}`);
            seen.push(`silent client: ${await silent.line(2 * SLOW_READ_S * 1000)}`);
            seen.push(`exit: ${await daemon.process.exited(2 * SLOW_READ_S * 1000)}`);
            return seen;
          } finally {
            await Promise.all([reader.finish(), silent.finish()]);
          }
        });
        assert.deepEqual(observed.qsd, [
          "sent",
          "greeting",
          "read: ENOTCONN",
          "silent client: closed",
          "exit: 0",
        ]);
        assert.deepEqual(observed.denbd, observed.qsd);
      }, { compareStderr: false });
    });
  },
);
