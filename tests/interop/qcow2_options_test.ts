/**
 * The qemu-nbd options that matter for qcow2, given to `denbd serve` and to
 * qemu-nbd alike: `-l` (an internal snapshot, found by id first, then by
 * name), `-s` (writes go to a throwaway overlay), `--detect-zeroes` (zero
 * data written as zero clusters), no `-f` (the format probed); and the
 * daemon's qcow2 `backing` option (none, or another node than the header
 * names) against qemu-storage-daemon. Bytes read, maps, qemu-io's reports,
 * the resulting image layout and the files left behind must be the same.
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
  subjectServeCommand,
  withServer,
  withTempDir,
} from "./harness.ts";
import { startDaemonExport } from "./peers.ts";
import { copyImage, makeChain, qemuIo } from "./qcow2_images.ts";

/** The two servers with qemu-nbd's flags: the reference first. */
const SERVERS = [
  { name: "qemu-nbd", start: startQemuNbd },
  { name: "subject", start: startSubject },
] as const;

/** A fresh socket path in `dir` (servers may leave theirs behind). */
async function socketIn(dir: string): Promise<string> {
  const path = await Deno.makeTempFile({ dir, suffix: ".sock" });
  await Deno.remove(path);
  return path;
}

/** The hash of everything the export serves, and its base:allocation map. */
async function observe(server: ServerProcess, dir: string) {
  const output = join(dir, "read.raw");
  await check("nbdcopy", [server.uri, output]);
  const sha256 = await sha256File(output);
  await Deno.remove(output);
  return { sha256, map: await check("nbdinfo", ["--map", server.uri]) };
}

Deno.test(
  "-l serves an internal snapshot, by id first and then by name, as qemu-nbd does",
  needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "snapshots.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "4M"]);
      await qemuIo(image, "qcow2", ["write -P 0x01 0 1M"]);
      await check("qemu-img", ["snapshot", "-c", "snap1", image]); // id 1
      await qemuIo(image, "qcow2", ["write -P 0x02 512k 1M"]);
      await check("qemu-img", ["snapshot", "-c", "1", image]); // id 2, named "1"
      await qemuIo(image, "qcow2", ["write -P 0x03 3M 64k"]);
      const before = await sha256File(image);
      const seen: Record<string, unknown[]> = {};
      for (const spec of ["snap1", "1", "snapshot.id=2", "snapshot.name=1", "snapshot.id=1"]) {
        seen[spec] = [];
        for (const { start } of SERVERS) {
          const args = ["-r", "-l", spec, "-f", "qcow2", "-t", image];
          seen[spec].push(
            await withServer(start, { args, socket: await socketIn(dir) }, (s) => observe(s, dir)),
          );
        }
        assert.deepEqual(seen[spec][1], seen[spec][0], `-l ${spec}`);
      }
      assert.deepEqual(seen["1"], seen["snap1"], "a plain 1 is the id");
      assert.deepEqual(seen["snapshot.name=1"], seen["snapshot.id=2"]);
      assert.notDeepEqual(seen["snapshot.id=1"], seen["snapshot.id=2"], "snapshots differ");

      const [command, prefix] = subjectServeCommand();
      for (const spec of ["nosuch", "snapshot.id=7"]) {
        const args = ["-r", "-l", spec, "-k", await socketIn(dir), image];
        const [qemu, subject] = [
          await run("qemu-nbd", args, { timeoutMs: 10_000 }),
          await run(command, [...prefix, ...args], { timeoutMs: 10_000 }),
        ];
        assert.equal(qemu.code, 1);
        assert.equal(subject.code, 1, subject.stderr);
        const message = (stderr: string) => stderr.replace(/^.*?: /, "");
        assert.equal(message(subject.stderr), message(qemu.stderr), `-l ${spec}`);
      }
      assert.equal(await sha256File(image), before, "the image is unchanged");
    });
  },
);

Deno.test(
  "without -f, a qcow2 image over a chain is probed as qemu-nbd probes it",
  needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const chain = await makeChain(dir);
      const seen = [];
      for (const { start } of SERVERS) {
        const args = ["-r", "-t", chain.path];
        seen.push(
          await withServer(start, { args, socket: await socketIn(dir) }, (s) => observe(s, dir)),
        );
      }
      assert.deepEqual(seen[1], seen[0]);
      const expected = join(dir, "expected.raw");
      await check("qemu-img", ["convert", "-O", "raw", chain.path, expected]);
      assert.equal(seen[0].sha256, await sha256File(expected), "qcow2 content, not its bytes");
    });
  },
);

/** Writes for -s and --detect-zeroes: data, zero data over data and over nothing, read-backs. */
const SCRIPT = [
  "write -P 0x91 0 64k",
  "write -P 0 64k 64k",
  "write -P 0 1M 192k",
  "write -P 0 100k 4k",
  "write -P 0x92 3M 4k",
  "write -P 0 5M 128k",
  "write -P 0x93 7M 100k",
  "flush",
  "read -P 0x91 0 64k",
  "read -P 0 64k 64k",
  "read -P 0x93 7M 100k",
];

