/**
 * Differential tests of `denbd daemon`'s QMP commands: the same scripts go
 * to qemu-storage-daemon 7.2 and to denbd, started with the same command
 * line, and every reply and event must be the same once timestamps, version
 * strings, directories, ports and generated node names are masked. Success
 * and error paths of every command denbd implements are covered; where
 * denbd deliberately differs (exports other than NBD, TLS, deleting objects
 * in use, merging no bitmaps, block drivers it does not have, the NBD socket
 * at exit) the difference is asserted on its own.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeSparseImage, needs } from "./harness.ts";
import {
  type DaemonKind,
  type DaemonPair,
  type DaemonSpec,
  type Json,
  KINDS,
  NODES,
  qmp,
  type StepLike,
  withDaemonPair,
} from "./daemon_harness.ts";

const MiB = 1 << 20;

/** Two identical images in each daemon's directory: d.img (64 MiB, some data) and e.img (1 MiB). */
async function images(dir: string): Promise<void> {
  await makeSparseImage(join(dir, "d.img"), 64 * MiB, [[0, 65536], [MiB, 4096]]);
  await makeSparseImage(join(dir, "e.img"), MiB);
}

const UNIX_SERVER = { addr: { type: "unix", data: { path: "$DIR/nbd.sock" } } };

function serverStart(args: Json): Json {
  return qmp("nbd-server-start", args);
}

function exportAdd(args: Json): Json {
  return qmp("block-export-add", { type: "nbd", ...args });
}

function bitmap(command: string, args: Json): Json {
  return qmp(`block-dirty-bitmap-${command}`, args);
}

/** Run `steps` on both daemons started with `spec`; fail listing every differing step. */
async function sameOnBoth(spec: DaemonSpec, steps: readonly StepLike[]): Promise<void> {
  await withDaemonPair(spec, (pair) => pair.expectSame(steps));
}

/** The reply of `kind` to one command, as [message, ...]. */
async function answer(pair: DaemonPair, kind: DaemonKind, command: Json): Promise<unknown[]> {
  return await pair.only(kind, { send: command });
}

function genericError(desc: string) {
  return [{ error: { class: "GenericError", desc } }];
}

Deno.test(
  "nbd-server-start and nbd-server-stop answer as qsd's do",
  needs("qemu-storage-daemon"),
  async () => {
    // A port both daemons find in use.
    const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const heldPort = (held.addr as Deno.NetAddr).port;
    try {
      const inet = (host: string, port: unknown) => ({
        addr: { type: "inet", data: { host, port } },
      });
      await sameOnBoth({ args: NODES, setup: images, ports: 1 }, [
        qmp("nbd-server-stop"),
        serverStart({ addr: { type: "unix", path: "$DIR/nbd.sock" } }),
        serverStart({ addr: { type: "inet", data: { host: "127.0.0.1" } } }),
        serverStart(inet("127.0.0.1", 10809)),
        serverStart(inet("127.0.0.1", "notaport")),
        serverStart({ addr: { type: "bogus", data: {} } }),
        serverStart({ addr: { type: "unix", data: { path: "/nonexistent/x.sock" } } }),
        serverStart({ ...UNIX_SERVER, "tls-creds": "nope" }),
        serverStart({ ...UNIX_SERVER, "max-connections": -1 }),
        serverStart({ ...UNIX_SERVER, "max-connections": 4294967296 }),
        serverStart({ ...UNIX_SERVER, "max-connections": "2" }),
        serverStart({ ...UNIX_SERVER, bogus: 1 }),
        serverStart({}),
        qmp("nbd-server-start"),
        serverStart(inet("127.0.0.1", String(heldPort))),
        qmp("query-block-exports"),
        // tls-authz is only looked up when a client connects.
        serverStart({ ...UNIX_SERVER, "tls-authz": "nope" }),
        serverStart(UNIX_SERVER),
        serverStart(inet("127.0.0.1", "$PORT0")),
        qmp("nbd-server-stop"),
        qmp("nbd-server-stop"),
        serverStart({ ...UNIX_SERVER, "max-connections": 0 }),
        qmp("nbd-server-stop"),
        serverStart({ ...inet("127.0.0.1", "$PORT0"), "max-connections": 4294967295 }),
        qmp("nbd-server-stop"),
        serverStart(inet("localhost", "0")),
        qmp("nbd-server-stop", { bogus: 1 }),
        qmp("nbd-server-stop"),
        // A stale socket file is replaced.
        serverStart(UNIX_SERVER),
        exportAdd({ id: "e0", "node-name": "f0" }),
        exportAdd({ id: "e1", "node-name": "r0" }),
        exportAdd({ id: "e2", "node-name": "ro0" }),
        // Every export goes, an event each, before the return (the order is not guaranteed).
        { send: qmp("nbd-server-stop"), eventsAnyOrder: true },
        qmp("query-block-exports"),
        serverStart(UNIX_SERVER),
        qmp("query-block-exports"),
        qmp("nbd-server-stop"),
      ]);
    } finally {
      held.close();
    }
  },
);

