/**
 * Writing qcow2 images through `denbd serve` and `denbd daemon`: one qemu-io
 * script (writes crossing clusters, FUA, zeroes with and without unmapping,
 * asynchronous writes, discards, flushes, read-backs) runs over NBD against
 * the subject and against QEMU's server of the same kind (qemu-nbd for
 * serve, qemu-storage-daemon for daemon), each on its own copy of the image.
 * Then `qemu-img check` finds the subject's copy clean, both copies hold the
 * same guest-visible data (`qemu-img convert`), the same persistent bitmaps
 * (flags and dirty bits) and the backing files are untouched.
 *
 * With DENBD_SUBJECT=qemu the subjects are qemu-nbd and qemu-storage-daemon
 * themselves, which checks the test.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  needs,
  run,
  type ServerProcess,
  sha256File,
  startQemuNbd,
  startSubject,
  subjectDaemonCommand,
  withTempDir,
} from "./harness.ts";
import { startDaemonExport } from "./peers.ts";
import { convertToRaw, copyImage, IMAGE_BUILDERS, type TestImage } from "./qcow2_images.ts";

const PEERS = ["qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo"];

/** The script, the same for both servers; offsets stay inside the smallest image (4 MiB). */
const SCRIPT = [
  "write -P 0xa1 0 4k",
  "write -P 0xa2 60k 8k",
  "write -P 0xa3 200k 1k",
  "write -f -P 0xa4 1M 256k",
  "write -z 1100k 64k",
  "write -z -u 1536k 128k",
  "aio_write -P 0xa5 2M 64k",
  "aio_write -P 0xa6 2200k 12k",
  "aio_flush",
  "discard 3M 128k",
  "discard 3200k 10k",
  "write -P 0xa7 3M 4k",
  "flush",
  "read -P 0xa1 0 4k",
  "read -P 0xa2 60k 8k",
  "read -P 0xa4 1M 76k",
  "read -P 0 1100k 64k",
  "read -P 0xa6 2200k 12k",
];

/** A writable export of "disk" on a Unix socket. */
type Starter = (image: TestImage, socket: string) => Promise<ServerProcess>;

/** qemu-nbd's flags for a writable export that passes discards down. */
function serveArgs(image: TestImage): string[] {
  return ["-f", "qcow2", "--discard=unmap", "-x", "disk", "-t", image.path];
}

function serveWith(start: typeof startQemuNbd): Starter {
  return (image, socket) => start({ args: serveArgs(image), socket, exportName: "disk" });
}

function daemonWith(command: readonly [string, readonly string[]]): Starter {
  return (image, socket) =>
    startDaemonExport(
      command,
      [
        `driver=file,node-name=file0,filename=${image.path},discard=unmap`,
        "driver=qcow2,node-name=fmt0,file=file0,discard=unmap",
      ],
      "fmt0",
      socket,
    );
}

/** The pairs compared: QEMU's server, and the subject with the same command line. */
const PAIRS: readonly { name: string; reference: Starter; subject: Starter }[] = [
  { name: "serve", reference: serveWith(startQemuNbd), subject: serveWith(startSubject) },
  {
    name: "daemon",
    reference: daemonWith(["qemu-storage-daemon", []]),
    subject: daemonWith(subjectDaemonCommand()),
  },
];

/** Run the script over NBD against `start`'s export of `image`; returns qemu-io's output. */
async function writeThrough(start: Starter, image: TestImage, dir: string): Promise<string> {
  const server = await start(image, join(dir, "nbd.sock"));
  try {
    const result = await run("qemu-io", [
      "-f",
      "raw",
      ...SCRIPT.flatMap((command) => ["-c", command]),
      server.uri,
    ]);
    assert.equal(result.code, 0, `qemu-io: ${result.stderr}${result.stdout}`);
    assert.doesNotMatch(result.stdout + result.stderr, /fail|error|mismatch/i);
    return result.stdout;
  } finally {
    const code = await server.stop();
    assert.equal(code, 0, `server exit code on SIGTERM: ${server.stderr()}`);
  }
}

/** What `qemu-img info` says of the image's persistent bitmaps (names, flags, granularity). */
async function bitmapInfo(image: TestImage): Promise<unknown> {
  const info = JSON.parse(
    await check("qemu-img", ["info", "-f", "qcow2", "--output=json", image.path]),
  );
  return info["format-specific"]?.data?.bitmaps ?? [];
}

/** Each bitmap's dirty map, read through a read-only qemu-nbd. */
async function bitmapMaps(image: TestImage, dir: string): Promise<string[]> {
  if (image.bitmaps.length === 0) return [];
  const server = await startQemuNbd({
    args: ["-r", "-f", "qcow2", ...image.bitmaps.flatMap((b) => ["-B", b]), "-t", image.path],
    socket: join(dir, "bitmaps.sock"),
  });
  try {
    const maps = [];
    for (const name of image.bitmaps) {
      maps.push(await check("nbdinfo", [`--map=qemu:dirty-bitmap:${name}`, server.uri]));
    }
    return maps;
  } finally {
    await server.stop();
  }
}

for (const [kind, build] of Object.entries(IMAGE_BUILDERS)) {
  for (const pair of PAIRS) {
    Deno.test(
      `qcow2 ${kind}: qemu-io writes through ${pair.name} leave a clean image with QEMU's data`,
      needs(...PEERS),
      async () => {
        await withTempDir(async (dir) => {
          const original = await build(join(dir, "original"));
          const images = {
            reference: await copyImage(original, join(dir, "reference")),
            subject: await copyImage(original, join(dir, "subject")),
          };
          const backing = await Promise.all(images.subject.files.slice(1).map(sha256File));
          const output = {
            reference: await writeThrough(pair.reference, images.reference, join(dir, "reference")),
            subject: await writeThrough(pair.subject, images.subject, join(dir, "subject")),
          };
          // Asynchronous writes may complete in either order: compare the reports sorted.
          const lines = (text: string) =>
            text.split("\n").filter((line) => /^(wrote|read)/.test(line)).sort();
          assert.deepEqual(lines(output.subject), lines(output.reference), "qemu-io's reports");

          const checked = await run("qemu-img", ["check", "-f", "qcow2", images.subject.path]);
          assert.equal(checked.code, 0, `qemu-img check: ${checked.stdout}${checked.stderr}`);
          assert.match(checked.stdout, /No errors were found on the image/);

          const raw = { reference: join(dir, "reference.raw"), subject: join(dir, "subject.raw") };
          await convertToRaw(images.reference, raw.reference);
          await convertToRaw(images.subject, raw.subject);
          assert.equal(
            await sha256File(raw.subject),
            await sha256File(raw.reference),
            "guest-visible data",
          );
          assert.deepEqual(
            await bitmapInfo(images.subject),
            await bitmapInfo(images.reference),
            "bitmaps",
          );
          assert.deepEqual(
            await bitmapMaps(images.subject, join(dir, "subject")),
            await bitmapMaps(images.reference, join(dir, "reference")),
            "dirty bits",
          );
          assert.deepEqual(
            await Promise.all(images.subject.files.slice(1).map(sha256File)),
            backing,
            "backing files untouched",
          );
        });
      },
    );
  }
}