/** Run SCRIPT over NBD; returns qemu-io's reports, sorted. */
async function runScript(uri: string): Promise<string[]> {
  const args = ["-f", "raw", ...SCRIPT.flatMap((command) => ["-c", command]), uri];
  const result = await run("qemu-io", args);
  assert.equal(result.code, 0, result.stderr + result.stdout);
  assert.doesNotMatch(result.stdout + result.stderr, /fail|error|mismatch/i);
  return result.stdout.split("\n").filter((line) => /^(wrote|read)/.test(line)).sort();
}

Deno.test(
  "-s takes writes into a throwaway overlay and leaves the chain as it was",
  needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const original = await makeChain(join(dir, "original"));
      const seen = [];
      for (const { name, start } of SERVERS) {
        const image = await copyImage(original, join(dir, name));
        const before = await Promise.all(image.files.map(sha256File));
        const args = ["-s", "-f", "qcow2", "-x", "disk", "-t", image.path];
        const socket = await socketIn(dir);
        seen.push(
          await withServer(start, { args, socket, exportName: "disk" }, async (server) => ({
            reports: await runScript(server.uri),
            ...await observe(server, dir),
          })),
        );
        assert.deepEqual(await Promise.all(image.files.map(sha256File)), before, name);
      }
      assert.deepEqual(seen[1], seen[0]);
    });
  },
);

/** `qemu-img map` of an image without the host offsets (they may differ legitimately). */
async function layout(image: string): Promise<unknown> {
  const map = JSON.parse(await check("qemu-img", ["map", "-f", "qcow2", "--output=json", image]));
  return map.map(({ offset: _, ...extent }: Record<string, unknown>) => extent);
}

// qemu-nbd checks --detect-zeroes=unmap against the --discard given before it.
for (const flags of [["--detect-zeroes=on"], ["--discard=unmap", "--detect-zeroes=unmap"]]) {
  Deno.test(
    `${flags.join(" ")} writes zero data as qemu-nbd does`,
    needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy"),
    async () => {
      await withTempDir(async (dir) => {
        const seen = [];
        for (const { name, start } of SERVERS) {
          const image = join(dir, `${name}.qcow2`);
          await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "8M"]);
          await qemuIo(image, "qcow2", ["write -P 0x90 0 2M", "write -P 0x90 5M 64k"]);
          const args = [...flags, "-f", "qcow2", "-x", "disk", "-t", image];
          const socket = await socketIn(dir);
          const reports = await withServer(
            start,
            { args, socket, exportName: "disk" },
            (server) => runScript(server.uri),
          );
          const checked = await run("qemu-img", ["check", "-f", "qcow2", image]);
          assert.equal(checked.code, 0, `${name}: ${checked.stdout}${checked.stderr}`);
          const raw = join(dir, `${name}.raw`);
          await check("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", image, raw]);
          seen.push({ reports, layout: await layout(image), sha256: await sha256File(raw) });
        }
        assert.deepEqual(seen[1], seen[0]);
      });
    },
  );
}

Deno.test(
  "--detect-zeroes=unmap without --discard=unmap is refused as qemu-nbd refuses it",
  needs("qemu-img", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "1M"]);
      const args = ["--detect-zeroes=unmap", "-f", "qcow2", "-k", await socketIn(dir), image];
      const [command, prefix] = subjectServeCommand();
      const qemu = await run("qemu-nbd", args, { timeoutMs: 10_000 });
      const subject = await run(command, [...prefix, ...args], { timeoutMs: 10_000 });
      assert.equal(qemu.code, 1);
      assert.equal(subject.code, 1, subject.stderr);
      const message = (stderr: string) => stderr.replace(/^.*?: /, "");
      assert.equal(message(subject.stderr), message(qemu.stderr));
    });
  },
);

Deno.test(
  "daemon: a qcow2 node's backing option (none, or another node) as qemu-storage-daemon's",
  needs("qemu-img", "qemu-io", "qemu-storage-daemon", "nbdinfo", "nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const chain = await makeChain(dir);
      const [top, , base] = chain.files;
      const file = (name: string, path: string) =>
        `driver=file,node-name=${name},filename=${path},read-only=on`;
      const variants: Record<string, string[]> = {
        "backing: null": [
          file("file0", top),
          JSON.stringify({
            driver: "qcow2",
            "node-name": "fmt0",
            file: "file0",
            "read-only": true,
            backing: null,
          }),
        ],
        "backing: the raw base, skipping mid": [
          file("bfile", base),
          "driver=raw,node-name=bnode,file=bfile,read-only=on",
          file("file0", top),
          "driver=qcow2,node-name=fmt0,file=file0,read-only=on,backing=bnode",
        ],
      };
      const distinct = new Set();
      for (const [variant, blockdevs] of Object.entries(variants)) {
        const seen = [];
        for (const command of [["qemu-storage-daemon", []], subjectDaemonCommand()] as const) {
          const server = await startDaemonExport(command, blockdevs, "fmt0", await socketIn(dir), {
            readOnly: true,
            exportOptions: ["allocation-depth=on"],
          });
          try {
            seen.push({
              ...await observe(server, dir),
              depth: await check("nbdinfo", ["--map=qemu:allocation-depth", server.uri]),
            });
          } finally {
            assert.equal(await server.stop(), 0, server.stderr());
          }
        }
        assert.deepEqual(seen[1], seen[0], variant);
        distinct.add(seen[0].sha256);
      }
      assert.equal(distinct.size, 2, "the variants read differently");
    });
  },
);