Deno.test(
  "block-export-add, block-export-del, nbd-server-add/remove and query-block-exports",
  needs("qemu-storage-daemon"),
  async () => {
    const long = (char: string, count: number) => char.repeat(count);
    await sameOnBoth({ args: NODES, setup: images }, [
      exportAdd({ id: "e0", "node-name": "f0" }),
      qmp("nbd-server-add", { device: "f0" }),
      qmp("nbd-server-remove", { name: "f0" }),
      qmp("query-block-exports"),
      serverStart(UNIX_SERVER),
      qmp("query-block-exports"),
      exportAdd({ id: "e0", "node-name": "f0" }),
      exportAdd({ id: "e0", "node-name": "r0" }),
      exportAdd({ id: "e1", "node-name": "f0" }),
      exportAdd({ id: "e1", "node-name": "f0", name: "" }),
      exportAdd({ id: "e2", "node-name": "r0", name: "", description: "x" }),
      exportAdd({ id: "1bad", "node-name": "r0" }),
      exportAdd({ id: "", "node-name": "r0" }),
      exportAdd({ id: "e3", "node-name": "nonode" }),
      exportAdd({ id: "e3" }),
      exportAdd({ "node-name": "r0" }),
      exportAdd({ id: "e3", "node-name": "ro0", writable: true }),
      exportAdd({ id: "e3", "node-name": "r0", iothread: "nope" }),
      exportAdd({ id: "e3", "node-name": "r0", bitmaps: ["nope"] }),
      exportAdd({ id: "e3", "node-name": "r0", bitmaps: [{ node: "r0", name: "x" }] }),
      exportAdd({ id: "e3", "node-name": "r0", bitmaps: [{ node: "nope", name: "x" }] }),
      exportAdd({ id: "e3", "node-name": "r0", bitmaps: [1] }),
      exportAdd({ id: "e3", "node-name": "r0", bitmaps: "b0" }),
      exportAdd({ id: "e3", "node-name": "r0", writable: "yes" }),
      exportAdd({ id: "e3", "node-name": "r0", bogus: 1 }),
      exportAdd({ id: "e3", "node-name": "r0", bitmap: "x" }),
      qmp("block-export-add", { id: "e3", "node-name": "r0" }),
      qmp("block-export-add", { type: "bogus", id: "e3", "node-name": "r0" }),
      // Name and description limits, in UTF-8 bytes.
      exportAdd({ id: "e3", "node-name": "r0", name: long("a", 4096) }),
      exportAdd({ id: "e4", "node-name": "r0", name: long("b", 4097) }),
      exportAdd({ id: "e4", "node-name": "r0", name: long("\u00e9", 2048) }),
      exportAdd({ id: "e5", "node-name": "r0", name: long("\u00e9", 2049) }),
      exportAdd({ id: "e5", "node-name": "r0", name: "c", description: long("d", 4096) }),
      exportAdd({ id: "e6", "node-name": "r0", name: "d", description: long("d", 4097) }),
      exportAdd({ id: "e6", "node-name": "r0", name: "d", description: long("\u00e9", 2049) }),
      exportAdd({ id: "e6", "node-name": "r0", name: "d", description: "" }),
      qmp("query-block-exports"),
      // iothreads.
      qmp("object-add", { "qom-type": "iothread", id: "io0" }),
      exportAdd({ id: "e7", "node-name": "r0", name: "e7", iothread: "io0" }),
      exportAdd({
        id: "e8",
        "node-name": "r0",
        name: "e8",
        iothread: "io0",
        "fixed-iothread": true,
      }),
      exportAdd({ id: "e9", "node-name": "r0", name: "e9", "fixed-iothread": true }),
      // Every NBD option at once.
      exportAdd({
        id: "e10",
        "node-name": "r0",
        name: "all",
        description: "every option",
        writable: true,
        writethrough: true,
        "allocation-depth": true,
        "fixed-iothread": false,
      }),
      // Bitmaps, by name and as {node, name}.
      bitmap("add", { node: "r0", name: "b0" }),
      bitmap("add", { node: "r0", name: "b1", disabled: true }),
      bitmap("add", { node: "f0", name: "fb" }),
      bitmap("add", { node: "f0", name: "fd", disabled: true }),
      exportAdd({ id: "e11", "node-name": "r0", name: "e11", bitmaps: ["b0"] }),
      exportAdd({ id: "e11", "node-name": "r0", name: "e11", bitmaps: ["fb"] }),
      exportAdd({ id: "e11", "node-name": "r0", name: "e11", bitmaps: ["b1"] }),
      exportAdd({
        id: "e12",
        "node-name": "r0",
        name: "e12",
        writable: true,
        bitmaps: ["b0", { node: "f0", name: "fb" }],
      }),
      exportAdd({
        id: "e13",
        "node-name": "r0",
        name: "e13",
        bitmaps: [{ node: "f0", name: "fd" }],
      }),
      qmp("query-block-exports"),
      qmp("query-named-block-nodes"),
      // Exported bitmaps are busy.
      bitmap("remove", { node: "r0", name: "b0" }),
      bitmap("clear", { node: "r0", name: "b1" }),
      bitmap("enable", { node: "f0", name: "fd" }),
      bitmap("disable", { node: "f0", name: "fb" }),
      bitmap("add", { node: "r0", name: "b2" }),
      bitmap("merge", { node: "r0", target: "b0", bitmaps: ["b2"] }),
      bitmap("merge", { node: "r0", target: "b2", bitmaps: ["b0"] }),
      // block-export-del.
      qmp("block-export-del", { id: "nope" }),
      qmp("block-export-del", { id: "e12", mode: "bogus" }),
      qmp("block-export-del", {}),
      qmp("block-export-del", { id: "e12" }),
      bitmap("remove", { node: "r0", name: "b0" }),
      qmp("block-export-del", { id: "e11", mode: "hard" }),
      bitmap("remove", { node: "r0", name: "b1" }),
      qmp("block-export-del", { id: "e10", mode: "safe" }),
      qmp("block-export-del", { id: "e10" }),
      qmp("query-named-block-nodes"),
      // The id and name are free again at once.
      qmp("block-export-del", { id: "e9", mode: "hard" }),
      qmp("query-block-exports"),
      exportAdd({ id: "e9", "node-name": "r0", name: "e9" }),
      qmp("block-export-del", { id: "e9" }),
      // nbd-server-add: id = name (default: the device).
      qmp("nbd-server-add", { device: "r0" }),
      qmp("nbd-server-add", { device: "r0" }),
      qmp("nbd-server-add", { device: "nope" }),
      qmp("nbd-server-add", { device: "f0", name: "x", bitmap: "nope" }),
      qmp("nbd-server-add", {
        device: "f0",
        name: "na",
        description: "dc",
        writable: true,
        bitmap: "fb",
      }),
      // A read-only node asked for writable is exported read-only, silently.
      qmp("nbd-server-add", { device: "ro0", name: "rw", writable: true }),
      qmp("nbd-server-add", { device: "f0", name: "e0" }),
      qmp("nbd-server-add", { name: "y" }),
      qmp("query-block-exports"),
      // nbd-server-remove looks up an export id.
      qmp("nbd-server-remove", { name: "nope" }),
      qmp("nbd-server-remove", { name: "c" }),
      qmp("nbd-server-remove", { name: "e5" }),
      qmp("nbd-server-remove", { name: "na", mode: "bogus" }),
      qmp("nbd-server-remove", { name: "na", mode: "hard" }),
      qmp("nbd-server-remove", { name: "rw", mode: "safe" }),
      qmp("nbd-server-remove", {}),
      qmp("query-block-exports"),
      qmp("blockdev-del", { "node-name": "r0" }),
      qmp("query-block-exports", { x: 1 }),
    ]);
  },
);

