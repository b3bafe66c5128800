/**
 * Persistent dirty bitmaps across daemons: a daemon (the subject,
 * `denbd daemon`, or qemu-storage-daemon) opens a qcow2 image, adds
 * bitmaps over QMP (persistent ones of two granularities, a disabled one,
 * and a transient one that must not be stored), takes writes through an
 * NBD export, and quits; then a daemon of either kind opens the image again
 * and exports the bitmaps. For every recorder/reader pair the
 * `nbdinfo --map=qemu:dirty-bitmap:NAME` output equals qsd's after qsd
 * recorded; `qemu-img info` lists the same bitmaps with the same flags,
 * `qemu-img check` is clean and `qemu-img bitmap --merge` reads the bits.
 *
 * With DENBD_SUBJECT=qemu the subject is qemu-storage-daemon itself, which
 * checks the test.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  launch,
  needs,
  qmpMonitorArgs,
  run,
  type ServerProcess,
  startQemuNbd,
  subjectDaemonCommand,
  withTempDir,
} from "./harness.ts";
import { qmp, QmpSession } from "./daemon_harness.ts";
import { qemuIo } from "./qcow2_images.ts";

/** The bitmaps stored in the image (bm3 is transient and must not be). */
const PERSISTENT = ["bm0", "bm1", "bm2"];

/** The daemons that record or read, by name. */
const DAEMONS: Readonly<Record<string, readonly [string, readonly string[]]>> = {
  qsd: ["qemu-storage-daemon", []],
  subject: subjectDaemonCommand(),
};

/** A daemon with the image's file and qcow2 nodes, an NBD server and a QMP monitor in `dir`. */
function startDaemon(
  command: readonly [string, readonly string[]],
  image: string,
  dir: string,
  readOnly: boolean,
): Promise<ServerProcess> {
  const ro = readOnly ? ",read-only=on" : "";
  const qmpSocket = join(dir, "qmp.sock");
  return launch({
    command: command[0],
    args: [
      ...command[1],
      "--blockdev",
      `driver=file,node-name=file0,filename=${image}${ro}`,
      "--blockdev",
      `driver=qcow2,node-name=fmt0,file=file0${ro}`,
      "--nbd-server",
      `addr.type=unix,addr.path=${join(dir, "nbd.sock")}`,
      ...qmpMonitorArgs(qmpSocket),
    ],
    uri: `nbd+unix:///disk?socket=${join(dir, "nbd.sock")}`,
    listen: qmpSocket,
  });
}

/** Send each command and require a successful reply. */
async function execute(session: QmpSession, commands: readonly object[]): Promise<void> {
  for (const command of commands) {
    const transcript = await session.command(JSON.stringify(command));
    const reply = transcript.at(-1);
    assert.ok(
      typeof reply === "object" && "return" in reply,
      `${JSON.stringify(command)}: ${JSON.stringify(transcript)}`,
    );
  }
}

/** Record: add the bitmaps, write through NBD, quit; the daemon must exit 0. */
async function record(command: readonly [string, readonly string[]], image: string, dir: string) {
  await Deno.mkdir(dir);
  const daemon = await startDaemon(command, image, dir, false);
  try {
    const session = await QmpSession.connect(join(dir, "qmp.sock"));
    try {
      const add = (name: string, extra: object) =>
        qmp("block-dirty-bitmap-add", { node: "fmt0", name, ...extra });
      await execute(session, [
        qmp("qmp_capabilities"),
        add("bm0", { persistent: true }),
        add("bm1", { persistent: true, granularity: 131072 }),
        add("bm2", { persistent: true, disabled: true }),
        add("bm3", {}),
        qmp("block-export-add", {
          type: "nbd",
          id: "export0",
          "node-name": "fmt0",
          name: "disk",
          writable: true,
        }),
      ]);
      await qemuIo(daemon.uri, "raw", [
        "write -P 0x31 192k 64k",
        "write -P 0x32 1M 5k",
        "write -z 3M 200k",
        "aio_write -P 0x33 6M 64k",
        "aio_write -P 0x34 6400k 4k",
        "aio_flush",
      ]);
      await execute(session, [qmp("quit")]);
    } finally {
      await session.close();
    }
    assert.equal(await daemon.exited(), 0, `recorder exit code: ${daemon.stderr()}`);
  } catch (error) {
    await daemon.stop().catch(() => {});
    throw error;
  }
}

