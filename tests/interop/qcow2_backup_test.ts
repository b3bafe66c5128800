/**
 * The backup tool's command line (a read-only qcow2 export with a dirty
 * bitmap, forked into the background once it listens):
 *
 *     -r --format=qcow2 -x sda disk.qcow2 -k x.sock -t -e 2 --fork
 *     --detect-zeroes=on --pid-file=x.pid --bitmap=cp1
 *
 * given to the subject (`denbd serve`) and to qemu-nbd, each in its own
 * directory with its own copy of the image: the launcher exits 0 after
 * forking, the pid file names the server, `nbdinfo --json` prints the same,
 * the maps of base:allocation and qemu:dirty-bitmap:cp1 and the bytes read
 * are the same, two clients are served at once, SIGTERM to the pid ends it,
 * and the image is not changed.
 *
 * With DENBD_SUBJECT=qemu the subject is qemu-nbd itself, which checks the test.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  launch,
  needs,
  python,
  type ServerProcess,
  sha256File,
  subjectServeCommand,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { qemuIo } from "./qcow2_images.ts";

/** A disk with bitmap cp1 recording the writes made after it was added. */
async function makeDisk(path: string): Promise<void> {
  await check("qemu-img", ["create", "-q", "-f", "qcow2", path, "16M"]);
  await qemuIo(path, "qcow2", ["write -P 0x11 0 2M", "write -P 0x12 5M 100k"]);
  await check("qemu-img", ["bitmap", "--add", path, "cp1"]);
  await qemuIo(path, "qcow2", ["write -P 0x21 1M 64k", "write -z 5M 64k", "write -P 0 9M 1M"]);
}

/** The backup tool's arguments, with the paths in `dir`. */
function backupArgs(dir: string): string[] {
  return [
    "-r",
    "--format=qcow2",
    "-x",
    "sda",
    join(dir, "disk.qcow2"),
    "-k",
    join(dir, "x.sock"),
    "-t",
    "-e",
    "2",
    "--fork",
    "--detect-zeroes=on",
    `--pid-file=${join(dir, "x.pid")}`,
    "--bitmap=cp1",
  ];
}

/** Start `command` with the backup tool's arguments in `dir`. */
function startBackupServer(command: [string, string[]], dir: string): Promise<ServerProcess> {
  return launch({
    command: command[0],
    args: [...command[1], ...backupArgs(dir)],
    uri: `nbd+unix:///sda?socket=${join(dir, "x.sock")}`,
    listen: join(dir, "x.sock"),
    daemonPidFile: join(dir, "x.pid"),
  });
}

/** Connect two clients at once and read a byte through each; prints "2". */
const TWO_CLIENTS = `
import nbd, sys
handles = [nbd.NBD() for _ in range(2)]
for h in handles:
    h.connect_uri(sys.argv[1])
for h in handles:
    h.pread(1, 0)
print(len(handles))
for h in handles:
    h.shutdown()
`;

/** What a client sees of the server started in `dir`, with `dir` masked. */
async function observe(server: ServerProcess, dir: string): Promise<Record<string, string>> {
  const launcher = await server.child.status;
  assert.equal(launcher.code, 0, `the launcher exits 0 after forking: ${server.stderr()}`);
  const pid = Number((await Deno.readTextFile(join(dir, "x.pid"))).trim());
  assert.ok(pid > 0 && pid !== server.child.pid, "the pid file names the forked server");
  assert.ok(await Deno.stat(`/proc/${pid}`).then(() => true, () => false), "the server runs");
  const read = join(dir, "read.raw");
  await check("nbdcopy", [server.uri, read]);
  const twoClients = await python(TWO_CLIENTS, [server.uri]);
  assert.equal(twoClients.code, 0, twoClients.stderr);
  const seen = {
    json: await check("nbdinfo", ["--json", server.uri]),
    allocation: await check("nbdinfo", ["--map=base:allocation", server.uri]),
    bitmap: await check("nbdinfo", ["--map=qemu:dirty-bitmap:cp1", server.uri]),
    sha256: await sha256File(read),
    clients: twoClients.stdout,
  };
  return Object.fromEntries(
    Object.entries(seen).map(([key, value]) => [key, value.replaceAll(dir, "$DIR")]),
  );
}

Deno.test(
  "the backup tool's command line gives what qemu-nbd gives",
  needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy", "python3"),
  async () => {
    await withTempDir(async (root) => {
      const dirs = { reference: join(root, "reference"), subject: join(root, "subject") };
      for (const dir of Object.values(dirs)) await Deno.mkdir(dir);
      await makeDisk(join(dirs.reference, "disk.qcow2"));
      await Deno.copyFile(join(dirs.reference, "disk.qcow2"), join(dirs.subject, "disk.qcow2"));
      const before = await sha256File(join(dirs.subject, "disk.qcow2"));
      const reference = await withStarted(
        () => startBackupServer(["qemu-nbd", []], dirs.reference),
        (server) => observe(server, dirs.reference),
      );
      const subject = await withStarted(
        () => startBackupServer(subjectServeCommand(), dirs.subject),
        (server) => observe(server, dirs.subject),
      );
      assert.deepEqual(subject, reference);
      assert.match(reference.bitmap, /dirty/, "the bitmap has dirty bits to compare");
      assert.equal(await sha256File(join(dirs.subject, "disk.qcow2")), before, "image unchanged");
    });
  },
);