Deno.test(
  "blockdev-add, blockdev-del and query-named-block-nodes answer as qsd's do",
  needs("qemu-storage-daemon"),
  async () => {
    const add = (args: Json) => qmp("blockdev-add", args);
    const del = (name: string) => qmp("blockdev-del", { "node-name": name });
    await sameOnBoth({ args: [], setup: images }, [
      qmp("query-named-block-nodes"),
      add({ driver: "file", "node-name": "f0", filename: "$DIR/d.img" }),
      add({ driver: "file", "node-name": "f0", filename: "$DIR/d.img" }),
      add({ driver: "file", "node-name": "f0", filename: "$DIR/nonexist" }),
      add({ driver: "file", filename: "$DIR/d.img" }),
      add({ driver: "file", filename: "$DIR/nonexist" }),
      add({ driver: "file", "node-name": "1bad", filename: "$DIR/d.img" }),
      add({ driver: "file", "node-name": "", filename: "$DIR/d.img" }),
      add({ driver: "file", "node-name": "f9", filename: "$DIR/nonexist" }),
      add({ driver: "file", "node-name": "f9", filename: "/nonexistent/x/y" }),
      add({ driver: "file", "node-name": "f9" }),
      add({ driver: "raw", "node-name": "r9", file: "nonode" }),
      add({ driver: "raw", "node-name": "r9" }),
      add({ driver: "raw", "node-name": "r9", file: 5 }),
      add({ driver: "bogus", "node-name": "x" }),
      add({ "node-name": "x" }),
      add({ driver: "file", "node-name": "f3", filename: "$DIR/e.img", cache: "on" }),
      add({ driver: "file", "node-name": "f3", filename: "$DIR/e.img", "read-only": "yes" }),
      add({ driver: "file", "node-name": "f3", filename: "$DIR/e.img", bogus: 1 }),
      add({ driver: "file", "node-name": "f3", filename: "$DIR/e.img", discard: "x" }),
      add({ driver: "file", "node-name": "f3", filename: "$DIR/e.img", cache: { x: 1 } }),
      add({ driver: "raw", "node-name": "r9", file: { driver: "file", filename: "$DIR/none" } }),
      add({ driver: "raw", "node-name": "r9", file: { driver: "file" } }),
      qmp("query-named-block-nodes"),
      // raw over a named node (several times), and over an inline file node.
      add({ driver: "raw", "node-name": "r0", file: "f0" }),
      add({ driver: "raw", "node-name": "r1", file: "f0" }),
      add({ driver: "raw", "node-name": "r2", file: { driver: "file", filename: "$DIR/e.img" } }),
      // read-only, cache, discard, locking.
      add({
        driver: "file",
        "node-name": "f1",
        filename: "$DIR/e.img",
        "read-only": true,
        cache: { direct: true, "no-flush": true },
      }),
      add({
        driver: "file",
        "node-name": "f2",
        filename: "$DIR/e.img",
        discard: "unmap",
        locking: "off",
      }),
      add({ driver: "raw", "node-name": "r4", file: "f1" }),
      add({ driver: "raw", "node-name": "r5", file: "f2", "read-only": true, discard: "ignore" }),
      qmp("query-named-block-nodes"),
      qmp("query-named-block-nodes", { flat: true }),
      qmp("query-named-block-nodes", { flat: 1 }),
      // blockdev-del.
      del("nonode"),
      qmp("blockdev-del"),
      qmp("blockdev-del", { "node-name": "f2", x: 1 }),
      del("f0"),
      del("r0"),
      del("f0"),
      del("r1"),
      del("f0"),
      del("f0"),
      del("r2"),
      del("f1"),
      del("r4"),
      del("f1"),
      del("r5"),
      qmp("query-named-block-nodes"),
      // A node used by an export.
      serverStart(UNIX_SERVER),
      exportAdd({ id: "e0", "node-name": "f2" }),
      del("f2"),
      // qsd's exports use anonymous block backends, which query-block leaves out.
      qmp("query-block"),
      qmp("block-export-del", { id: "e0" }),
      del("f2"),
      qmp("query-named-block-nodes"),
    ]);
  },
);