/** Read: open the image read-only after the restart, export the bitmaps, map each. */
async function read(
  command: readonly [string, readonly string[]],
  image: string,
  dir: string,
): Promise<string[]> {
  await Deno.mkdir(dir);
  const daemon = await startDaemon(command, image, dir, true);
  try {
    const session = await QmpSession.connect(join(dir, "qmp.sock"));
    try {
      await execute(session, [
        qmp("qmp_capabilities"),
        qmp("block-export-add", {
          type: "nbd",
          id: "export0",
          "node-name": "fmt0",
          name: "disk",
          bitmaps: PERSISTENT,
        }),
      ]);
    } finally {
      await session.close();
    }
    const maps = [];
    for (const name of PERSISTENT) {
      maps.push(await check("nbdinfo", [`--map=qemu:dirty-bitmap:${name}`, daemon.uri]));
    }
    return maps;
  } finally {
    assert.equal(await daemon.stop(), 0, `reader exit code: ${daemon.stderr()}`);
  }
}

/** What qemu-img says of the stored bitmaps, and the bits of bm0 as qemu-img bitmap merges them. */
async function qemuImgView(image: string, dir: string): Promise<unknown> {
  const checked = await run("qemu-img", ["check", "-f", "qcow2", image]);
  assert.equal(checked.code, 0, `qemu-img check: ${checked.stdout}${checked.stderr}`);
  const info = JSON.parse(await check("qemu-img", ["info", "--output=json", image]));
  const bitmaps = info["format-specific"].data.bitmaps;
  const copy = join(dir, "merged.qcow2");
  await Deno.copyFile(image, copy);
  await check("qemu-img", ["bitmap", "--add", copy, "merged"]);
  await check("qemu-img", ["bitmap", "--merge", "bm0", copy, "merged"]);
  const server = await startQemuNbd({
    args: ["-r", "-f", "qcow2", "-B", "merged", "-t", copy],
    socket: join(dir, "merged.sock"),
  });
  try {
    return {
      bitmaps,
      merged: await check("nbdinfo", ["--map=qemu:dirty-bitmap:merged", server.uri]),
    };
  } finally {
    await server.stop();
  }
}

Deno.test(
  "persistent bitmaps recorded by one daemon read the same in the other after a restart",
  needs("qemu-img", "qemu-io", "qemu-storage-daemon", "qemu-nbd", "nbdinfo"),
  async () => {
    await withTempDir(async (root) => {
      const maps: Record<string, string[]> = {};
      const views: Record<string, unknown> = {};
      for (const recorder of Object.keys(DAEMONS)) {
        const dir = join(root, recorder);
        await Deno.mkdir(dir);
        const image = join(dir, "disk.qcow2");
        await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"]);
        await qemuIo(image, "qcow2", ["write -P 0x21 0 1M"]);
        await record(DAEMONS[recorder], image, join(dir, "record"));
        views[recorder] = await qemuImgView(image, dir);
        for (const [reader, command] of Object.entries(DAEMONS)) {
          maps[`${recorder} -> ${reader}`] = await read(command, image, join(dir, reader));
        }
      }
      const expected = maps["qsd -> qsd"];
      assert.ok(expected.every((map) => map.length > 0));
      assert.match(expected[0], /dirty/, "bm0 recorded the writes");
      assert.doesNotMatch(expected[2], /dirty/, "bm2 was disabled");
      for (const [pair, seen] of Object.entries(maps)) {
        assert.deepEqual(seen, expected, `bitmaps recorded and read: ${pair}`);
      }
      assert.deepEqual(views.subject, views.qsd, "qemu-img info and bitmap of the image");
      const stored = (views.qsd as { bitmaps: { name: string }[] }).bitmaps.map((b) => b.name);
      assert.deepEqual(stored.sort(), PERSISTENT, "the transient bm3 is not stored");
    });
  },
);
