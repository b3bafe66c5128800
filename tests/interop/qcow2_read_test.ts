/**
 * Reading qcow2 images that qemu-img made, through `denbd serve` and
 * `denbd daemon`: every export's bytes (read with nbdcopy) equal
 * `qemu-img convert` of the image, and `nbdinfo --map` for base:allocation,
 * qemu:allocation-depth and every qemu:dirty-bitmap:NAME equals what
 * qemu-nbd and qemu-storage-daemon report on the same image. Every qcow2
 * layer of a chain is exported on its own too (its backing opened from the
 * header, by a name relative to the image).
 *
 * With DENBD_SUBJECT=qemu the subjects are qemu-nbd and qemu-storage-daemon
 * themselves, which checks the test.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  needs,
  type ServerProcess,
  sha256File,
  startQemuNbd,
  startSubject,
  subjectDaemonCommand,
  withTempDir,
} from "./harness.ts";
import { startDaemonExport } from "./peers.ts";
import { convertToRaw, IMAGE_BUILDERS, qcow2Layers, type TestImage } from "./qcow2_images.ts";

const PEERS = ["qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo", "nbdcopy"];

/** One way of exporting an image read-only as "disk" on a Unix socket. */
interface Exporter {
  readonly name: string;
  readonly start: (image: TestImage, socket: string) => Promise<ServerProcess>;
}

/** qemu-nbd's flags for a read-only export with allocation depth and the image's bitmaps. */
function serveArgs(image: TestImage): string[] {
  const bitmaps = image.bitmaps.flatMap((name) => ["-B", name]);
  return ["-r", "-f", "qcow2", "-A", ...bitmaps, "-x", "disk", "-t", "-e", "0", image.path];
}

/** qemu-storage-daemon's arguments for the same export: a file node and a qcow2 node. */
function daemonExport(
  command: readonly [string, readonly string[]],
  image: TestImage,
  socket: string,
): Promise<ServerProcess> {
  return startDaemonExport(
    command,
    [
      `driver=file,node-name=file0,filename=${image.path},read-only=on`,
      "driver=qcow2,node-name=fmt0,file=file0,read-only=on",
    ],
    "fmt0",
    socket,
    {
      readOnly: true,
      exportOptions: [
        "allocation-depth=on",
        ...image.bitmaps.map((name, index) => `bitmaps.${index}=${name}`),
      ],
    },
  );
}

/** The references first, then the subjects. */
const EXPORTERS: readonly Exporter[] = [
  {
    name: "qemu-nbd",
    start: (image, socket) => startQemuNbd({ args: serveArgs(image), socket, exportName: "disk" }),
  },
  {
    name: "qemu-storage-daemon",
    start: (image, socket) => daemonExport(["qemu-storage-daemon", []], image, socket),
  },
  {
    name: "subject serve",
    start: (image, socket) => startSubject({ args: serveArgs(image), socket, exportName: "disk" }),
  },
  {
    name: "subject daemon",
    start: (image, socket) => daemonExport(subjectDaemonCommand(), image, socket),
  },
];

/** The metadata contexts compared for `image`. */
function contexts(image: TestImage): string[] {
  return [
    "base:allocation",
    "qemu:allocation-depth",
    ...image.bitmaps.map((name) => `qemu:dirty-bitmap:${name}`),
  ];
}

/** What one exporter gave: the hash of the bytes read, and each context's map. */
interface Observed {
  readonly sha256: string;
  readonly maps: Record<string, string>;
}

/** Export `image` with `exporter`, read it all and map every context. */
async function observe(
  exporter: Exporter,
  image: TestImage,
  dir: string,
): Promise<Observed> {
  // A fresh socket path each time: qemu-storage-daemon leaves its socket file behind.
  const socket = await Deno.makeTempFile({ dir, suffix: ".sock" });
  await Deno.remove(socket);
  const output = join(dir, "read.raw");
  const server = await exporter.start(image, socket);
  try {
    await check("nbdcopy", [server.uri, output]);
    const maps: Record<string, string> = {};
    for (const context of contexts(image)) {
      maps[context] = await check("nbdinfo", [`--map=${context}`, server.uri]);
    }
    const sha256 = await sha256File(output);
    await Deno.remove(output);
    return { sha256, maps };
  } finally {
    const code = await server.stop();
    assert.equal(code, 0, `${exporter.name} exit code on SIGTERM: ${server.stderr()}`);
  }
}

for (const [kind, build] of Object.entries(IMAGE_BUILDERS)) {
  Deno.test(
    `qcow2 ${kind}: reads equal qemu-img convert, maps equal qemu-nbd's and qsd's`,
    needs(...PEERS),
    async () => {
      await withTempDir(async (dir) => {
        const image = await build(dir);
        const before = await Promise.all(image.files.map(sha256File));
        const differences: string[] = [];
        for (const layer of qcow2Layers(image)) {
          const expected = join(dir, "expected.raw");
          await convertToRaw(layer, expected);
          const sha256 = await sha256File(expected);
          await Deno.remove(expected);
          const observed: Observed[] = [];
          for (const exporter of EXPORTERS) observed.push(await observe(exporter, layer, dir));
          const [qemuNbd] = observed;
          for (const [index, exporter] of EXPORTERS.entries()) {
            const seen = observed[index];
            if (seen.sha256 !== sha256) {
              differences.push(`${layer.name}: ${exporter.name} read other bytes than convert`);
            }
            for (const context of contexts(layer)) {
              if (seen.maps[context] === qemuNbd.maps[context]) continue;
              differences.push(
                `${layer.name} ${context}: ${exporter.name} mapped\n${seen.maps[context]}` +
                  `qemu-nbd mapped\n${qemuNbd.maps[context]}`,
              );
            }
          }
        }
        assert.deepEqual(differences, []);
        assert.deepEqual(
          await Promise.all(image.files.map(sha256File)),
          before,
          "no file of the chain changed",
        );
      });
    },
  );
}