Deno.test(
  "block-dirty-bitmap-add/remove/clear/enable/disable/merge answer as qsd's do",
  needs("qemu-storage-daemon"),
  async () => {
    const steps: StepLike[] = [
      bitmap("add", { node: "f0", name: "b0" }),
      bitmap("add", { node: "f0", name: "b0" }),
      bitmap("add", { node: "nope", name: "b0" }),
      bitmap("add", { node: "f0", name: "" }),
      bitmap("add", { node: "f0", name: "g", granularity: 256 }),
      bitmap("add", { node: "f0", name: "g", granularity: 1000 }),
      bitmap("add", { node: "f0", name: "g", granularity: 0 }),
      bitmap("add", { node: "f0", name: "g1", granularity: 512 }),
      bitmap("add", { node: "f0", name: "g2", granularity: 2147483648 }),
      bitmap("add", { node: "f0", name: "g", granularity: 4294967296 }),
      bitmap("add", { node: "f0", name: "g", granularity: -1 }),
      bitmap("add", { node: "f0", name: "g", granularity: "64k" }),
      bitmap("add", { node: "f0", name: "p", persistent: true }),
      bitmap("add", { node: "r0", name: "p", persistent: true }),
      bitmap("add", { node: "f0", name: "p", persistent: false }),
      bitmap("add", { node: "ro0", name: "rob" }),
      bitmap("add", { node: "f0", name: "d0", disabled: true }),
      bitmap("add", { node: "r0", name: "rb" }),
      // The same name on another node.
      bitmap("add", { node: "r0", name: "b0" }),
      bitmap("add", { node: "r0", name: "L".repeat(1023) }),
      bitmap("add", { node: "r0", name: "M".repeat(1024) }),
      bitmap("add", { node: "f0" }),
      bitmap("add", { name: "x" }),
      bitmap("add", { node: "f0", name: "x", bogus: 1 }),
      bitmap("add", { node: "f0", name: "x", disabled: "yes" }),
      qmp("query-named-block-nodes"),
    ];
    for (const command of ["remove", "clear", "enable", "disable"]) {
      steps.push(
        bitmap(command, { node: "f0", name: "nope" }),
        bitmap(command, { node: "nope", name: "b0" }),
        bitmap(command, { node: "f0" }),
        bitmap(command, { node: "f0", name: "b0", x: 1 }),
      );
    }
    steps.push(
      bitmap("enable", { node: "f0", name: "b0" }),
      bitmap("disable", { node: "f0", name: "d0" }),
      bitmap("disable", { node: "f0", name: "b0" }),
      bitmap("enable", { node: "f0", name: "d0" }),
      bitmap("clear", { node: "f0", name: "b0" }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: ["d0", { node: "r0", name: "rb" }] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: ["rb"] }),
      bitmap("merge", { node: "f0", target: "nope", bitmaps: ["d0"] }),
      bitmap("merge", { node: "nope", target: "b0", bitmaps: ["d0"] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: ["g1", "g2"] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: ["b0"] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: [1] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: [{ node: "r0" }] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: [{ node: "nope", name: "x" }] }),
      bitmap("merge", { node: "f0", target: "b0", bitmaps: "d0" }),
      bitmap("merge", { node: "f0", target: "b0" }),
      qmp("query-named-block-nodes"),
      bitmap("remove", { node: "f0", name: "b0" }),
      bitmap("remove", { node: "f0", name: "b0" }),
      bitmap("remove", { node: "r0", name: "b0" }),
      qmp("query-named-block-nodes"),
    );
    await sameOnBoth({ args: NODES, setup: images }, steps);
  },
);

