/**
 * The `qemu:` metadata contexts against QEMU's servers: `denbd serve -A`
 * against `qemu-nbd -A` (allocation depth), and dirty bitmaps exported by
 * an in-process Daemon against qemu-storage-daemon driven over QMP, after
 * the same writes through qemu-io. Maps (nbdinfo), block status replies
 * (libnbd's Python bindings, with and without REQ_ONE), LIST and SET answers,
 * bitmap hashes and counts must be identical.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  launch,
  makeSparseImage,
  needs,
  python,
  qmpMonitorArgs,
  type ServerProcess,
  startDenbd,
  startQemuNbd,
  withServer,
  withTempDir,
} from "./harness.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { Logger } from "../../src/log.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * LIST_META_CONTEXT in libnbd's option mode, one connection per query set;
 * argv: URI, then query sets ("a|b", or "NONE" for no query at all). Prints
 * one JSON line per set: the names listed, or the error.
 */
const LIST_PROBE = `
import json, nbd, sys
uri = sys.argv[1]
for spec in sys.argv[2:]:
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(uri)
    if spec != "NONE":
        for query in spec.split("|"):
            h.add_meta_context(query)
    names = []
    try:
        h.opt_list_meta_context(lambda name: names.append(name) or 0)
        print(json.dumps([spec, names]))
    except nbd.Error as error:
        print(json.dumps([spec, "error"]))
    h.opt_abort()
`;

/**
 * SET_META_CONTEXT through libnbd's connect (it sends the added queries);
 * argv: URI, candidate names ("a|b"), then query sets. Prints which
 * candidates were selected.
 */
const SET_PROBE = `
import json, nbd, sys
uri, candidates = sys.argv[1], sys.argv[2].split("|")
for spec in sys.argv[3:]:
    h = nbd.NBD()
    for query in spec.split("|"):
        h.add_meta_context(query)
    h.connect_uri(uri)
    print(json.dumps([spec, [c for c in candidates if h.can_meta_context(c)]]))
    h.shutdown()
`;

/**
 * Block status for one context; argv: URI, context, then "offset,length,reqOne"
 * specs ("end" as the length reaches the end). Prints every chunk received.
 */
const STATUS_PROBE = `
import json, nbd, sys
uri, context = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.add_meta_context(context)
h.connect_uri(uri)
size = h.get_size()
for spec in sys.argv[3:]:
    offset, length, one = spec.split(",")
    offset = int(offset)
    length = size - offset if length == "end" else int(length)
    chunks = []
    def extent(meta, at, entries, err):
        chunks.append([meta, list(entries)])
        return 0
    h.block_status(length, offset, extent, nbd.CMD_FLAG_REQ_ONE if one == "1" else 0)
    print(json.dumps([spec, chunks]))
h.shutdown()
`;

/**
 * A tiny QMP client; argv: monitor socket, then commands as JSON
 * ({"execute": ..., "arguments": ...}). Prints each "return" as a JSON line
 * and exits 1 on the first error.
 */
const QMP_CLIENT = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rwb")
def receive():
    while True:
        message = json.loads(f.readline())
        if "event" not in message:
            return message
receive()
for command in [json.dumps({"execute": "qmp_capabilities"})] + sys.argv[2:]:
    f.write(command.encode() + b"\\n")
    f.flush()
    reply = receive()
    if "error" in reply:
        print(command, reply["error"]["desc"], file=sys.stderr)
        sys.exit(1)
    print(json.dumps(reply["return"]))