Deno.test(
  "x-debug-block-dirty-bitmap-sha256 answers as qsd's does",
  needs("qemu-storage-daemon"),
  async () => {
    const sha256 = (args: Json) => qmp("x-debug-block-dirty-bitmap-sha256", args);
    await sameOnBoth({ args: NODES, setup: images }, [
      bitmap("add", { node: "f0", name: "b0" }),
      bitmap("add", { node: "f0", name: "g1", granularity: 512, disabled: true }),
      bitmap("add", { node: "r0", name: "rb", granularity: 2147483648 }),
      sha256({ node: "f0", name: "b0" }),
      sha256({ node: "f0", name: "g1" }),
      sha256({ node: "r0", name: "rb" }),
      sha256({ node: "f0", name: "nope" }),
      sha256({ node: "nope", name: "b0" }),
      sha256({ node: "f0" }),
      sha256({ node: "f0", name: "b0", x: 1 }),
    ]);
  },
);

Deno.test(
  "object-add and object-del answer as qsd's do",
  needs("qemu-storage-daemon"),
  async () => {
    const add = (args: Json) => qmp("object-add", args);
    await sameOnBoth({ args: NODES, setup: images }, [
      add({ "qom-type": "iothread", id: "io0" }),
      add({ "qom-type": "iothread", id: "io0" }),
      add({ "qom-type": "iothread", id: "1x" }),
      add({ "qom-type": "iothread" }),
      add({ id: "x" }),
      add({ "qom-type": "bogus", id: "x" }),
      add({ "qom-type": "iothread", id: "x", bogus: 1 }),
      add({ "qom-type": "iothread", id: "x", "poll-max-ns": "1" }),
      add({ "qom-type": "iothread", id: "x", "poll-max-ns": -1 }),
      add({ "qom-type": "iothread", id: "x", "poll-grow": -1 }),
      add({
        "qom-type": "iothread",
        id: "io1",
        "poll-max-ns": 1000,
        "poll-grow": 2,
        "poll-shrink": 0,
        "aio-max-batch": 0,
      }),
      add({ "qom-type": "tls-creds-psk", id: "t0", dir: "$DIR/nonexist", endpoint: "server" }),
      add({ "qom-type": "tls-creds-x509", id: "t0", dir: "$DIR/nonexist", endpoint: "server" }),
      add({ "qom-type": "tls-creds-x509", id: "t0", dir: "/nonexistent", endpoint: "client" }),
      add({ "qom-type": "tls-creds-anon", id: "tc", endpoint: "client" }),
      add({ "qom-type": "tls-creds-anon", id: "ta", endpoint: "server" }),
      add({ "qom-type": "tls-creds-anon", id: "tb", endpoint: "bogus" }),
      add({ "qom-type": "authz-simple", id: "a0", identity: "CN=x" }),
      add({ "qom-type": "authz-simple", id: "a1" }),
      add({ "qom-type": "authz-list", id: "a2" }),
      add({
        "qom-type": "authz-list",
        id: "a3",
        policy: "allow",
        rules: [{ match: "CN=*", policy: "deny", format: "glob" }],
      }),
      add({ "qom-type": "authz-list", id: "a4", rules: [{ match: "x" }] }),
      add({ "qom-type": "secret", id: "s0", data: "abc" }),
      add({ "qom-type": "secret", id: "s0", data: "abc" }),
      // Deleting objects nothing uses.
      qmp("object-del", { id: "nope" }),
      qmp("object-del", { id: "io1" }),
      qmp("object-del", { id: "io1" }),
      qmp("object-del", {}),
      qmp("object-del", { id: "a3" }),
      qmp("object-del", { id: "s0" }),
      qmp("object-del", { id: "tc" }),
      add({ "qom-type": "iothread", id: "io1" }),
      // TLS credentials are checked before the server starts.
      serverStart({ ...UNIX_SERVER, "tls-creds": "io0" }),
      serverStart({ ...UNIX_SERVER, "tls-creds": "a0" }),
      add({ "qom-type": "tls-creds-anon", id: "tc", endpoint: "client" }),
      serverStart({ ...UNIX_SERVER, "tls-creds": "tc" }),
      serverStart({ ...UNIX_SERVER, "tls-creds": "nope" }),
      qmp("query-block-exports"),
    ]);
  },
);

/** The commands this suite covers; denbd must offer every one. */
const COMMANDS = [
  "qmp_capabilities",
  "query-version",
  "query-commands",
  "quit",
  "query-qmp-schema",
  "nbd-server-start",
  "nbd-server-stop",
  "nbd-server-add",
  "nbd-server-remove",
  "block-export-add",
  "block-export-del",
  "query-block-exports",
  "blockdev-add",
  "blockdev-del",
  "query-named-block-nodes",
  "query-block",
  "block-dirty-bitmap-add",
  "block-dirty-bitmap-remove",
  "block-dirty-bitmap-clear",
  "block-dirty-bitmap-enable",
  "block-dirty-bitmap-disable",
  "block-dirty-bitmap-merge",
  "x-debug-block-dirty-bitmap-sha256",
  "object-add",
  "object-del",
];

/** denbd's own commands, which qsd lacks (x-denbd-query-stats: tests/interop/top_test.ts). */
const DENBD_COMMANDS = ["x-denbd-query-stats"];

function commandNames(transcript: unknown[]): string[] {
  const reply = transcript.at(-1) as { return: { name: string }[] };
  return reply.return.map((entry) => entry.name);
}

Deno.test(
  "query-commands: every command denbd offers is one of qsd's, and the suite covers them all",
  needs("qemu-storage-daemon"),
  async () => {
    await withDaemonPair({ args: [] }, async (pair) => {
      const qsd = commandNames(await answer(pair, "qsd", qmp("query-commands")));
      const all = commandNames(await answer(pair, "denbd", qmp("query-commands")));
      assert.deepEqual(DENBD_COMMANDS.filter((name) => !all.includes(name)), []);
      const ours = all.filter((name) => !DENBD_COMMANDS.includes(name));
      assert.deepEqual(ours.filter((name) => !qsd.includes(name)), [], "commands qsd lacks");
      assert.deepEqual(COMMANDS.filter((name) => !ours.includes(name)), [], "commands missing");
      assert.deepEqual(
        ours.filter((name) => !COMMANDS.includes(name)),
        [],
        "commands denbd offers that this suite does not test",
      );
      assert.equal(new Set(ours).size, ours.length, "no command twice");
    });
  },
);