`;

/** Run a probe script and parse its JSON lines. */
async function probe(script: string, args: readonly string[]): Promise<unknown[]> {
  const result = await python(script, args);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim().split("\n").map((line) => JSON.parse(line));
}

/** LIST queries whose answers are compared (see the note on the two left out). */
const LIST_QUERIES = [
  "NONE",
  "qemu:",
  "qemu:dirty-bitmap:",
  "qemu:allocation-depth",
  "qemu:allocation-depth:",
  "qemu:allocation",
  "qemu:dirty-bitmap",
  "qemu:x",
  "base:",
  "base:allocation",
  "base:|qemu:",
  "qemu:allocation-depth|qemu:allocation-depth",
  "qemu:|base:",
  "qemu",
];

Deno.test(
  "serve -A: qemu:allocation-depth and the qemu: LIST answers match qemu-nbd -A",
  needs("nbdinfo", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, [[MiB, 64 * KiB], [3 * MiB, 4096]]);
      const inspect = async (server: ServerProcess) => ({
        depth: await check("nbdinfo", ["--map=qemu:allocation-depth", server.uri]),
        totals: await check("nbdinfo", ["--map=qemu:allocation-depth", "--totals", server.uri]),
        list: await probe(LIST_PROBE, [server.uri, ...LIST_QUERIES]),
        set: await probe(SET_PROBE, [
          server.uri,
          "base:allocation|qemu:allocation-depth",
          "qemu:",
          "qemu:allocation-depth",
          "qemu:allocation-depth|base:allocation",
        ]),
        status: await probe(STATUS_PROBE, [
          server.uri,
          "qemu:allocation-depth",
          "0,end,0",
          "0,end,1",
          "4096,100000,0",
          "8388096,512,1",
        ]),
      });
      for (const flags of [["-A"], ["-A", "-r"]]) {
        const start = { args: ["-f", "raw", "-t", ...flags, image] };
        const ours = await withServer(startDenbd, start, inspect);
        const reference = await withServer(startQemuNbd, start, inspect);
        assert.deepEqual(ours, reference, flags.join(" "));
        assert.equal(ours.depth, `         0     8388608    1  local\n`);
      }
      // Without -A neither offers anything in the qemu: namespace.
      const plain = { args: ["-f", "raw", "-t", "-r", image] };
      const list = (server: ServerProcess) =>
        probe(LIST_PROBE, [server.uri, "NONE", "qemu:", "qemu:allocation-depth"]);
      assert.deepEqual(await withServer(startDenbd, plain, list), [
        ["NONE", ["base:allocation"]],
        ["qemu:", []],
        ["qemu:allocation-depth", []],
      ]);
      assert.deepEqual(
        await withServer(startDenbd, plain, list),
        await withServer(startQemuNbd, plain, list),
      );
    });
  },
);

/** The same writes for both servers (the image is 64 MiB). */
const WRITES = [
  "write -P 1 100k 1",
  "write -P 2 1M 4k",
  "write -z 2040k 100k",
  "write -z -u 3M 64k",
  "discard 5000k 1k",
  "discard 63M 1M",
  "write -P 3 67108352 512",
  "write -P 4 40000k 3000k",
];

const CONTEXTS = [
  "qemu:dirty-bitmap:b0",
  "qemu:dirty-bitmap:b1",
  "qemu:dirty-bitmap:d0",
  "qemu:allocation-depth",
];

/** Everything compared between the two servers after the writes. */
async function observe(uri: string) {
  const maps: Record<string, string> = {};
  for (const context of CONTEXTS) maps[context] = await check("nbdinfo", [`--map=${context}`, uri]);
  return {
    maps,
    list: await probe(LIST_PROBE, [
      uri,
      "NONE",
      "qemu:",
      "qemu:dirty-bitmap:",
      "qemu:dirty-bitmap:b1",
      "qemu:dirty-bitmap:b",
      "qemu:allocation-depth",
    ]),
    set: await probe(SET_PROBE, [
      uri,
      ["base:allocation", ...CONTEXTS].join("|"),
      "qemu:",
      "qemu:dirty-bitmap:",
      "qemu:dirty-bitmap:b1|qemu:allocation-depth|base:allocation",
    ]),
    status: await probe(STATUS_PROBE, [
      uri,
      "qemu:dirty-bitmap:b1",
      "0,end,0",
      "0,end,1",
      "4096,100000,0",
      "102000,1000,1",
      "2000000,200000,0",
      "67108000,608,0",
      "67108000,608,1",
    ]),
  };
}

/** Run the writes through qemu-io over NBD. */
async function write(uri: string): Promise<void> {
  await check("qemu-io", ["-f", "raw", ...WRITES.flatMap((command) => ["-c", command]), uri]);
}

/** The bitmap fields query-named-block-nodes reports, newest first. */
type BitmapInfos = Record<string, unknown[]>;

Deno.test(
  "dirty bitmaps over NBD: the in-process Daemon matches qemu-storage-daemon",
  needs("nbdinfo", "qemu-io", "qemu-storage-daemon"),
  async () => {
    await withTempDir(async (dir) => {
      const size = 64 * MiB;
      // qemu-storage-daemon: the same graph and export, set up over QMP.
      const qsdImage = join(dir, "qsd.img");
      await makeSparseImage(qsdImage, size);
      const monitor = join(dir, "qmp.sock");
      const qsdSocket = join(dir, "qsd-nbd.sock");
      const qsd = await launch({
        command: "qemu-storage-daemon",
        args: [
          ...qmpMonitorArgs(monitor, "m0"),
          "--blockdev",
          `driver=file,node-name=file0,filename=${qsdImage},discard=unmap`,
          "--blockdev",
          "driver=raw,node-name=fmt0,file=file0,discard=unmap",
        ],
        uri: `nbd+unix:///e?socket=${qsdSocket}`,
        listen: monitor,
      });
      let reference;
      try {
        const qmp = (...commands: object[]) =>
          probe(QMP_CLIENT, [monitor, ...commands.map((command) => JSON.stringify(command))]);
        await qmp(
          bitmapAdd("file0", "b0"),
          bitmapAdd("fmt0", "b1", { granularity: 512 }),
          bitmapAdd("file0", "d0", { disabled: true }),
          {
            execute: "nbd-server-start",
            arguments: { addr: { type: "unix", data: { path: qsdSocket } } },
          },
          {
            execute: "block-export-add",
            arguments: {
              type: "nbd",
              id: "e0",
              "node-name": "fmt0",
              name: "e",
              writable: true,
              "allocation-depth": true,
              bitmaps: [{ node: "file0", name: "b0" }, "b1", { node: "file0", name: "d0" }],
            },
          },
        );
        await write(qsd.uri);
        const hashes = await qmp(
          ...[["file0", "b0"], ["fmt0", "b1"], ["file0", "d0"]].map(([node, name]) => ({
            execute: "x-debug-block-dirty-bitmap-sha256",
            arguments: { node, name },
          })),
        );
        const [, nodes] = await qmp({ execute: "query-named-block-nodes" });
        const infos: BitmapInfos = {};
        for (const node of nodes as { "node-name": string; "dirty-bitmaps"?: unknown[] }[]) {
          infos[node["node-name"]] = node["dirty-bitmaps"] ?? [];
        }
        reference = {
          ...await observe(qsd.uri),
          hashes: hashes.slice(1).map((hash) => (hash as { sha256: string }).sha256),
          infos,
        };
      } finally {
        await qsd.stop();
      }

      // denbd: the Daemon in this process.
      const image = join(dir, "denbd.img");
      await makeSparseImage(image, size);
      const daemon = new Daemon(new Logger());
      let ours;
      try {
        await daemon.blockdevAdd({
          driver: "file",
          "node-name": "file0",
          filename: image,
          discard: "unmap",
        });
        await daemon.blockdevAdd({
          driver: "raw",
          "node-name": "fmt0",
          file: "file0",
          discard: "unmap",
        });
        daemon.dirtyBitmaps.add("file0", "b0");
        daemon.dirtyBitmaps.add("fmt0", "b1", { granularity: 512 });
        daemon.dirtyBitmaps.add("file0", "d0", { disabled: true });
        const socket = join(dir, "denbd-nbd.sock");
        daemon.nbdServerStart({ addr: { type: "unix", path: socket } });
        daemon.blockExportAdd({
          type: "nbd",
          id: "e0",
          "node-name": "fmt0",
          name: "e",
          writable: true,
          "allocation-depth": true,
          bitmaps: [{ node: "file0", name: "b0" }, "b1", { node: "file0", name: "d0" }],
        });
        const uri = `nbd+unix:///e?socket=${socket}`;
        await write(uri);
        const hashes = [];
        for (const [node, name] of [["file0", "b0"], ["fmt0", "b1"], ["file0", "d0"]]) {
          hashes.push(await daemon.dirtyBitmaps.sha256(node, name));
        }
        ours = {
          ...await observe(uri),
          hashes,
          infos: {
            fmt0: daemon.dirtyBitmaps.query("fmt0"),
            file0: daemon.dirtyBitmaps.query("file0"),
          },
        };
      } finally {
        await daemon.shutdown();
      }

      assert.deepEqual(ours, reference);
      assert.equal(
        ours.maps["qemu:dirty-bitmap:d0"],
        `         0    67108864    0  clean\n`,
        "a disabled bitmap stays clean",
      );
    });
  },
);

function bitmapAdd(node: string, name: string, extra: Record<string, unknown> = {}) {
  return { execute: "block-dirty-bitmap-add", arguments: { node, name, ...extra } };
}