Deno.test(
  "quit: every monitor gets an event per export before the return, then EOF; exit 0",
  needs("qemu-storage-daemon"),
  async () => {
    const spec: DaemonSpec = {
      args: [
        ...NODES,
        "--nbd-server",
        "addr.type=unix,addr.path=$DIR/nbd.sock",
        "--export",
        "nbd,id=e0,node-name=f0",
        "--export",
        "nbd,id=e1,node-name=r0,name=x,writable=on",
        // A second monitor (a socket chardev serves one client at a time).
        "--chardev",
        "socket,id=qmp1,path=$DIR/qmp1.sock,server=on,wait=off",
        "--monitor",
        "qmp1",
      ],
      setup: images,
    };
    await withDaemonPair(spec, async (pair) => {
      await pair.expectSame([
        exportAdd({ id: "e2", "node-name": "ro0" }),
        qmp("query-block-exports"),
      ]);
      const others = await pair.both((daemon) => daemon.session(daemon.fill("$DIR/qmp1.sock")));
      const quit = await pair.step({ send: qmp("quit"), untilEof: true });
      const event = (id: string) => ({
        timestamp: "TIMESTAMP",
        event: "BLOCK_EXPORT_DELETED",
        data: { id },
      });
      assert.deepEqual(quit.qsd, [event("e0"), event("e1"), event("e2"), { return: {} }, "<EOF>"]);
      assert.deepEqual(quit.denbd, quit.qsd, "denbd's quit transcript");
      for (const kind of KINDS) {
        const daemon = pair.daemon(kind);
        assert.equal(await daemon.process.exited(), 0, `${kind} exit code after quit`);
        const seen = await others[kind].drain(2000);
        assert.deepEqual(
          seen,
          [
            { ...event("e0"), timestamp: (seen[0] as Json)?.timestamp },
            { ...event("e1"), timestamp: (seen[1] as Json)?.timestamp },
            { ...event("e2"), timestamp: (seen[2] as Json)?.timestamp },
            "<EOF>",
          ],
          `${kind}: the other monitor's events`,
        );
        await others[kind].close();
        for (const socket of ["qmp.sock", "qmp1.sock"]) {
          await assert.rejects(Deno.stat(daemon.fill(`$DIR/${socket}`)), `${kind}: ${socket}`);
        }
      }
      // Deliberate difference: qsd leaves its NBD socket file behind, denbd removes it.
      assert.equal((await Deno.stat(pair.qsd.fill("$DIR/nbd.sock"))).isSocket, true);
      await assert.rejects(Deno.stat(pair.denbd.fill("$DIR/nbd.sock")), "denbd's NBD socket");
    });
  },
);

Deno.test(
  "deliberate differences: what denbd refuses where qsd goes on",
  needs("qemu-storage-daemon"),
  async () => {
    await withDaemonPair({ args: NODES, setup: images }, async (pair) => {
      await pair.expectSame([
        qmp("object-add", { "qom-type": "iothread", id: "io0" }),
        qmp("object-add", { "qom-type": "authz-simple", id: "a0", identity: "CN=x" }),
        qmp("object-add", { "qom-type": "tls-creds-anon", id: "ta", endpoint: "server" }),
        bitmap("add", { node: "f0", name: "b0" }),
      ]);
      // TLS credentials and the authorization object the NBD server uses may both go: the
      // server keeps its reference to the credentials and looks the authorization up at each
      // client's check.
      await pair.expectSame([
        serverStart({ ...UNIX_SERVER, "tls-creds": "ta", "tls-authz": "a0" }),
        qmp("object-del", { id: "ta" }),
        qmp("object-del", { id: "a0" }),
        qmp("nbd-server-stop"),
        serverStart(UNIX_SERVER),
        exportAdd({ id: "e0", "node-name": "r0", iothread: "io0" }),
      ]);
      // Exports other than NBD.
      const others: [string, Json][] = [
        ["vhost-user-blk", { addr: { type: "unix", path: "$DIR/vu.sock" } }],
        ["fuse", { mountpoint: "$DIR" }],
        ["vduse-blk", { name: "vd" }],
      ];
      for (const [type, options] of others) {
        const command = qmp("block-export-add", { type, id: "v0", "node-name": "f0", ...options });
        const reply = await answer(pair, "denbd", command);
        assert.deepEqual(reply, genericError(`${type} exports are not supported by denbd yet`));
      }
      // Merging no bitmaps (qsd 7.2 crashes).
      assert.deepEqual(
        await answer(pair, "denbd", bitmap("merge", { node: "f0", target: "b0", bitmaps: [] })),
        [{ return: {} }],
      );
      // Drivers denbd does not have.
      for (const driver of ["null-co", "nbd"]) {
        const reply = await answer(
          pair,
          "denbd",
          qmp("blockdev-add", { driver, "node-name": "x", file: "f0" }),
        );
        assert.deepEqual(
          reply,
          genericError(`driver '${driver}' is not supported by denbd yet`),
        );
      }
      // Objects in use: qsd deletes them (and may crash later); denbd refuses.
      assert.deepEqual(
        await answer(pair, "denbd", qmp("object-del", { id: "io0" })),
        genericError("object 'io0' is in use by export 'e0'"),
      );
      await pair.expectSame([{ send: qmp("nbd-server-stop"), eventsAnyOrder: true }]);
      // A second read-write node on an image open read-write: qsd shares write access between
      // them, denbd refuses a second writer (in this process or another).
      assert.deepEqual(
        await answer(
          pair,
          "denbd",
          qmp("blockdev-add", { driver: "file", "node-name": "f9", filename: "$DIR/d.img" }),
        ),
        genericError(
          'Failed to get "write" lock\nIs another process using the image [$DIR/d.img]?',
        ),
      );
      // Addresses Deno cannot listen on, and objects qsd has that denbd does not yet.
      const refusals: [Json, string][] = [
        [{ type: "fd", data: { str: "3" } }, "only QEMU supports file descriptor passing"],
        [
          { type: "vsock", data: { cid: "1", port: "1" } },
          "vsock addresses are not supported by denbd",
        ],
        [
          { type: "unix", data: { path: "$DIR/a.sock", abstract: true } },
          "abstract unix sockets are not supported by denbd",
        ],
      ];
      await pair.expectSame([qmp("nbd-server-stop")]);
      for (const [addr, message] of refusals) {
        assert.deepEqual(await answer(pair, "denbd", serverStart({ addr })), genericError(message));
      }
      for (const type of ["throttle-group", "main-loop", "thread-context"]) {
        assert.deepEqual(
          await answer(pair, "denbd", qmp("object-add", { "qom-type": type, id: "x" })),
          genericError(`object type '${type}' is not supported by denbd yet`),
        );
      }
      // The state is still the same on both.
      await pair.expectSame([qmp("query-block-exports"), qmp("query-named-block-nodes")]);
    });
  },
);

// Differences this suite found and denbd now answers as qsd does.

Deno.test(
  "an unresolvable host is reported without Deno's wording",
  needs("qemu-storage-daemon"),
  async () => {
    await sameOnBoth({ args: [] }, [
      serverStart({
        addr: { type: "inet", data: { host: "no.such.host.invalid", port: "10809" } },
      }),
    ]);
  },
);

Deno.test(
  "a raw node with offset and size is described by a json: filename",
  needs("qemu-storage-daemon"),
  async () => {
    await sameOnBoth({ args: [], setup: images }, [
      qmp("blockdev-add", { driver: "file", "node-name": "f0", filename: "$DIR/d.img" }),
      qmp("blockdev-add", {
        driver: "raw",
        "node-name": "r0",
        file: "f0",
        offset: 4096,
        size: 8192,
      }),
      qmp("blockdev-add", { driver: "raw", "node-name": "r1", file: "f0", offset: 67108864 }),
      qmp("blockdev-add", {
        driver: "raw",
        "node-name": "r2",
        file: { driver: "file", filename: "$DIR/e.img" },
        offset: 512,
      }),
      qmp("query-named-block-nodes"),
    ]);
  },
);

Deno.test(
  "object-add checks of secret, tls-creds-x509 and non-creatable types",
  needs("qemu-storage-daemon"),
  async () => {
    const add = (args: Json) => qmp("object-add", args);
    await sameOnBoth({ args: [] }, [
      add({ "qom-type": "secret", id: "s1" }),
      add({ "qom-type": "tls-creds-x509", id: "t0", endpoint: "server" }),
      add({ "qom-type": "memory-backend-ram", id: "m0", size: 1048576 }),
      add({ "qom-type": "rng-random", id: "m1" }),
    ]);
  },
);

Deno.test(
  "tls-creds-psk: a server takes no username, a client's key is looked up and checked",
  needs("qemu-storage-daemon"),
  async () => {
    const setup = async (dir: string) => {
      await Deno.mkdir(join(dir, "psk"));
      await Deno.writeTextFile(
        join(dir, "psk", "keys.psk"),
        [
          "alice:0123456789abcdef0123456789abcdef",
          "qemu:00112233",
          "short:001122",
          "odd:0011223",
          "nothex:0011zz33",
          "empty:",
          "cr:00112233\r",
          "",
        ].join("\n"),
      );
      await Deno.mkdir(join(dir, "dir", "keys.psk"), { recursive: true });
    };
    const add = (args: Json) => qmp("object-add", { "qom-type": "tls-creds-psk", ...args });
    const keys = "$DIR/psk";
    await sameOnBoth({ args: [], setup }, [
      // A server's username is refused before its directory is looked at.
      add({ id: "s0", dir: keys, endpoint: "server", username: "alice" }),
      add({ id: "s0", endpoint: "server", username: "" }),
      add({ id: "s0", dir: "$DIR/none", endpoint: "server", username: "x" }),
      add({ id: "s0", dir: "$DIR/none", endpoint: "server" }),
      add({ id: "s0", dir: keys, endpoint: "server" }),
      // A client's username ("qemu" by default) must be in keys.psk with a usable key.
      add({ id: "c0", dir: "$DIR/none" }),
      add({ id: "c0", dir: "$DIR/dir" }),
      add({ id: "c0", dir: keys, username: "nobody" }),
      add({ id: "c0", dir: keys, username: "alic" }),
      add({ id: "c0", dir: keys, endpoint: "client", username: "" }),
      ...["short", "odd", "nothex", "empty", "cr"].map((username) =>
        add({ id: "c0", dir: keys, username })
      ),
      add({ id: "c0", dir: keys, username: "alice" }),
      add({ id: "c1", dir: keys }),
    ]);
  },
);
